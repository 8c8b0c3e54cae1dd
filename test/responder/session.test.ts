import { createHash } from 'node:crypto';
import net from 'node:net';
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { createResponder } from '../../src/responder/server.ts';
import { equalBytes, utf8 } from '../../src/util/bytes.ts';
import { clientMessageSize, MAX_MESSAGE_LEN, type ServerMessage } from '../../src/wire/messages.ts';
import {
  bytesOf,
  closedWithin,
  connectClient,
  connectTcp,
  handshake,
  sleep,
  startEchoApp,
  startReplyApp,
  startTestAgent,
  testSimulator,
  waitFor,
  type Agent,
  type TestApp,
} from './helpers.ts';

let sim: NsmSimulator;
let echoApp: TestApp;
let agent: Agent;

beforeAll(async () => {
  sim = await testSimulator();
  echoApp = await startEchoApp();
  // halfCloseData: the echo app answers after EOF.
  agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }) });
});

afterAll(async () => {
  await agent.close();
  await echoApp.close();
});

const isData = (id: number) => (m: ServerMessage) => (m.type === 'Data' || m.type === 'Error') && m.id === id;

describe('attestation', () => {
  it('binds the handshake hash as the nonce and the control nonce as user_data', async () => {
    const client = await connectClient(agent.port);
    client.send({ type: 'RequestAttestation' });
    const { message, encoding } = await client.next();
    expect(encoding).toBe('array');
    if (message.type !== 'Attestation') throw new Error(`expected Attestation, got ${message.type}`);
    expect(message.features).toEqual(['bstr']);
    expect(equalBytes(message.control_nonce, agent.responder.controlNonce.current())).toBe(true);
    const doc = await verifyAttestation(message.data, {
      roots: [sim.rootPem],
      nonce: client.handshakeHash,
      pcrs: { PCR0: sim.pcrs[0]!, PCR1: sim.pcrs[1]!, PCR2: sim.pcrs[2]! },
    });
    expect(equalBytes(doc.nonce!, client.handshakeHash)).toBe(true);
    expect(equalBytes(doc.userData!, message.control_nonce)).toBe(true);
    // Repeatable, a fresh document each time.
    client.send({ type: 'RequestAttestation' });
    const again = await client.next();
    expect(again.message.type).toBe('Attestation');
    client.close();
  });

  it('advertises no features when configured with none (pure compat)', async () => {
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port }), features: [] });
    const client = await connectClient(a.port);
    client.send({ type: 'RequestAttestation' });
    const { message } = await client.next();
    expect(message.type).toBe('Attestation');
    expect('features' in message).toBe(false);
    client.close();
    await a.close();
  });
});

describe('Data', () => {
  it('round-trips a 1-byte request', async () => {
    const client = await connectClient(agent.port);
    client.send({ type: 'Data', id: 1, payload: Uint8Array.of(0x42) });
    const { message } = await client.next();
    expect(message).toEqual({ type: 'Data', id: 1, payload: Uint8Array.of(0x42) });
    client.close();
  });

  it('round-trips the largest payload that fits one frame, in both encodings', async () => {
    const client = await connectClient(agent.port);
    // int-array encoding: every byte ≥ 0x18 costs 2 bytes → 32,746 bytes for a small id (WIRE.md §4).
    const arrayPayload = bytesOf(32_746, (i) => 0x18 + (i % 200));
    expect(clientMessageSize({ type: 'Data', id: 1, payload: arrayPayload }, 'array')).toBeLessThanOrEqual(MAX_MESSAGE_LEN);
    expect(clientMessageSize({ type: 'Data', id: 1, payload: bytesOf(32_747, 0x18) }, 'array')).toBeGreaterThan(MAX_MESSAGE_LEN);
    client.send({ type: 'Data', id: 1, payload: arrayPayload }, 'array');
    const a = await client.next();
    expect(a.encoding).toBe('array');
    expect(a.message.type === 'Data' && equalBytes(a.message.payload, arrayPayload)).toBe(true);

    let n = MAX_MESSAGE_LEN - 30;
    while (clientMessageSize({ type: 'Data', id: 2, payload: new Uint8Array(n + 1) }, 'bstr') <= MAX_MESSAGE_LEN) n++;
    const bstrPayload = bytesOf(n, (i) => (i * 7) & 0xff);
    client.send({ type: 'Data', id: 2, payload: bstrPayload }, 'bstr');
    const b = await client.next();
    expect(b.encoding).toBe('bstr');
    expect(b.message.type === 'Data' && b.message.id === 2 && equalBytes(b.message.payload, bstrPayload)).toBe(true);
    client.close();
  });

  it('answers a response too large for one frame with Error and keeps the session', async () => {
    const big = await startReplyApp((req) => (req.toString() === 'huge' ? new Uint8Array(100_000) : bytesOf(40_000, 0xff)));
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: big.port, halfCloseData: true }) });
    const client = await connectClient(a.port);
    // Raw size over the frame: the agent stops reading the app.
    client.send({ type: 'Data', id: 7, payload: utf8.encode('huge') });
    const first = (await client.next()).message;
    expect(first.type).toBe('Error');
    expect(first.type === 'Error' && first.id).toBe(7);
    expect(first.type === 'Error' && first.message).toMatch(/^response too large for one frame \(more than 65519 bytes; max 65519\)$/);
    // Raw size fits, but the int-array encoding (2 bytes per 0xff) does not: exact encoded size reported.
    client.send({ type: 'Data', id: 8, payload: utf8.encode('wide') }, 'array');
    const second = (await client.next()).message;
    expect(second.type === 'Error' && second.message).toMatch(/^response too large for one frame \(800\d\d bytes; max 65519\)$/);
    // The same response fits as a byte string, and the session is still usable.
    client.send({ type: 'Data', id: 9, payload: utf8.encode('wide') }, 'bstr');
    const third = (await client.next()).message;
    expect(third.type === 'Data' && third.id === 9 && third.payload.length).toBe(40_000);
    client.close();
    await a.close();
    await big.close();
  });

  it('forwards to a real HTTP app without half-closing the request (Connection: close)', async () => {
    const http = await import('node:http');
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => res.end(`${req.method} ${req.url} ${body}`));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: port }) });
    const client = await connectClient(a.port);
    const req = 'POST /pay HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello';
    client.send({ type: 'Data', id: 1, payload: utf8.encode(req) });
    const { message } = await client.next();
    if (message.type !== 'Data') throw new Error(`expected Data, got ${JSON.stringify(message)}`);
    const text = utf8.decode(message.payload);
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(text.endsWith('POST /pay hello')).toBe(true);
    client.close();
    await a.close();
    server.close();
  });

  it('replies in completion order, matched by id', async () => {
    const app = await startReplyApp(async (req) => {
      await sleep(Number(req.toString()));
      return req;
    });
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: app.port, halfCloseData: true }) });
    const client = await connectClient(a.port);
    client.send({ type: 'Data', id: 1, payload: utf8.encode('300') });
    client.send({ type: 'Data', id: 2, payload: utf8.encode('10') });
    const first = (await client.next()).message;
    const second = (await client.next()).message;
    expect(first.type === 'Data' && first.id).toBe(2);
    expect(second.type === 'Data' && second.id).toBe(1);
    client.close();
    await a.close();
    await app.close();
  });
});

describe('in-flight limits', () => {
  /** An app that answers only when released. */
  async function gatedApp(): Promise<{ app: TestApp; release: () => void; arrived: () => number }> {
    let open = false;
    let arrived = 0;
    const waiting: (() => void)[] = [];
    const app = await startReplyApp(async (req) => {
      arrived++;
      if (!open) await new Promise<void>((r) => waiting.push(r));
      return req;
    });
    return {
      app,
      arrived: () => arrived,
      release: () => {
        open = true;
        for (const w of waiting.splice(0)) w();
      },
    };
  }

  it('serves 200 concurrent requests on one session when the limit allows it', async () => {
    const gate = await gatedApp();
    const a = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: gate.app.port, halfCloseData: true }),
      limits: { maxInFlight: 256 },
    });
    const client = await connectClient(a.port);
    for (let id = 1; id <= 200; id++) client.send({ type: 'Data', id, payload: utf8.encode(`req-${id}`) }, 'bstr');
    await waitFor(() => gate.arrived() === 200, 10_000, '200 requests at the app');
    gate.release();
    const seen = new Map<number, string>();
    for (let i = 0; i < 200; i++) {
      const { message } = await client.next();
      if (message.type !== 'Data') throw new Error(`unexpected ${JSON.stringify(message)}`);
      seen.set(message.id, utf8.decode(message.payload));
    }
    expect(seen.size).toBe(200);
    for (let id = 1; id <= 200; id++) expect(seen.get(id)).toBe(`req-${id}`);
    client.close();
    await a.close();
    await gate.app.close();
  });

  it('answers the 65th concurrent request with Error at once and keeps serving the 64 (default limit)', async () => {
    const gate = await gatedApp();
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: gate.app.port, halfCloseData: true }) });
    expect(a.responder.limits.maxInFlight).toBe(64);
    const client = await connectClient(a.port);
    for (let id = 1; id <= 65; id++) client.send({ type: 'Data', id, payload: utf8.encode(`r${id}`) });
    // The refusal arrives while the 64 are still held by the app: the session is not blocked.
    const refusal = (await client.next()).message;
    expect(refusal).toEqual({ type: 'Error', id: 65, message: 'too many in-flight requests (limit 64)' });
    // Session-level requests still work while the window is full.
    client.send({ type: 'RequestAttestation' });
    expect((await client.next()).message.type).toBe('Attestation');
    await waitFor(() => gate.arrived() === 64, 5000, '64 requests at the app');
    gate.release();
    const ids = new Set<number>();
    for (let i = 0; i < 64; i++) {
      const { message } = await client.next();
      expect(message.type).toBe('Data');
      if (message.type === 'Data') ids.add(message.id);
    }
    expect(ids.size).toBe(64);
    // A slot is free again.
    client.send({ type: 'Data', id: 66, payload: utf8.encode('again') });
    expect((await client.until(isData(66))).at(-1)!.message.type).toBe('Data');
    client.close();
    await a.close();
    await gate.app.close();
  });
});

describe('forwarding failures', () => {
  async function freePort(): Promise<number> {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    return port;
  }

  it('answers Error "app unreachable at 127.0.0.1:PORT (ECONNREFUSED)" when the app is down', async () => {
    const port = await freePort();
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: port, startupGraceMs: 0 }) });
    const client = await connectClient(a.port);
    client.send({ type: 'Data', id: 3, payload: utf8.encode('x') });
    expect((await client.next()).message).toEqual({ type: 'Error', id: 3, message: `app unreachable at 127.0.0.1:${port} (ECONNREFUSED)` });
    client.send({ type: 'OpenStream', id: 4, payload: new Uint8Array(0) });
    expect((await client.next()).message).toEqual({ type: 'Error', id: 4, message: `app unreachable at 127.0.0.1:${port} (ECONNREFUSED)` });
    client.close();
    await a.close();
  });

  it('waits for an app that starts late (start-up grace), then fails fast once it has answered and gone', async () => {
    const port = await freePort();
    // A grace far past every wait here: the last refusal comes at all only because the app had answered.
    const forwarder = createRawForwarder({ appPort: port, startupGraceMs: 600_000, retryIntervalMs: 50, halfCloseData: true });
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder });
    const client = await connectClient(a.port);
    client.send({ type: 'Data', id: 1, payload: utf8.encode('early') });
    await sleep(300);
    expect(forwarder.appAnswered).toBe(false);
    const { startApp } = await import('./helpers.ts');
    const late = await startApp((s) => s.pipe(s), port);
    expect((await client.next()).message).toEqual({ type: 'Data', id: 1, payload: utf8.encode('early') });
    expect(forwarder.appAnswered).toBe(true);
    await late.close();
    client.send({ type: 'Data', id: 2, payload: utf8.encode('late') });
    expect((await client.next()).message).toEqual({ type: 'Error', id: 2, message: `app unreachable at 127.0.0.1:${port} (ECONNREFUSED)` });
    client.close();
    await a.close();
  });
});

describe('in-process transports', () => {
  it('leaves the bytes a non-socket Duplex was given untouched (frames from sockets alone are decrypted in place)', async () => {
    const app = await startEchoApp();
    const responder = createResponder({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: app.port, halfCloseData: true }) });
    const written: { copy: Uint8Array; given: Uint8Array }[] = [];
    let toClient: (b: Uint8Array) => void = () => {};
    const transport = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        toClient(new Uint8Array(chunk));
        cb();
      },
    });
    responder.handle(transport, { transport: 'tcp', remote: 'in-process' });
    const client = await handshake({
      write: (b) => {
        written.push({ copy: b.slice(), given: b });
        transport.push(b); // the very buffer the client keeps
      },
      onData: (cb) => (toClient = cb),
      onClose: () => {},
      close: () => transport.destroy(),
    });
    client.send({ type: 'Data', id: 1, payload: utf8.encode(`GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ${'p'.repeat(2000)}\r\nConnection: close\r\n\r\n`) }, 'bstr'); // > the reader's 256-byte copy threshold
    const { message } = await client.next(5000);
    expect(message.type).toBe('Data');
    for (const w of written) expect(equalBytes(w.given, w.copy)).toBe(true);
    client.close();
    await responder.close();
    await app.close();
  });
});

describe('streams', () => {
  it('never encrypts in place a buffer an in-process app Duplex passes on (its writer may keep it: a constant body)', async () => {
    const CONSTANT = Buffer.alloc(40_000, 0x61); // what an HTTP stage might write again and again
    const agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: {
        connect: () =>
          Promise.resolve(
            new Duplex({
              read() {},
              write(_chunk, _enc, cb) {
                this.push(CONSTANT); // the very same Buffer object every time
                cb();
              },
            }),
          ),
      },
    });
    const client = await connectClient(agent.port);
    for (const enc of ['bstr', 'array'] as const) {
      const id = enc === 'bstr' ? 1 : 2;
      client.send({ type: 'OpenStream', id, payload: Uint8Array.of(1) }, enc);
      client.send({ type: 'StreamData', id, payload: Uint8Array.of(2) }, enc);
      let got = 0;
      while (got < 2 * CONSTANT.length) {
        const { message } = await client.next(10_000);
        if (message.type !== 'StreamData' || message.id !== id) throw new Error(`unexpected ${message.type}`);
        expect(message.payload.every((b) => b === 0x61)).toBe(true);
        got += message.payload.length;
      }
      client.send({ type: 'StreamClose', id, half: 'Both' });
    }
    expect(CONSTANT.every((b) => b === 0x61)).toBe(true);
    client.close();
    await agent.close();
  });

  it('echoes 10 MB through a stream with half-close', async () => {
    const client = await connectClient(agent.port);
    const total = 10 * 1024 * 1024;
    const chunk = 16 * 1024;
    const hashIn = createHash('sha256');
    client.send({ type: 'OpenStream', id: 5, payload: new Uint8Array(0) }, 'bstr');
    const block = bytesOf(chunk, (i) => (i * 31) & 0xff);
    let received = 0;
    const hashOut = createHash('sha256');
    let closed = false;
    const reading = (async () => {
      while (!closed) {
        const { message } = await client.next(20_000);
        if (message.type === 'StreamData' && message.id === 5) {
          received += message.payload.length;
          hashOut.update(message.payload);
          expect(message.payload.length).toBeLessThanOrEqual(64_000); // bstr: up to a full frame
        } else if (message.type === 'StreamClose' && message.id === 5) closed = true;
        else throw new Error(`unexpected ${JSON.stringify(message)}`);
      }
    })();
    for (let sent = 0; sent < total; sent += chunk) {
      block[0] = (sent / chunk) & 0xff;
      hashIn.update(block);
      client.send({ type: 'StreamData', id: 5, payload: block }, 'bstr');
      if (client.pipe && sent % (1024 * 1024) === 0) await sleep(0);
    }
    client.send({ type: 'StreamClose', id: 5, half: 'Write' });
    await reading;
    expect(received).toBe(total);
    expect(hashOut.digest('hex')).toBe(hashIn.digest('hex'));
    // The stream is over: more data is refused with the compat error text.
    client.send({ type: 'StreamData', id: 5, payload: Uint8Array.of(1) });
    await waitFor(() => true);
    const after = await client.next();
    expect(after.message).toEqual({ type: 'Error', id: 5, message: 'unknown stream id' });
    client.close();
  }, 60_000);

  it('echoes int-array streams byte-exact on three sessions at once (their replies share reused message buffers)', async () => {
    const total = 3 * 1024 * 1024;
    const chunk = 16 * 1024;
    const one = async (seed: number): Promise<void> => {
      const client = await connectClient(agent.port);
      const hashIn = createHash('sha256');
      const hashOut = createHash('sha256');
      client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'array');
      let received = 0;
      const reading = (async () => {
        for (;;) {
          const { message, encoding } = await client.next(20_000);
          if (message.type === 'StreamClose') return;
          if (message.type !== 'StreamData') throw new Error(`unexpected ${message.type}`);
          expect(encoding).toBe('array');
          received += message.payload.length;
          hashOut.update(message.payload);
        }
      })();
      for (let sent = 0; sent < total; sent += chunk) {
        const block = bytesOf(chunk, (i) => (i * 31 + sent / chunk + seed) & 0xff);
        hashIn.update(block);
        client.send({ type: 'StreamData', id: 1, payload: block }, 'array');
        if (sent % (256 * 1024) === 0) await sleep(0);
      }
      client.send({ type: 'StreamClose', id: 1, half: 'Write' });
      await reading;
      expect(received).toBe(total);
      expect(hashOut.digest('hex')).toBe(hashIn.digest('hex'));
      client.close();
    };
    await Promise.all([one(1), one(2), one(3)]);
  }, 60_000);

  it('keeps a stream writable after the app closes its side, and tears it down on StreamClose{Both}', async () => {
    const got: Buffer[] = [];
    const app = await (await import('./helpers.ts')).startApp((s) => {
      s.end('bye'); // app EOF first
      s.on('data', (c: Buffer) => got.push(c));
    });
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: app.port }) });
    const client = await connectClient(a.port);
    client.send({ type: 'OpenStream', id: 9, payload: utf8.encode('hello ') });
    const msgs = await client.until((m) => m.type === 'StreamClose');
    expect(msgs.map((r) => r.message)).toEqual([
      { type: 'StreamData', id: 9, payload: utf8.encode('bye') },
      { type: 'StreamClose', id: 9 },
    ]);
    client.send({ type: 'StreamData', id: 9, payload: utf8.encode('world') });
    await waitFor(() => Buffer.concat(got).toString() === 'hello world', 5000, 'app to receive the late bytes');
    client.send({ type: 'StreamClose', id: 9, half: 'Both' });
    await waitFor(() => app.sockets[0]!.destroyed || app.sockets[0]!.readableEnded, 5000, 'app socket closed');
    client.close();
    await a.close();
    await app.close();
  });

  it('answers StreamData for an unknown stream id with Error "unknown stream id"', async () => {
    const client = await connectClient(agent.port);
    client.send({ type: 'StreamData', id: 77, payload: Uint8Array.of(1, 2, 3) });
    expect((await client.next()).message).toEqual({ type: 'Error', id: 77, message: 'unknown stream id' });
    // StreamClose for an unknown id is ignored; the session still works.
    client.send({ type: 'StreamClose', id: 77, half: 'Both' });
    client.send({ type: 'Data', id: 78, payload: Uint8Array.of(9) });
    expect((await client.next()).message).toEqual({ type: 'Data', id: 78, payload: Uint8Array.of(9) });
    client.close();
  });
});

describe('hostile input', () => {
  async function healthy(): Promise<void> {
    const c = await connectClient(agent.port);
    c.send({ type: 'Data', id: 1, payload: utf8.encode('ok?') });
    expect((await c.next()).message).toEqual({ type: 'Data', id: 1, payload: utf8.encode('ok?') });
    c.close();
  }

  it('closes the session on a tampered frame and keeps the others', async () => {
    const bystander = await connectClient(agent.port);
    const victim = await connectClient(agent.port);
    const frame = victim.seal({ type: 'Data', id: 1, payload: utf8.encode('tamper me') });
    frame[frame.length - 1]! ^= 0x01;
    victim.pipe.write(frame);
    await closedWithin(victim);
    expect(agent.closedSessions.some((s) => s.reason === 'receive-failed' && s.errorCode === 'NOISE_DECRYPT_FAILED')).toBe(true);
    bystander.send({ type: 'Data', id: 2, payload: utf8.encode('still here') });
    expect((await bystander.next()).message).toEqual({ type: 'Data', id: 2, payload: utf8.encode('still here') });
    bystander.close();
  });

  it('closes the session on undecodable CBOR without a reply', async () => {
    const c = await connectClient(agent.port);
    c.sendPlaintext(Uint8Array.of(0xff, 0x00));
    await closedWithin(c);
    await expect(c.next(100)).rejects.toThrow();
    await healthy();
  });

  it('closes the session on a frame length of 2^32−1 and keeps the others', async () => {
    const c = await connectClient(agent.port);
    c.pipe.write(Uint8Array.of(0xff, 0xff, 0xff, 0xff));
    await closedWithin(c);
    expect(agent.closedSessions.some((s) => s.errorCode === 'WIRE_FRAME_TOO_LARGE')).toBe(true);
    await healthy();
  });

  it('closes a garbage handshake (low-order point) and keeps the others', async () => {
    const socket = await connectTcp(agent.port);
    socket.write(new Uint8Array(32)); // all-zero X25519 point
    await new Promise<void>((r) => socket.once('close', () => r()));
    expect(socket.bytesRead).toBe(0); // nothing was answered
    expect(agent.closedSessions.some((s) => s.reason === 'handshake-failed')).toBe(true);
    await healthy();
  });

  it('closes a 1-byte-at-a-time handshake at the handshake timeout', async () => {
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port }), limits: { handshakeTimeoutMs: 300 } });
    const socket = await connectTcp(a.port);
    let open = true;
    socket.once('close', () => (open = false));
    let sent = 0;
    for (; sent < 32 && open; sent++) {
      socket.write(Uint8Array.of(9));
      await sleep(50);
    }
    await waitFor(() => !open, 3000, 'close');
    // Closed mid-trickle: each byte came well within 300 ms of the last, so only a deadline on the whole
    // handshake (not on each read) ends it before the 32nd.
    expect(sent).toBeLessThan(32);
    expect(a.closedSessions[0]?.reason).toBe('handshake-timeout');
    await a.close();
  });

  it('accepts hs1 in any chunking', async () => {
    const { handshake, tcpPipe } = await import('./helpers.ts');
    const socket = await connectTcp(agent.port);
    const base = tcpPipe(socket);
    // Split every write into 1-byte writes.
    const pipe = { ...base, write: (b: Uint8Array) => b.forEach((x) => socket.write(Uint8Array.of(x))) };
    const c = await handshake(pipe);
    c.send({ type: 'RequestAttestation' });
    expect((await c.next()).message.type).toBe('Attestation');
    c.close();
  });

  it('survives 200 connections sending random bytes, each closed by the agent or idle', async () => {
    const closedBefore = agent.closedSessions.length;
    const sockets = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const s = await connectTcp(agent.port);
        s.write(bytesOf(i % 120, () => Math.floor(Math.random() * 256)));
        return s;
      }),
    );
    await sleep(200);
    await healthy();
    // Those whose garbage ended before a complete frame header are waiting for more; a FIN ends them.
    for (const s of sockets) s.end();
    // 200 garbage sessions + the healthy one.
    await waitFor(() => agent.closedSessions.length >= closedBefore + 201, 5000, 'every garbage session to close');
    for (const s of sockets) s.destroy();
  });
});

describe('channels', () => {
  it('refuses control messages on the public channel, then closes', async () => {
    const c = await connectClient(agent.port);
    c.send({ type: 'GetControlNonce' });
    expect((await c.next()).message).toEqual({ type: 'ControlResult', success: false, message: 'message not accepted on the public channel' });
    await closedWithin(c);
    const nonceBefore = agent.responder.controlNonce.current();
    const d = await connectClient(agent.port);
    d.send({ type: 'Control', payload: Uint8Array.of(1), signature: new Uint8Array(64) });
    expect((await d.next()).message).toEqual({ type: 'ControlResult', success: false, message: 'message not accepted on the public channel' });
    await closedWithin(d);
    // The refusal does not consume the control nonce.
    expect(equalBytes(agent.responder.controlNonce.current(), nonceBefore)).toBe(true);
  });

  it('refuses Data and streams on the control channel, then closes', async () => {
    const a = await startTestAgent({ nsm: sim, channel: 'control', forwarder: createRawForwarder({ appPort: echoApp.port }) });
    for (const msg of [
      { type: 'Data', id: 1, payload: Uint8Array.of(1) },
      { type: 'OpenStream', id: 1, payload: Uint8Array.of(1) },
      { type: 'StreamData', id: 1, payload: Uint8Array.of(1) },
      { type: 'StreamClose', id: 1, half: 'Write' },
    ] as const) {
      const c = await connectClient(a.port);
      c.send(msg);
      expect((await c.next()).message).toEqual({ type: 'ControlResult', success: false, message: 'message not accepted on the control channel' });
      await closedWithin(c);
    }
    expect(echoApp.sockets.length).toBeGreaterThanOrEqual(0);
    await a.close();
  });
});

describe('session lifecycle', () => {
  it('closes an idle session, but never one with a request in flight', async () => {
    const slow = await startReplyApp(async (req) => {
      await sleep(600);
      return req;
    });
    const a = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: slow.port, halfCloseData: true }),
      limits: { idleTimeoutMs: 200 },
    });
    const busy = await connectClient(a.port);
    busy.send({ type: 'Data', id: 1, payload: utf8.encode('slow') });
    expect((await busy.next()).message).toEqual({ type: 'Data', id: 1, payload: utf8.encode('slow') });
    await closedWithin(busy, 2000);
    expect(a.closedSessions[0]?.reason).toBe('idle');
    await a.close();
    await slow.close();
  });

  it('answers requests in flight after the client half-closes (half-open transport), then closes', async () => {
    const slow = await startReplyApp(async (req) => {
      await sleep(200);
      return req;
    });
    const { createResponder } = await import('../../src/responder/server.ts');
    const closed: string[] = [];
    const responder = createResponder({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: slow.port, halfCloseData: true }),
      onSessionClosed: (s) => closed.push(s.reason),
    });
    const server = net.createServer({ allowHalfOpen: true }, (s) => responder.handle(s, { remote: 'test', transport: 'tcp' }));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { handshake, tcpPipe } = await import('./helpers.ts');
    const socket = await connectTcp((server.address() as net.AddressInfo).port);
    const c = await handshake(tcpPipe(socket));
    c.send({ type: 'Data', id: 1, payload: utf8.encode('last words') });
    socket.end(); // FIN after the request
    expect((await c.next()).message).toEqual({ type: 'Data', id: 1, payload: utf8.encode('last words') });
    await closedWithin(c);
    expect(closed).toEqual(['client-closed']);
    await responder.close();
    server.close();
    await slow.close();
  });

  it('destroys connections beyond maxSessions before any crypto', async () => {
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }), limits: { maxSessions: 2 } });
    const c1 = await connectClient(a.port);
    const c2 = await connectClient(a.port);
    const extra = await connectTcp(a.port);
    await new Promise<void>((r) => extra.once('close', () => r()));
    expect(extra.bytesRead).toBe(0);
    expect(a.responder.refusedCount).toBe(1);
    c1.send({ type: 'Data', id: 1, payload: Uint8Array.of(1) });
    expect((await c1.next()).message.type).toBe('Data');
    c1.close();
    c2.close();
    await waitFor(() => a.responder.sessionCount === 0);
    const c3 = await connectClient(a.port);
    c3.close();
    await a.close();
  });

  it('drains: finishes in-flight requests, refuses new ones, then closes', async () => {
    const slow = await startReplyApp(async (req) => {
      await sleep(300);
      return req;
    });
    const a = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: slow.port, halfCloseData: true }) });
    const c = await connectClient(a.port);
    c.send({ type: 'Data', id: 1, payload: utf8.encode('in flight') });
    await waitFor(() => slow.sockets.length === 1);
    const drained = a.responder.drain(5000);
    c.send({ type: 'Data', id: 2, payload: utf8.encode('too late') });
    const msgs = await c.until(isData(1));
    expect(msgs.map((m) => m.message)).toContainEqual({ type: 'Error', id: 2, message: 'agent is shutting down' });
    expect(msgs.at(-1)!.message).toEqual({ type: 'Data', id: 1, payload: utf8.encode('in flight') });
    await drained;
    await closedWithin(c);
    expect(a.closedSessions[0]?.reason).toBe('drain');
    await a.close();
    await slow.close();
  });
});

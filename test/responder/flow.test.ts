// Memory bounds under slow peers, PROXY v2 handling, the bridge path, many sessions at once, and buffer reuse
// under a bulk stream.
import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { startBridge } from '../../src/host/bridge.ts';
import { freshMessageBuffers } from '../../src/responder/message-buffers.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { encodeProxyV2, parseProxyV2 } from '../../src/transport/proxy-v2.ts';
import { equalBytes, utf8 } from '../../src/util/bytes.ts';
import {
  bytesOf,
  closedWithin,
  connectClient,
  connectTcp,
  handshake,
  recording,
  sleep,
  startApp,
  startEchoApp,
  startTestAgent,
  tcpPipe,
  testSimulator,
  waitFor,
  wsPipe,
  type TestApp,
} from './helpers.ts';

let sim: NsmSimulator;
let echoApp: TestApp;

beforeAll(async () => {
  sim = await testSimulator();
  echoApp = await startEchoApp();
});

afterAll(async () => {
  await echoApp.close();
});

/** Resolves once `value()` has not changed for `quietMs`. */
async function plateau(value: () => number, quietMs = 400, timeoutMs = 10_000): Promise<number> {
  const end = Date.now() + timeoutMs;
  let last = value();
  for (;;) {
    await sleep(quietMs);
    const now = value();
    if (now === last) return now;
    if (Date.now() > end) throw new Error(`still moving after ${timeoutMs} ms (${now})`);
    last = now;
  }
}

const BUDGET = { maxStreamQueuedBytes: 256 * 1024, maxSessionQueuedBytes: 512 * 1024, maxClientQueuedBytes: 256 * 1024 };

describe('backpressure', () => {
  it('stops reading a client that outpaces a slow app, loses nothing, and keeps other sessions served', async () => {
    const received: Buffer[] = [];
    let appSocket: net.Socket | undefined;
    const app = await startApp((s) => {
      appSocket = s;
      s.pause(); // the app does not read (yet)
      s.on('data', (c: Buffer) => received.push(c));
    });
    const fw = recording(createRawForwarder({ appPort: app.port }));
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, limits: BUDGET });
    const client = await connectClient(agent.port);
    client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
    await waitFor(() => appSocket !== undefined);
    const total = 48 * 1024 * 1024;
    const block = bytesOf(32 * 1024, (i) => i & 0xff);
    for (let sent = 0; sent < total; sent += block.length) client.send({ type: 'StreamData', id: 1, payload: block }, 'bstr');

    const agentSide = agent.sockets[0]!;
    const readByAgent = await plateau(() => agentSide.bytesRead);
    // The agent stopped reading long before the 48 MB: what it holds is its budget plus kernel buffers toward the app.
    expect(readByAgent).toBeLessThan(total / 2);
    expect(fw.sockets[0]!.writableLength).toBeLessThanOrEqual(BUDGET.maxStreamQueuedBytes + 64 * 1024);

    // Another session is unaffected.
    const other = await connectClient(agent.port);
    other.send({ type: 'RequestAttestation' });
    expect((await other.next()).message.type).toBe('Attestation');
    other.close();

    // The app starts reading: everything arrives, intact.
    appSocket!.resume();
    await waitFor(() => received.reduce((n, c) => n + c.length, 0) === total, 30_000, 'all bytes at the app');
    const all = Buffer.concat(received);
    for (let off = 0; off < total; off += 1024 * 1024) expect(all[off + 5]).toBe(5);
    client.close();
    await agent.close();
    await app.close();
  }, 60_000);

  it('stops reading a fast app while the client does not read, then delivers every byte', async () => {
    const total = 32 * 1024 * 1024;
    const app = await startApp((s) => {
      const chunk = Buffer.alloc(64 * 1024, 7);
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          sent += chunk.length;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
    const fw = recording(createRawForwarder({ appPort: app.port }));
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, limits: BUDGET });
    const socket = await connectTcp(agent.port);
    const client = await handshake(tcpPipe(socket));
    socket.pause(); // the client stops reading
    client.send({ type: 'OpenStream', id: 3, payload: new Uint8Array(0) }, 'bstr');
    await waitFor(() => fw.sockets.length === 1);
    const readFromApp = await plateau(() => fw.sockets[0]!.bytesRead);
    expect(readFromApp).toBeLessThan(total / 2);
    // What the agent holds toward the client is bounded by its budget (+ one read's worth of frames).
    expect(agent.sockets[0]!.writableLength).toBeLessThanOrEqual(BUDGET.maxClientQueuedBytes + 200 * 1024);

    socket.resume();
    let got = 0;
    for (;;) {
      const { message } = await client.next(20_000);
      if (message.type === 'StreamData') got += message.payload.length;
      else if (message.type === 'StreamClose') break;
      else throw new Error(`unexpected ${message.type}`);
    }
    expect(got).toBe(total);
    client.close();
    await agent.close();
    await app.close();
  }, 60_000);

  it('keeps the session reading while Data replies wait for a client that does not read, within maxInFlight', async () => {
    const app = await startApp((s) => {
      s.on('data', () => {});
      s.on('end', () => s.end(Buffer.alloc(30_000, 1)));
    });
    const fw = recording(createRawForwarder({ appPort: app.port, halfCloseData: true }));
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, limits: { ...BUDGET, maxInFlight: 8 } });
    const socket = await connectTcp(agent.port);
    const client = await handshake(tcpPipe(socket));
    socket.pause();
    for (let id = 1; id <= 400; id++) client.send({ type: 'Data', id, payload: Uint8Array.of(1) }, 'bstr');
    await plateau(() => fw.sockets.length);
    // Replies are held (the client is not reading) and new requests were refused, not queued without bound.
    expect(agent.sockets[0]!.writableLength).toBeLessThanOrEqual(BUDGET.maxClientQueuedBytes + 40 * 1024 * 8);
    socket.resume();
    let data = 0;
    let refused = 0;
    for (let i = 0; i < 400; i++) {
      const { message } = await client.next(20_000);
      if (message.type === 'Data') data++;
      else if (message.type === 'Error' && message.message === 'too many in-flight requests (limit 8)') refused++;
      else throw new Error(`unexpected ${JSON.stringify(message).slice(0, 100)}`);
    }
    expect(data + refused).toBe(400);
    expect(data).toBeGreaterThanOrEqual(8);
    client.close();
    await agent.close();
    await app.close();
  }, 60_000);
});

describe('PROXY v2', () => {
  const header = encodeProxyV2({ source: { address: '203.0.113.7', port: 4242 }, destination: { address: '10.0.0.1', port: 443 } });

  it('reads the client address from a PROXY v2 header and forwards it to the app in its own header', async () => {
    const seenByApp: Uint8Array[] = [];
    const app = await startApp((s) => {
      const chunks: Buffer[] = [];
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => {
        seenByApp.push(Buffer.concat(chunks));
        s.end('ok');
      });
    });
    const fw = recording(createRawForwarder({ appPort: app.port, halfCloseData: true, forwardProxyProtocol: true }));
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, acceptProxyProtocol: true });
    const client = await connectClient(agent.port, { preamble: header });
    client.send({ type: 'Data', id: 1, payload: utf8.encode('payload') });
    expect((await client.next()).message).toEqual({ type: 'Data', id: 1, payload: utf8.encode('ok') });
    expect(fw.contexts[0]!.client).toEqual({ address: '203.0.113.7', port: 4242, family: 'IPv4' });
    const atApp = seenByApp[0]!;
    const parsed = parseProxyV2(atApp)!;
    expect(parsed.source).toEqual({ address: '203.0.113.7', port: 4242, family: 'IPv4' });
    expect(utf8.decode(atApp.subarray(parsed.consumed))).toBe('payload');
    client.close();
    await agent.close();
    await app.close();
  });

  it('closes a connection whose PROXY header is invalid, and one that never completes it', async () => {
    const agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: echoApp.port }),
      acceptProxyProtocol: true,
      limits: { handshakeTimeoutMs: 300 },
    });
    const bad = await connectTcp(agent.port);
    bad.write(new Uint8Array(32)); // a bare hs1, no header
    await new Promise<void>((r) => bad.once('close', () => r()));
    const slow = await connectTcp(agent.port);
    slow.write(header.subarray(0, 10));
    await new Promise<void>((r) => slow.once('close', () => r()));
    expect(agent.closedSessions.map((s) => s.reason).sort()).toEqual(['handshake-timeout', 'proxy-header']);
    await agent.close();
  });
});

describe('through the host bridge', () => {
  it('handshakes, attests and forwards over WebSocket, with the client address from the bridge', async () => {
    const fw = recording(createRawForwarder({ appPort: echoApp.port, halfCloseData: true }));
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: fw, acceptProxyProtocol: true });
    const bridge = await startBridge({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: agent.port }, proxyProtocol: true });
    try {
      const client = await handshake(await wsPipe(bridge.url));
      client.send({ type: 'RequestAttestation' });
      const att = (await client.next()).message;
      if (att.type !== 'Attestation') throw new Error('expected Attestation');
      const doc = await verifyAttestation(att.data, { roots: [sim.rootPem], nonce: client.handshakeHash, pcrs: { PCR0: sim.pcrs[0]!, PCR1: sim.pcrs[1]!, PCR2: sim.pcrs[2]! } });
      expect(equalBytes(doc.nonce!, client.handshakeHash)).toBe(true);

      client.send({ type: 'Data', id: 1, payload: utf8.encode('via bridge') });
      expect((await client.next()).message).toEqual({ type: 'Data', id: 1, payload: utf8.encode('via bridge') });
      expect(fw.contexts[0]!.client?.address).toMatch(/^(127\.0\.0\.1|::ffff:127\.0\.0\.1)$/);

      // A 1 MB stream echo through the bridge (server bytes split/merged freely across WS frames).
      client.send({ type: 'OpenStream', id: 2, payload: new Uint8Array(0) }, 'bstr');
      const block = bytesOf(16 * 1024, (i) => i & 0xff);
      for (let i = 0; i < 64; i++) client.send({ type: 'StreamData', id: 2, payload: block }, 'bstr');
      client.send({ type: 'StreamClose', id: 2, half: 'Write' });
      let got = 0;
      for (;;) {
        const { message } = await client.next();
        if (message.type === 'StreamData') got += message.payload.length;
        else if (message.type === 'StreamClose') break;
      }
      expect(got).toBe(64 * 16 * 1024);
      client.close();
      await closedWithin(client);
    } finally {
      await bridge.close();
      await agent.close();
    }
  }, 30_000);
});

describe('scale', () => {
  it('serves 1,000 concurrent sessions on one agent: handshake, attestation and one Data each', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }) });
    const N = 1000;
    const clients = [];
    // Connect in waves (the listen backlog is finite), but keep every session open at once.
    for (let wave = 0; wave < N / 100; wave++) {
      clients.push(...(await Promise.all(Array.from({ length: 100 }, () => connectClient(agent.port)))));
    }
    expect(agent.responder.sessionCount).toBe(N);
    const results = await Promise.all(
      clients.map(async (c, i) => {
        c.send({ type: 'RequestAttestation' });
        const att = (await c.next(30_000)).message;
        c.send({ type: 'Data', id: i + 1, payload: utf8.encode(`n${i}`) }, i % 2 === 0 ? 'array' : 'bstr');
        const data = (await c.next(30_000)).message;
        return att.type === 'Attestation' && data.type === 'Data' && utf8.decode(data.payload) === `n${i}`;
      }),
    );
    expect(results.filter(Boolean)).toHaveLength(N);
    for (const c of clients) c.close();
    await waitFor(() => agent.responder.sessionCount === 0, 10_000, 'every session closed');
    await agent.close();
  }, 120_000);
});

// A bulk bstr stream reuses the session's 64 KB message buffers instead of allocating one per frame (each fresh one
// is external memory to V8, a full GC every ~64 MB of it): a received frame that spanned socket reads comes back
// once the app's socket has taken its bytes, and app reads joined into one message come back once it is written.
// Reuse must never show: every byte arrives intact, in order.
const sha256 = (parts: Uint8Array[]): string => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

describe('bulk bstr stream through a raw forwarder', () => {
  it('echoes 8 MiB byte for byte while allocating a bounded number of message buffers', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port }) });
    try {
      const client = await handshake(tcpPipe(await connectTcp(agent.port)));
      client.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
      const sent: Uint8Array[] = [];
      const total = 8 * 1024 * 1024;
      const before = freshMessageBuffers();
      // 64,000-byte messages: most frames span the agent's 64 KiB socket reads and are copied into a reused buffer.
      for (let n = 0; n < total; n += 64_000) {
        const block = new Uint8Array(randomBytes(Math.min(64_000, total - n)));
        sent.push(block);
        client.send({ type: 'StreamData', id: 1, payload: block }, 'bstr');
      }
      client.send({ type: 'StreamClose', id: 1, half: 'Write' });
      const got: Uint8Array[] = [];
      let bytes = 0;
      for (;;) {
        const { message } = await client.next(20_000);
        if (message.type === 'StreamData') {
          got.push(message.payload);
          bytes += message.payload.length;
        } else if (message.type === 'StreamClose') break;
        else throw new Error(`unexpected ${message.type}`);
      }
      expect(bytes).toBe(total);
      expect(sha256(got)).toBe(sha256(sent));
      // One per received frame before (127 of the 132); now only what is in flight at once (19–32 seen), well under
      // the 64 the pool keeps.
      expect(freshMessageBuffers() - before).toBeLessThanOrEqual(64);
      client.close();
      await closedWithin(client);
    } finally {
      await agent.close();
    }
  }, 60_000);
});

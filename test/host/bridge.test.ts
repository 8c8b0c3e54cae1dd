import { createHash, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startBridge, type Bridge, type BridgeOptions } from '../../src/host/bridge.ts';
import { CloseCode } from '../../src/host/close-codes.ts';
import { HS2, startFakeAgent, type FakeAgent, type FakeAgentOptions } from './fake-agent.ts';
import { selfSignedCert } from './self-signed.ts';
import { TestClient } from './ws-client.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const until = async (pred: () => boolean): Promise<void> => {
  while (!pred()) await sleep(10);
};
const HS1 = Buffer.alloc(32, 0xa1);

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(agentOpts: FakeAgentOptions = {}, bridgeOpts: Partial<BridgeOptions> = {}): Promise<{ agent: FakeAgent; bridge: Bridge }> {
  const agent = await startFakeAgent(agentOpts);
  cleanups.push(() => agent.close());
  const bridge = await startBridge({
    listen: { host: '127.0.0.1', port: 0 },
    target: { kind: 'tcp', host: '127.0.0.1', port: agent.port },
    ...bridgeOpts,
  });
  cleanups.push(() => bridge.close());
  return { agent, bridge };
}

async function open(url: string, opts = {}): Promise<TestClient> {
  const c = await TestClient.open(url, opts);
  cleanups.push(() => {
    c.ws.terminate();
    return Promise.resolve();
  });
  return c;
}

/** Opens a client and completes the 32/48-byte exchange. */
async function handshake(bridge: Bridge): Promise<TestClient> {
  const c = await open(bridge.url);
  c.ws.send(HS1);
  await c.message(0);
  return c;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A TCP connection that sends nothing; `answer` is all it received once closed. */
const raw = (port: number, localAddress = '127.0.0.1'): Promise<{ socket: Socket; answer: Promise<string> }> =>
  new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress }, () => resolve({ socket, answer }));
    socket.on('error', () => {});
    const got: Buffer[] = [];
    socket.on('data', (d: Buffer) => got.push(d));
    const answer = new Promise<string>((done) => socket.once('close', () => done(Buffer.concat(got).toString())));
    cleanups.push(() => Promise.resolve(void socket.destroy()));
  });

/** A sink for the bridge's JSON log lines. */
function logLines(): { lines: Record<string, unknown>[]; logger: pino.Logger } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: pino({ level: 'info' }, sink) };
}

describe('startBridge', () => {
  it('delivers the agent hs2, written in 3 delayed pieces, as exactly one 48-byte WS frame', async () => {
    const { agent, bridge } = await setup({ hs2Writes: [10, 20, 18], delayMs: 30 });
    const c = await open(bridge.url);
    c.ws.send(HS1);
    const first = await c.message(0);
    expect(first.length).toBe(48);
    expect(first.equals(HS2)).toBe(true);
    expect((await agent.next()).hs1.equals(HS1)).toBe(true);
    c.ws.send(Buffer.from('after'));
    await c.until(() => c.received >= 48 + 5);
    expect(c.bytes().subarray(48).toString()).toBe('after');
  });

  it('sends hs2 alone even when the agent writes it together with the next bytes', async () => {
    const { bridge } = await setup({ hs2Writes: [48], appendToHs2: Buffer.from('frame-bytes') });
    const c = await open(bridge.url);
    c.ws.send(HS1);
    await c.until(() => c.received >= 48 + 11);
    expect(c.messages[0]!.equals(HS2)).toBe(true);
    expect(Buffer.concat(c.messages.slice(1)).toString()).toBe('frame-bytes');
  });

  it('carries 5 MB both ways intact, splitting large client messages for the agent', async () => {
    const { bridge } = await setup();
    const c = await handshake(bridge);
    const payload = randomBytes(5 * 1024 * 1024);
    // Frame-sized messages plus some larger than the 32768-byte write cap.
    for (let off = 0, i = 0; off < payload.length; i++) {
      const size = i % 5 === 0 ? 200_000 : 65_539;
      c.ws.send(payload.subarray(off, Math.min(payload.length, off + size)));
      off += size;
    }
    await c.until(() => c.received >= 48 + payload.length, 30_000);
    expect(sha(c.bytes().subarray(48))).toBe(sha(payload));
  });

  it('closes the WebSocket with 1000 when the agent ends its stream, after delivering its last bytes', async () => {
    const { bridge } = await setup({
      after: (conn) => {
        conn.socket.end(Buffer.from('bye'));
      },
    });
    const c = await open(bridge.url);
    c.ws.send(HS1);
    const closed = await c.closed;
    expect(closed.code).toBe(CloseCode.AGENT_CLOSED);
    expect(c.bytes().subarray(48).toString()).toBe('bye');
    await c.until(() => bridge.connections === 0);
  });

  it('closes the WebSocket with 1011 when the agent stream is reset', async () => {
    const { bridge } = await setup({ after: (conn) => setTimeout(() => conn.socket.resetAndDestroy(), 50) });
    const c = await open(bridge.url);
    c.ws.send(HS1);
    expect((await c.closed).code).toBe(CloseCode.AGENT_ERROR);
  });

  it('closes the agent stream when the client closes, after writing what the client sent', async () => {
    const got: Buffer[] = [];
    const { agent, bridge } = await setup({ after: (conn) => conn.socket.on('data', (d: Buffer) => got.push(d)).resume() });
    const c = await handshake(bridge);
    c.ws.send(Buffer.from('last words'));
    c.ws.close(1000);
    const conn = await agent.next();
    await conn.closed;
    expect(Buffer.concat(got).toString()).toBe('last words');
    await c.until(() => bridge.connections === 0);
  });

  it('writes a PROXY v2 header with the client address and port before any client byte', async () => {
    const { agent, bridge } = await setup({ proxy: true }, { proxyProtocol: true });
    const c = await handshake(bridge);
    const conn = await agent.next();
    const clientSocket = (c.ws as unknown as { _socket: Socket })._socket;
    expect(conn.proxy).toEqual({
      consumed: 28,
      command: 'PROXY',
      source: { address: '127.0.0.1', port: clientSocket.localPort, family: 'IPv4' },
      destination: { address: '127.0.0.1', port: bridge.port, family: 'IPv4' },
    });
    expect(conn.hs1.equals(HS1)).toBe(true);
  });

  it('answers HTTP 503 beyond maxConnections and accepts again once a slot frees up', async () => {
    const { bridge } = await setup({}, { maxConnections: 2 });
    const a = await handshake(bridge);
    await handshake(bridge);
    expect(bridge.connections).toBe(2);
    await expect(TestClient.open(bridge.url)).rejects.toMatchObject({ statusCode: 503 });
    a.ws.close();
    await a.closed;
    await a.until(() => bridge.connections === 1);
    const c = await handshake(bridge);
    expect(c.messages[0]!.equals(HS2)).toBe(true);
  });

  it('logs refused upgrades as one line with a count, never one per connection', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    const { bridge } = await setup({}, { maxConnections: 1, logger: pino({ level: 'info' }, sink) });
    await handshake(bridge);
    const refused = await Promise.all(Array.from({ length: 10 }, () => TestClient.open(bridge.url).then(() => 0, (e: { statusCode?: number }) => e.statusCode)));
    expect(refused).toEqual(Array.from({ length: 10 }, () => 503));
    await bridge.close();
    expect(lines.filter((l) => /refused/.test(String(l.msg)))).toEqual([expect.objectContaining({ total: 10, counts: { 'connection-limit': 10 } })]);
  });

  it('refuses connections beyond maxPendingUpgrades not yet upgraded (503, or closed before TLS), counted', async () => {
    const { lines, logger } = logLines();
    const { bridge } = await setup({}, { maxPendingUpgrades: 2, logger });
    const port = Number(new URL(bridge.url).port);
    // Upgraded WebSockets do not count against the cap.
    for (let i = 0; i < 3; i++) await handshake(bridge);
    const idle: Socket[] = [];
    for (let i = 0; i < 2; i++) idle.push((await raw(port)).socket);
    await until(() => bridge.pendingUpgrades === 2);
    expect(await (await raw(port)).answer).toMatch(/^HTTP\/1\.1 503 /);
    await expect(TestClient.open(bridge.url)).rejects.toMatchObject({ statusCode: 503 });
    expect(bridge.connections).toBe(3);
    // Once those go, upgrades are accepted again.
    for (const s of idle) s.destroy();
    await until(() => bridge.pendingUpgrades === 0);
    expect((await handshake(bridge)).messages[0]!.equals(HS2)).toBe(true);
    await bridge.close();
    expect(lines.filter((l) => /refused/.test(String(l.msg)))).toEqual([expect.objectContaining({ total: 2, counts: { 'pending-upgrade-limit': 2 } })]);

    // wss://: nothing readable can be sent before the TLS handshake; the connection is closed unanswered.
    const tls = await setup({}, { maxPendingUpgrades: 1, tls: await selfSignedCert() });
    const tlsPort = Number(new URL(tls.bridge.url).port);
    await raw(tlsPort);
    await until(() => tls.bridge.pendingUpgrades === 1);
    const handshaken = await new Promise<boolean>((resolve) => {
      const t = tlsConnect({ port: tlsPort, host: '127.0.0.1', rejectUnauthorized: false }, () => resolve(true));
      t.on('error', () => resolve(false));
      t.once('close', () => resolve(false));
      cleanups.push(() => Promise.resolve(void t.destroy()));
    });
    expect(handshaken).toBe(false);
  });

  it('refuses one client address beyond maxPendingUpgradesPerClient not yet upgraded, others still served', async () => {
    const { lines, logger } = logLines();
    const { bridge } = await setup({}, { maxPendingUpgradesPerClient: 2, handshakeTimeoutMs: 3000, logger });
    const port = Number(new URL(bridge.url).port);
    for (let i = 0; i < 3; i++) await handshake(bridge); // upgraded: not counted
    const idle = [(await raw(port)).socket, (await raw(port)).socket];
    await until(() => bridge.pendingUpgrades === 2);
    expect(await (await raw(port)).answer).toMatch(/^HTTP\/1\.1 503 /);
    await expect(TestClient.open(bridge.url)).rejects.toMatchObject({ statusCode: 503 });
    // Another address (all of 127/8 is loopback) is not held back by the first one's connections.
    await raw(port, '127.0.0.2');
    await until(() => bridge.pendingUpgrades === 3);
    const other = await open(bridge.url, { localAddress: '127.0.0.2' });
    other.ws.send(HS1);
    expect((await other.message(0)).equals(HS2)).toBe(true);
    // Once one of the first address's goes, it may upgrade again.
    idle[0]!.destroy();
    await until(() => bridge.pendingUpgrades === 2);
    expect((await handshake(bridge)).messages[0]!.equals(HS2)).toBe(true);
    await bridge.close();
    expect(lines.filter((l) => /refused/.test(String(l.msg)))).toEqual([expect.objectContaining({ total: 2, counts: { 'pending-upgrade-per-client-limit': 2 } })]);

    // wss://: the upgrade comes on the TLS socket, and frees the address's pending slot all the same.
    const tls = await setup({}, { maxPendingUpgradesPerClient: 1, tls: await selfSignedCert() });
    for (let i = 0; i < 3; i++) {
      const c = await open(tls.bridge.url, { rejectUnauthorized: false });
      c.ws.send(HS1);
      expect((await c.message(0)).equals(HS2)).toBe(true);
    }
    await raw(Number(new URL(tls.bridge.url).port));
    await until(() => tls.bridge.pendingUpgrades === 1);
    await expect(TestClient.open(tls.bridge.url, { rejectUnauthorized: false })).rejects.toThrow();
  });

  it('closes with 4000 when the agent sends no 48-byte reply within the handshake timeout', async () => {
    const { bridge } = await setup({ silent: true }, { handshakeTimeoutMs: 200 });
    const c = await open(bridge.url);
    c.ws.send(HS1);
    // Only the handshake timer closes with 4000; the test's own timeout (10 s) is well under the 30 s ws waits
    // for a close handshake the bridge would not complete.
    expect((await c.closed).code).toBe(CloseCode.HANDSHAKE_TIMEOUT);
    expect(c.received).toBe(0);
  }, 10_000);

  it('drops a connection that sends no upgrade (or no TLS handshake) within the handshake timeout', async () => {
    const silentlyHeld = async (bridge: Bridge): Promise<void> => {
      const { port } = new URL(bridge.url);
      const sock = connect(Number(port), '127.0.0.1');
      sock.on('error', () => {});
      await new Promise<void>((resolve) => sock.once('close', () => resolve()));
    };
    const plain = await setup({}, { handshakeTimeoutMs: 300 });
    await silentlyHeld(plain.bridge);
    // Half an upgrade request, never finished.
    const { port } = new URL(plain.bridge.url);
    const partial = connect(Number(port), '127.0.0.1', () => partial.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n'));
    partial.on('error', () => {});
    await new Promise<void>((resolve) => partial.once('close', () => resolve()));
    const tls = await setup({}, { handshakeTimeoutMs: 300, tls: await selfSignedCert() });
    await silentlyHeld(tls.bridge);
    // A client that upgrades at once is unaffected.
    expect((await (await handshake(plain.bridge)).message(0)).equals(HS2)).toBe(true);
  });

  it('closes with 4000 when the agent answers only part of hs2, without forwarding the part', async () => {
    const { bridge } = await setup({ hs2Writes: [40, 8], delayMs: 2000 }, { handshakeTimeoutMs: 200 });
    const c = await open(bridge.url);
    c.ws.send(HS1);
    expect((await c.closed).code).toBe(CloseCode.HANDSHAKE_TIMEOUT);
    expect(c.received).toBe(0);
  });

  it('closes with 1014 when the agent is unreachable', async () => {
    const { agent, bridge } = await setup();
    await agent.close();
    const c = await open(bridge.url);
    // The close handshake completes (the WS is not left paused): left paused, the bridge would never read the
    // client's close frame and ws would cut the socket only after its 30 s close timeout, past this test's 10 s.
    expect((await c.closed).code).toBe(CloseCode.BAD_GATEWAY);
  }, 10_000);

  it('closes with 1003 on a text frame and drops the agent stream', async () => {
    const { agent, bridge } = await setup();
    const c = await handshake(bridge);
    c.ws.send('hello');
    expect((await c.closed).code).toBe(CloseCode.UNSUPPORTED_DATA);
    await (await agent.next()).closed;
  });

  it('closes with 1009 on a message above maxPayload', async () => {
    const { bridge } = await setup({}, { maxPayload: 1000 });
    const c = await handshake(bridge);
    c.ws.send(Buffer.alloc(1001));
    expect((await c.closed).code).toBe(1009);
  });

  it('closes with 4001 after idleTimeoutMs without traffic, and not while traffic flows', async () => {
    const { bridge } = await setup({}, { idleTimeoutMs: 1000 });
    const c = await handshake(bridge);
    // 8 × 150 ms of steady traffic outlasts the 1000 ms idle timeout.
    for (let i = 0; i < 8; i++) {
      await sleep(150);
      c.ws.send(Buffer.from([i]));
    }
    expect(c.ws.readyState).toBe(c.ws.OPEN);
    expect((await c.closed).code).toBe(CloseCode.IDLE_TIMEOUT);
  });

  it('answers plain HTTP requests with 426', async () => {
    const { bridge } = await setup();
    const res = await fetch(bridge.url.replace('ws:', 'http:'));
    expect(res.status).toBe(426);
  });

  it('serves wss:// with a certificate and bridges through TLS', async () => {
    const tls = await selfSignedCert();
    const { bridge } = await setup({}, { tls });
    expect(bridge.url).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/$/);
    const c = await open(bridge.url, { ca: tls.cert });
    c.ws.send(HS1);
    expect((await c.message(0)).equals(HS2)).toBe(true);
    c.ws.send(Buffer.from('over tls'));
    await c.until(() => c.received >= 56);
    expect(c.bytes().subarray(48).toString()).toBe('over tls');
  });

  it('closes every connection with 1001 on close() and stops accepting', async () => {
    const { bridge } = await setup();
    const a = await handshake(bridge);
    const b = await handshake(bridge);
    await bridge.close();
    expect((await a.closed).code).toBe(CloseCode.GOING_AWAY);
    expect((await b.closed).code).toBe(CloseCode.GOING_AWAY);
    expect(bridge.connections).toBe(0);
    await expect(TestClient.open(bridge.url)).rejects.toThrow();
  });

  it('logs open and close with the remote address and byte counts, never payload bytes', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    const { bridge } = await setup({}, { logger: pino({ level: 'debug' }, sink) });
    const c = await handshake(bridge);
    const secret = Buffer.from('SECRET-PAYLOAD-0123456789');
    c.ws.send(secret);
    await c.until(() => c.received >= 48 + secret.length);
    c.ws.close();
    await c.until(() => lines.some((l) => l.event === 'close'));
    const opened = lines.find((l) => l.event === 'open')!;
    const closed = lines.find((l) => l.event === 'close')!;
    expect(opened.remote).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(closed).toMatchObject({ remote: opened.remote, bytesIn: 32 + secret.length, bytesOut: 48 + secret.length });
    const all = JSON.stringify(lines);
    for (const needle of ['SECRET', secret.toString('hex'), secret.toString('base64'), HS2.toString('hex'), HS2.toString('base64')]) {
      expect(all).not.toContain(needle);
    }
  });

  it('keeps its memory bounded when a client stops reading while the agent sends 50 MB', async () => {
    const total = 50 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x5a);
    let accepted = 0;
    const { bridge } = await setup({
      after: (conn) => {
        // Write with backpressure so the only unbounded buffer could be the bridge's.
        const pump = (): void => {
          while (accepted < total) {
            accepted += chunk.length;
            if (!conn.socket.write(chunk)) {
              conn.socket.once('drain', pump);
              return;
            }
          }
        };
        pump();
      },
    });
    const c = await open(bridge.url);
    c.ws.pause(); // stop reading the socket: the bridge must stop reading the agent
    c.ws.send(HS1);
    const before = process.memoryUsage().arrayBuffers;
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await sleep(50);
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
    }
    const stalledAt = accepted;
    expect(stalledAt).toBeLessThan(total / 2);
    expect(peak).toBeLessThan(24 * 1024 * 1024);
    c.ws.resume();
    await c.until(() => c.received >= 48 + total, 60_000);
    expect(c.received).toBe(48 + total);
    expect(c.messages[0]!.equals(HS2)).toBe(true);
    expect(c.bytes().subarray(48).every((b) => b === 0x5a)).toBe(true);
  });

  it('cuts a client kept alive by a byte at a time that never reads, after writeStallTimeoutMs (4002 in the log)', async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    const chunk = Buffer.alloc(64 * 1024, 0x33);
    let agentGone = false;
    const { bridge } = await setup(
      {
        after: (conn) => {
          void conn.closed.then(() => (agentGone = true));
          const pump = (): void => {
            while (!conn.socket.destroyed) {
              if (!conn.socket.write(chunk)) {
                conn.socket.once('drain', pump);
                return;
              }
            }
          };
          pump();
        },
      },
      { writeStallTimeoutMs: 500, idleTimeoutMs: 60_000, logger: pino({ level: 'info' }, sink) },
    );
    const c = await open(bridge.url);
    c.ws.send(HS1);
    await c.message(0);
    c.ws.pause(); // never reads again
    const keepAlive = setInterval(() => c.ws.send(Buffer.of(1)), 50);
    try {
      const deadline = Date.now() + 20_000;
      while (bridge.connections > 0 && Date.now() < deadline) await sleep(50);
    } finally {
      clearInterval(keepAlive);
    }
    expect(bridge.connections).toBe(0);
    expect(lines.find((l) => l.event === 'close')).toMatchObject({ reason: 'write stall', code: CloseCode.WRITE_STALL });
    while (!agentGone) await sleep(20);
  });

  it('does not cut a client that reads slowly', async () => {
    const total = 8 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 0x44);
    const { bridge } = await setup(
      {
        after: (conn) => {
          let sent = 0;
          const pump = (): void => {
            while (sent < total) {
              sent += chunk.length;
              if (!conn.socket.write(chunk)) {
                conn.socket.once('drain', pump);
                return;
              }
            }
          };
          pump();
        },
      },
      { writeStallTimeoutMs: 300 },
    );
    const c = await open(bridge.url);
    c.ws.send(HS1);
    await c.message(0);
    while (c.received < 48 + total) {
      c.ws.pause();
      await sleep(150);
      c.ws.resume();
      await sleep(20);
      expect(bridge.connections).toBe(1);
    }
    expect(c.received).toBe(48 + total);
  });

  it('stops reading the WebSocket while the agent does not read, then delivers everything', async () => {
    const got: Buffer[] = [];
    let agentSocket: Socket | undefined;
    const { bridge } = await setup({
      after: (conn) => {
        agentSocket = conn.socket;
        conn.socket.pause();
        conn.socket.on('data', (d: Buffer) => got.push(d));
        conn.socket.pause();
      },
    });
    const c = await handshake(bridge);
    const total = 40 * 1024 * 1024;
    const payload = randomBytes(64 * 1024);
    for (let sent = 0; sent < total; sent += payload.length) c.ws.send(payload);
    await sleep(1000);
    // The bridge paused its WS reads: most of the 40 MB still waits in the client's own send buffer.
    expect(c.ws.bufferedAmount).toBeGreaterThan(total / 2);
    agentSocket!.resume();
    const deadline = Date.now() + 60_000;
    while (got.reduce((n, b) => n + b.length, 0) < total && Date.now() < deadline) await sleep(50);
    const all = Buffer.concat(got);
    expect(all.length).toBe(total);
    expect(all.subarray(total - payload.length).equals(payload)).toBe(true);
  });

  it('rejects invalid options with BRIDGE_BAD_OPTIONS', async () => {
    await expect(startBridge({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: 1 }, maxConnections: 0 })).rejects.toMatchObject({
      code: 'BRIDGE_BAD_OPTIONS',
    });
  });
});

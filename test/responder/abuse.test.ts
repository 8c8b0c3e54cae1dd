// What clients that do nothing useful can hold: idle slots kept by no-op frames, sessions per client address,
// output a client never reads (write stall, the shared budget), handshake floods, and how refusals are logged.
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { createResponder, startAgent, type Responder, type ResponderOptions } from '../../src/responder/server.ts';
import { listenTcp } from '../../src/transport/tcp.ts';
import type { ListenOptions } from '../../src/transport/types.ts';
import type { SessionSummary } from '../../src/responder/session.ts';
import { listenUnix } from '../../src/transport/unix.ts';
import { OVER_BUDGET_TEXT } from '../../src/responder/session-output.ts';
import { encodeProxyV2 } from '../../src/transport/proxy-v2.ts';
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
  tcpPipe,
  testSimulator,
  waitFor,
  type TestApp,
  type TestClient,
} from './helpers.ts';

let sim: NsmSimulator;
let echoApp: TestApp;
let bigApp: TestApp;

beforeAll(async () => {
  sim = await testSimulator();
  echoApp = await startEchoApp();
  bigApp = await startReplyApp(() => bytesOf(60_000, 9));
});

afterAll(async () => {
  await echoApp.close();
  await bigApp.close();
});

const proxyFrom = (address: string, port = 40000): Uint8Array =>
  encodeProxyV2({ source: { address, port }, destination: { address: '10.0.0.1', port: 443 } });

interface UnixAgent {
  responder: Responder;
  path: string;
  closedSessions: SessionSummary[];
  close(): Promise<void>;
}

/**
 * A responder on a Unix socket: small fixed socket buffers (~200 KB, like vsock's), where loopback TCP would
 * absorb megabytes per connection in the kernel before the agent queues anything.
 */
async function startUnixAgent(opts: ResponderOptions): Promise<UnixAgent> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'abuse-'));
  const closedSessions: SessionSummary[] = [];
  const responder = createResponder({ ...opts, onSessionClosed: (s) => closedSessions.push(s) });
  const sockPath = path.join(dir, 'agent.sock');
  const listener = await listenUnix({ path: sockPath }, { onConnection: (s, info) => responder.handle(s, info) });
  return {
    responder,
    path: sockPath,
    closedSessions,
    async close() {
      await listener.close();
      await responder.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function connectUnix(sockPath: string): Promise<net.Socket> {
  const socket = net.connect({ path: sockPath });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

/** A handshaken client whose socket then stops reading. */
async function nonReader(sockPath: string): Promise<{ client: TestClient; socket: net.Socket }> {
  const socket = await connectUnix(sockPath);
  const client = await handshake(tcpPipe(socket));
  socket.pause();
  return { client, socket };
}

/** A pino logger whose lines land in `lines`. */
function captureLogger(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

describe('idle timeout', () => {
  it('does not count frames that change nothing as activity: StreamClose / StreamData for unknown streams', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }), limits: { idleTimeoutMs: 300 } });
    const c = await connectClient(agent.port);
    let sent = 0;
    const ticker = setInterval(() => {
      if (c.isClosed) return;
      c.send({ type: 'StreamClose', id: 77, half: 'Both' });
      if (sent++ % 2 === 0) c.send({ type: 'StreamData', id: 78, payload: Uint8Array.of(1) });
    }, 40);
    try {
      await closedWithin(c, 5000);
    } finally {
      clearInterval(ticker);
    }
    expect(sent).toBeGreaterThan(5); // it kept sending no-ops well past the idle timeout
    expect(agent.closedSessions.map((s) => s.reason)).toEqual(['idle']);
    await agent.close();
  });

  it('still counts real work: a stream carrying bytes keeps its session open', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }), limits: { idleTimeoutMs: 300 } });
    const c = await connectClient(agent.port);
    c.send({ type: 'OpenStream', id: 1, payload: Uint8Array.of(1) });
    expect((await c.next()).message).toEqual({ type: 'StreamData', id: 1, payload: Uint8Array.of(1) });
    c.send({ type: 'StreamClose', id: 1, half: 'Both' });
    for (let i = 0; i < 10; i++) {
      await sleep(60);
      c.send({ type: 'Data', id: 100 + i, payload: Uint8Array.of(2) });
      expect((await c.next()).message).toMatchObject({ type: 'Data', id: 100 + i });
    }
    expect(c.isClosed).toBe(false);
    c.close();
    await agent.close();
  });
});

describe('sessions per client address', () => {
  it('closes a PROXY v2 source address over maxSessionsPerClient before any crypto; others and freed slots are served', async () => {
    const agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }),
      acceptProxyProtocol: true,
      limits: { maxSessionsPerClient: 3 },
    });
    const a = await Promise.all([1, 2, 3].map(async (i) => handshake(tcpPipe(await connectTcp(agent.port)), { preamble: proxyFrom('198.51.100.9', 40000 + i) })));
    // The fourth from the same address: closed after its PROXY header, no hs2.
    const socket = await connectTcp(agent.port);
    const received: Buffer[] = [];
    socket.on('data', (b: Buffer) => received.push(b));
    await expect(handshake(tcpPipe(socket), { preamble: proxyFrom('198.51.100.9', 40009) })).rejects.toThrow(/connection closed/);
    expect(received).toEqual([]);
    expect(agent.responder.counters.refusedPerClient).toBe(1);
    expect(agent.responder.refusedCount).toBe(1);
    expect(agent.closedSessions.at(-1)?.reason).toBe('client-limit');
    // Another address is not affected.
    const other = await handshake(tcpPipe(await connectTcp(agent.port)), { preamble: proxyFrom('198.51.100.10') });
    other.send({ type: 'Data', id: 1, payload: Uint8Array.of(5) });
    expect((await other.next()).message).toMatchObject({ type: 'Data', id: 1 });
    // A closed session gives its slot back.
    a[0]!.close();
    await waitFor(() => agent.responder.sessionCount === 3, 5000, 'the first session to close');
    const again = await handshake(tcpPipe(await connectTcp(agent.port)), { preamble: proxyFrom('198.51.100.9', 40010) });
    again.send({ type: 'RequestAttestation' });
    expect((await again.next()).message.type).toBe('Attestation');
    for (const c of [...a, other, again]) c.close();
    await agent.close();
  });
});

describe('sessions per IPv6 client', () => {
  it('counts an IPv6 source by its /64: addresses of one prefix share the allowance, another prefix has its own', async () => {
    // Failed before the change: each address of the /64 got maxSessionsPerClient sessions of its own.
    const agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }),
      acceptProxyProtocol: true,
      limits: { maxSessionsPerClient: 2 },
    });
    const a = await Promise.all(['2001:db8:7:1::1', '2001:db8:7:1::2'].map(async (ip) => handshake(tcpPipe(await connectTcp(agent.port)), { preamble: proxyFrom(ip) })));
    await expect(handshake(tcpPipe(await connectTcp(agent.port)), { preamble: proxyFrom('2001:db8:7:1:ffff::3') })).rejects.toThrow(/connection closed/);
    expect(agent.closedSessions.at(-1)?.reason).toBe('client-limit');
    const other = await handshake(tcpPipe(await connectTcp(agent.port)), { preamble: proxyFrom('2001:db8:7:2::1') });
    other.send({ type: 'Data', id: 1, payload: Uint8Array.of(5) });
    expect((await other.next()).message).toMatchObject({ type: 'Data', id: 1 });
    for (const c of [...a, other]) c.close();
    await agent.close();
  });
});

describe('output a client never reads', () => {
  it('closes a session whose queued output makes no progress within writeStallTimeoutMs, even while it keeps sending', async () => {
    const agent = await startUnixAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: bigApp.port, halfCloseData: true }),
      limits: { writeStallTimeoutMs: 500, idleTimeoutMs: 60_000 },
    });
    const { client } = await nonReader(agent.path);
    for (let id = 1; id <= 64; id++) client.send({ type: 'Data', id, payload: Uint8Array.of(1) }, 'bstr');
    // Frames keep arriving; they do not keep it alive.
    const ticker = setInterval(() => {
      if (!client.isClosed) client.send({ type: 'StreamClose', id: 999, half: 'Both' });
    }, 50);
    try {
      await waitFor(() => agent.closedSessions.length === 1, 15_000, 'the stalled session to close');
    } finally {
      clearInterval(ticker);
    }
    expect(agent.closedSessions[0]!.reason).toBe('write-stall');
    expect(agent.responder.counters.writeStalls).toBe(1);
    expect(agent.responder.counters.queuedBytes).toBe(0);
    client.close();
    await agent.close();
  });

  it('does not close a slow but reading client', async () => {
    const agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: bigApp.port, halfCloseData: true }),
      limits: { writeStallTimeoutMs: 300 },
    });
    const socket = await connectTcp(agent.port);
    const client = await handshake(tcpPipe(socket));
    for (let id = 1; id <= 40; id++) client.send({ type: 'Data', id, payload: Uint8Array.of(1) }, 'bstr');
    // Reads in bursts with pauses shorter than the stall timeout.
    let got = 0;
    while (got < 40) {
      socket.pause();
      await sleep(100);
      socket.resume();
      const { message } = await client.next(10_000);
      expect(message).toMatchObject({ type: 'Data' });
      got++;
    }
    expect(agent.closedSessions).toEqual([]);
    client.close();
    await agent.close();
  });

  it('keeps queued output within maxQueuedBytes over all sessions; past it new requests get Error; it recovers', async () => {
    const budget = 512 * 1024;
    const agent = await startUnixAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: bigApp.port, halfCloseData: true }),
      limits: { maxQueuedBytes: budget, writeStallTimeoutMs: 1500 },
    });
    const stalled = await Promise.all([1, 2, 3, 4].map(() => nonReader(agent.path)));
    for (const { client } of stalled) for (let id = 1; id <= 64; id++) client.send({ type: 'Data', id, payload: Uint8Array.of(1) }, 'bstr');
    await waitFor(() => agent.responder.counters.overBudget > 0, 10_000, 'the budget to fill');
    expect(agent.responder.counters.peakQueuedBytes).toBeLessThanOrEqual(budget);

    // A well-behaved client meanwhile: its new request is refused with Error, not queued.
    const good = await handshake(tcpPipe(await connectUnix(agent.path)));
    good.send({ type: 'Data', id: 1, payload: Uint8Array.of(1) }, 'bstr');
    expect((await good.next()).message).toEqual({ type: 'Error', id: 1, message: OVER_BUDGET_TEXT });

    // Sessions still holding output are closed by the write-stall timeout (the others' replies became Errors that
    // their socket buffers took); every queued byte goes back to the budget.
    await waitFor(() => agent.responder.counters.queuedBytes === 0 && agent.closedSessions.length > 0, 15_000, 'the stalled sessions to close');
    expect(agent.closedSessions.map((s) => s.reason)).toEqual(agent.closedSessions.map(() => 'write-stall'));
    expect(agent.responder.counters.writeStalls).toBe(agent.closedSessions.length);
    expect(agent.responder.counters.peakQueuedBytes).toBeLessThanOrEqual(budget);
    good.send({ type: 'Data', id: 2, payload: Uint8Array.of(1) }, 'bstr');
    const reply = (await good.next()).message;
    expect(reply).toMatchObject({ type: 'Data', id: 2 });
    expect((reply as { payload: Uint8Array }).payload.length).toBe(60_000);
    good.close();
    for (const { client } of stalled) client.close();
    await agent.close();
  });
});

describe('ids', () => {
  it('answers Error to a Data whose id is an open stream', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }) });
    const c = await connectClient(agent.port);
    c.send({ type: 'OpenStream', id: 5, payload: Uint8Array.of(1) });
    expect((await c.next()).message).toEqual({ type: 'StreamData', id: 5, payload: Uint8Array.of(1) });
    c.send({ type: 'Data', id: 5, payload: Uint8Array.of(2) });
    expect((await c.next()).message).toEqual({ type: 'Error', id: 5, message: 'id already in use by an open stream' });
    // The stream is unaffected.
    c.send({ type: 'StreamData', id: 5, payload: Uint8Array.of(3) });
    expect((await c.next()).message).toEqual({ type: 'StreamData', id: 5, payload: Uint8Array.of(3) });
    c.close();
    await agent.close();
  });
});

describe('refusals', () => {
  it('logs refused connections once per interval with a count, never one line per connection', async () => {
    const { logger, lines } = captureLogger();
    const agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }),
      limits: { maxSessions: 2 },
      logger,
      refusalLogIntervalMs: 300,
    });
    const kept = await Promise.all([1, 2].map(() => connectClient(agent.port)));
    const refused = await Promise.all(Array.from({ length: 30 }, () => connectTcp(agent.port)));
    await Promise.all(refused.map((s) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())))));
    await waitFor(() => lines.some((l) => String(l.msg).startsWith('connections refused')), 5000, 'the refusal line');
    const refusalLines = lines.filter((l) => /refused/.test(String(l.msg)));
    expect(refusalLines).toHaveLength(1);
    expect(refusalLines[0]).toMatchObject({ total: 30, counts: { 'max-sessions': 30 } });
    expect(agent.responder.counters.refusedSessions).toBe(30);
    for (const c of kept) c.close();
    await agent.close();
  });
});

describe('listener accept errors', () => {
  it('reach the responder through startAgent: counted, and logged once per interval with a count', async () => {
    const { logger, lines } = captureLogger();
    let opts: ListenOptions | undefined;
    const agent = await startAgent({
      nsm: sim,
      forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }),
      logger,
      refusalLogIntervalMs: 200,
      listen: (o) => {
        opts = o;
        return listenTcp({ port: 0 }, o);
      },
    });
    const emfile = Object.assign(new Error('accept EMFILE'), { code: 'EMFILE' });
    for (let i = 0; i < 25; i++) opts!.onError!(emfile);
    opts!.onError!(Object.assign(new Error('accept ENFILE'), { code: 'ENFILE' }));
    expect(agent.public.responder.counters.acceptErrors).toBe(26);
    await waitFor(() => lines.some((l) => String(l.msg).startsWith('listener accept errors')), 5000, 'the accept-error line');
    expect(lines.filter((l) => String(l.msg).startsWith('listener accept errors'))).toEqual([
      expect.objectContaining({ total: 26, counts: { EMFILE: 25, ENFILE: 1 } }),
    ]);
    // Still serving.
    const c = await connectClient(agent.public.listener.port!);
    c.send({ type: 'Data', id: 1, payload: Uint8Array.of(1) });
    expect((await c.next()).message).toMatchObject({ type: 'Data', id: 1 });
    c.close();
    await agent.close();
  });
});

describe('handshake admission', () => {
  it('a flood of handshakes does not starve established sessions: they are queued or closed before any crypto', async () => {
    const agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }),
      limits: { maxConcurrentHandshakes: 2, maxQueuedHandshakes: 8, maxSessions: 2000 },
    });
    const established = await connectClient(agent.port);
    // 400 connections; each sends its hs1 in the same burst.
    const flood = await Promise.all(Array.from({ length: 400 }, () => connectTcp(agent.port)));
    const hs2Bytes = flood.map(() => 0);
    flood.forEach((s, i) => s.on('data', (b: Buffer) => (hs2Bytes[i]! += b.length)));
    await waitFor(() => agent.responder.sessionCount === 401, 10_000, 'every flood connection to be accepted');
    const hs1 = bytesOf(32, (i) => i + 1);
    for (const s of flood) s.write(hs1);
    // Meanwhile the established session's requests are all answered.
    for (let id = 1; id <= 50; id++) established.send({ type: 'Data', id, payload: Uint8Array.of(id) });
    const answers = await established.until((m) => m.type === 'Data' && m.id === 50, 20_000);
    expect(answers.map((r) => r.message)).toEqual(Array.from({ length: 50 }, (_, i) => ({ type: 'Data', id: i + 1, payload: Uint8Array.of(i + 1) })));

    await waitFor(() => flood.every((s, i) => s.destroyed || hs2Bytes[i] === 48), 20_000, 'every flood connection to be answered or closed');
    const counters = agent.responder.counters;
    const answered = hs2Bytes.filter((n) => n === 48).length;
    const closedWithoutReply = hs2Bytes.filter((n, i) => n === 0 && flood[i]!.destroyed).length;
    expect(counters.queuedHandshakes).toBeGreaterThan(0);
    expect(counters.refusedHandshakes).toBeGreaterThan(0);
    // Every refused connection was closed before any crypto: no hs2 byte reached it.
    expect(closedWithoutReply).toBe(counters.refusedHandshakes);
    expect(answered + closedWithoutReply).toBe(400);
    expect(counters.handshakesWaiting).toBe(0);
    expect(agent.responder.refusedCount).toBe(counters.refusedHandshakes);
    expect(agent.closedSessions.filter((s) => s.reason === 'handshake-refused')).toHaveLength(counters.refusedHandshakes);
    for (const s of flood) s.destroy();
    established.close();
    await agent.close();
  });

  it('a queued handshake completes on a later turn', async () => {
    const agent = await startTestAgent({
      nsm: sim,
      channel: 'public',
      forwarder: createRawForwarder({ appPort: echoApp.port, halfCloseData: true }),
      limits: { maxConcurrentHandshakes: 1, maxQueuedHandshakes: 100 },
    });
    const sockets = await Promise.all(Array.from({ length: 20 }, () => connectTcp(agent.port)));
    const clients = await Promise.all(sockets.map((s) => handshake(tcpPipe(s))));
    expect(agent.responder.counters.refusedHandshakes).toBe(0);
    for (const [i, c] of clients.entries()) {
      c.send({ type: 'Data', id: i, payload: Uint8Array.of(i) });
      expect((await c.next()).message).toEqual({ type: 'Data', id: i, payload: Uint8Array.of(i) });
      c.close();
    }
    await agent.close();
  });
});

// Fault suite: the app fails under the agent. The app is a real process (SIGKILLed mid-response and
// mid-stream) or an app that accepts and never answers. Every request gets exactly one clean answer (an
// HTTP error status, a typed Error frame, or StreamClose) within a bound, the session survives, and the
// agent serves again as soon as the app is back.
import net from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { utf8 } from '../../src/util/bytes.ts';
import { connectClient, type TestClient } from '../responder/helpers.ts';
import { settledLeftovers } from '../runtime/harness.ts';
import { httpRequest, startAgentStack, startAppProcess, statusOf, waitUntil, type AgentStack, type AppProcess } from './stack.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterAll(async () => expect(await settledLeftovers()).toEqual([]));
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

async function app(port?: number, opts: { raw?: boolean; rawPort?: number } = {}): Promise<AppProcess> {
  const a = await startAppProcess(port, opts);
  cleanup.push(() => a.kill());
  return a;
}

async function agent(opts: Parameters<typeof startAgentStack>[0]): Promise<AgentStack> {
  const s = await startAgentStack(opts);
  cleanup.push(() => s.close());
  return s;
}

async function client(port: number): Promise<TestClient> {
  const c = await connectClient(port);
  cleanup.push(() => c.close());
  c.send({ type: 'RequestAttestation' });
  expect((await c.next()).message.type).toBe('Attestation');
  return c;
}

type Reply = Extract<ServerMessage, { type: 'Data' | 'Error' }>;

/** The one Data/Error reply for `id` (other messages are skipped). */
async function reply(c: TestClient, id: number, timeoutMs = 10_000): Promise<Reply> {
  const got = await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, timeoutMs);
  return got.at(-1)!.message as Reply;
}

async function get(c: TestClient, id: number, target: string): Promise<{ status: number; body: string }> {
  c.send({ type: 'Data', id, payload: httpRequest('GET', target) });
  const r = await reply(c, id);
  if (r.type === 'Error') throw new Error(`Error reply: ${r.message}`);
  const text = utf8.decode(r.payload);
  return { status: statusOf(text), body: text.slice(text.indexOf('\r\n\r\n') + 4) };
}

/** Messages for stream `id` until its StreamClose or Error. */
async function streamEnd(c: TestClient, id: number, timeoutMs: number): Promise<ServerMessage> {
  const got = await c.until((m) => (m.type === 'StreamClose' || m.type === 'Error') && m.id === id, timeoutMs);
  return got.at(-1)!.message;
}

describe('the app is killed mid-response', () => {
  it('HTTP mode: a Data request whose app dies after part of its body gets an error, never a complete-looking answer; the session serves again once the app is back', async () => {
    const a = await app();
    const s = await agent({ appPort: a.port });
    const c = await client(s.port);
    expect((await get(c, 1, '/')).status).toBe(200);

    c.send({ type: 'Data', id: 2, payload: httpRequest('GET', '/partial') });
    await a.waitForLine('begin /partial');
    await a.kill();
    const r = await reply(c, 2, 5_000);
    if (r.type === 'Data') {
      // The head went out before the app died: the body must be visibly cut short (1000 declared).
      const text = utf8.decode(r.payload);
      expect(text.length - text.indexOf('\r\n\r\n') - 4).toBeLessThan(1000);
    } else {
      expect(r.message).not.toBe('');
    }

    // While the app is down: a clean 502, fast.
    expect((await get(c, 3, '/')).status).toBe(502);
    const b = await app(a.port);
    const again = await get(c, 4, '/');
    expect(again).toEqual({ status: 200, body: `ok ${b.child.pid}` });
    expect(c.isClosed).toBe(false);
    expect(s.runtime.sessionCount()).toBe(1);
  }, 30_000);

  it('raw mode: a Data request whose app dies mid-response is answered (error or the truncated bytes), and the session keeps going', async () => {
    const a = await app();
    const s = await agent({ appPort: a.port, mode: 'raw' });
    const c = await client(s.port);
    c.send({ type: 'Data', id: 1, payload: httpRequest('GET', '/partial') });
    await a.waitForLine('begin /partial');
    await a.kill();
    const r = await reply(c, 1, 5_000);
    if (r.type === 'Data') expect(utf8.decode(r.payload)).toMatch(/^HTTP\/1\.1 200 [\s\S]*\r\n\r\np{100}$/);
    const b = await app(a.port);
    expect(await get(c, 2, '/')).toEqual({ status: 200, body: `ok ${b.child.pid}` });
    expect(s.runtime.sessionCount()).toBe(1);
  }, 30_000);
});

describe('the app is killed mid-stream', () => {
  it('HTTP mode: a streamed response cut by the app dying ends the stream (StreamClose or Error) and frees its slot', async () => {
    const a = await app();
    const s = await agent({ appPort: a.port, limits: { max_in_flight: 2 } });
    const c = await client(s.port);
    c.send({ type: 'OpenStream', id: 10, payload: utf8.encode('GET /drip HTTP/1.1\r\nHost: app\r\n\r\n') });
    await c.until((m) => m.type === 'StreamData' && m.id === 10 && utf8.decode(m.payload).includes('drip 3'), 5_000);
    await a.kill();
    const end = await streamEnd(c, 10, 5_000);
    expect(['StreamClose', 'Error']).toContain(end.type);
    // If the agent left a StreamClose without closing the stream, the client closes its side.
    c.send({ type: 'StreamClose', id: 10, half: 'Both' });

    const b = await app(a.port);
    // Both in-flight slots are free again (limit 2): two slow requests at once succeed.
    c.send({ type: 'Data', id: 11, payload: httpRequest('GET', '/slow?ms=200') });
    c.send({ type: 'Data', id: 12, payload: httpRequest('GET', '/slow?ms=200') });
    for (const id of [11, 12]) {
      const r = await reply(c, id);
      expect(r.type === 'Data' ? statusOf(r.payload) : r.message).toBe(200);
    }
    expect(await get(c, 13, '/')).toEqual({ status: 200, body: `ok ${b.child.pid}` });
  }, 30_000);

  it('raw mode: an echo stream whose app dies ends with StreamClose or Error, and new streams work after the restart', async () => {
    const a = await app(undefined, { raw: true });
    const s = await agent({ appPort: a.rawPort!, mode: 'raw' });
    const c = await client(s.port);
    c.send({ type: 'OpenStream', id: 1, payload: utf8.encode('hello') });
    await c.until((m) => m.type === 'StreamData' && m.id === 1, 5_000);
    await a.kill();
    expect(['StreamClose', 'Error']).toContain((await streamEnd(c, 1, 5_000)).type);
    c.send({ type: 'StreamClose', id: 1, half: 'Both' });

    await app(a.port, { rawPort: a.rawPort! });
    c.send({ type: 'OpenStream', id: 2, payload: utf8.encode('again') });
    const data = await c.until((m) => m.type === 'StreamData' && m.id === 2, 5_000);
    expect(utf8.decode((data.at(-1)!.message as { payload: Uint8Array }).payload)).toBe('again');
    expect(s.runtime.sessionCount()).toBe(1);
  }, 30_000);
});

describe('the app accepts but never answers', () => {
  it('HTTP mode: 504 after upstream_timeout_ms, the slot is released, and the session keeps serving', async () => {
    const a = await app();
    const s = await agent({ appPort: a.port, app: { upstream_timeout_ms: 800 }, limits: { max_in_flight: 1 } });
    const c = await client(s.port);
    c.send({ type: 'Data', id: 1, payload: httpRequest('GET', '/hang') });
    // A 504 at all within this 10 s wait is the configured timeout's: the default one (60 s) would come too late.
    const r = await reply(c, 1, 10_000);
    expect(r.type === 'Error' ? r.message : 'Data').toBe('Data');
    expect(statusOf((r as { payload: Uint8Array }).payload)).toBe(504);
    expect((await get(c, 2, '/')).status).toBe(200); // limit 1: the slot was freed
  }, 30_000);

  it('raw mode: a silent app (TCP accept, no read, no answer) gets an Error after the response timeout; a stream to it is torn down by StreamClose{Both}', async () => {
    const silent: net.Socket[] = [];
    const server = net.createServer((sock) => {
      sock.on('error', () => {});
      sock.resume(); // reads and discards, never answers
      silent.push(sock);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => {
      for (const x of silent) x.destroy();
      server.close(() => resolve());
    }));
    const port = (server.address() as net.AddressInfo).port;
    const s = await agent({ appPort: port, mode: 'raw', app: { upstream_timeout_ms: 800 }, limits: { max_in_flight: 1 } });
    const c = await client(s.port);
    c.send({ type: 'Data', id: 1, payload: httpRequest('GET', '/') });
    const r = await reply(c, 1, 10_000);
    expect(r).toMatchObject({ type: 'Error', id: 1 });
    expect((r as { message: string }).message).toMatch(/did not finish its response/);

    c.send({ type: 'OpenStream', id: 2, payload: utf8.encode('anyone?') });
    await waitUntil(() => silent.length === 2, 5_000, 'the stream to reach the app');
    c.send({ type: 'StreamClose', id: 2, half: 'Both' });
    await waitUntil(() => silent[1]!.destroyed || silent[1]!.readableEnded, 5_000, 'the app socket to be closed');
    // The slot (limit 1) is free again.
    c.send({ type: 'Data', id: 3, payload: httpRequest('GET', '/') });
    const third = await reply(c, 3, 10_000);
    expect(third).toMatchObject({ type: 'Error', id: 3 });
    expect((third as { message: string }).message).toMatch(/did not finish its response/);
    expect(c.isClosed).toBe(false);
  }, 30_000);
});

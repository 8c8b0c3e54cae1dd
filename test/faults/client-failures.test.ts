// Fault suite: hostile or broken clients. A client that vanishes mid-frame, 5,000 connections that never
// finish the handshake, and a session flooding requests past its in-flight limit: the agent frees what
// they held, answers every request exactly once, and keeps serving legitimate clients meanwhile.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { connectClient, type TestClient } from '../responder/helpers.ts';
import { settledLeftovers } from '../runtime/harness.ts';
import { httpRequest, sleep, startAgentStack, startAppProcess, statusOf, waitUntil, type AppProcess } from './stack.ts';

let app: AppProcess;
beforeAll(async () => {
  app = await startAppProcess();
});
afterAll(async () => {
  await app.kill();
  expect(await settledLeftovers()).toEqual([]);
});

type Reply = Extract<ServerMessage, { type: 'Data' | 'Error' }>;

async function reply(c: TestClient, id: number, timeoutMs = 10_000): Promise<Reply> {
  const got = await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, timeoutMs);
  return got.at(-1)!.message as Reply;
}

/** Handshake + attestation + GET / through the agent; rejects if it does not all finish within timeoutMs. */
async function legitimateRequest(port: number, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  let c: TestClient | undefined;
  const work = (async () => {
    c = await connectClient(port);
    c.send({ type: 'RequestAttestation' });
    expect((await c.next(timeoutMs)).message.type).toBe('Attestation');
    c.send({ type: 'Data', id: 1, payload: httpRequest('GET', '/') });
    const r = await reply(c, 1, timeoutMs);
    expect(r.type === 'Data' ? statusOf(r.payload) : r.message).toBe(200);
  })();
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`legitimate client not served within ${timeoutMs} ms`)), timeoutMs)))]);
  } finally {
    clearTimeout(timer);
    c?.close();
  }
}

/** A legitimate client that retries refused/reset connections (as the SDK's reconnect does) until its deadline. */
async function legitimateWithRetry(port: number, timeoutMs: number): Promise<void> {
  const started = Date.now();
  let delay = 50;
  for (;;) {
    const left = timeoutMs - (Date.now() - started);
    if (left <= 0) throw new Error(`legitimate client not served within ${timeoutMs} ms`);
    try {
      await legitimateRequest(port, left);
      return;
    } catch {
      await sleep(delay);
      delay = Math.min(delay * 2, 500);
    }
  }
}

/** Opens `n` TCP connections (in batches, to stay inside the listen backlog) that write `preamble` and then nothing. */
async function halfOpen(port: number, n: number, preamble: (i: number) => Uint8Array): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  const BATCH = 250;
  for (let i = 0; i < n; i += BATCH) {
    const batch = Array.from({ length: Math.min(BATCH, n - i) }, (_, j) =>
      new Promise<void>((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port });
        s.on('error', () => {});
        sockets.push(s);
        s.once('connect', () => {
          const p = preamble(i + j);
          if (p.length > 0) s.write(p);
          resolve();
        });
        s.once('close', () => resolve());
      }),
    );
    await Promise.all(batch);
  }
  return sockets;
}

const stalled = (i: number): Uint8Array => (i % 3 === 0 ? new Uint8Array(0) : new Uint8Array(i % 3 === 1 ? 1 : 31)); // nothing, 1 byte, or 31 of hs1's 32

describe('a client vanishes mid-frame', () => {
  it('frees the session and its in-flight app request at once, and other sessions are unaffected', async () => {
    // One session thread: the test reads the main thread's forwarder (test/runtime/session-workers.test.ts
    // covers sessions on worker threads).
    const s = await startAgentStack({ appPort: app.port, limits: { workers: 1 } });
    try {
      const other = await connectClient(s.port);
      const c = await connectClient(s.port);
      c.send({ type: 'Data', id: 1, payload: httpRequest('GET', '/slow?ms=5000') });
      const fwd = s.runtime.forwarder as HttpForwarder;
      await waitUntil(() => fwd.connectionCount >= 1, 5_000, 'the request to be in flight');
      // Half of a frame (the length says 200 bytes; 60 arrive), then the client is gone.
      const frame = c.seal({ type: 'Data', id: 2, payload: httpRequest('POST', '/echo', 'x'.repeat(100)) });
      c.pipe.write(frame.subarray(0, 64));
      await sleep(50);
      c.close();
      await waitUntil(() => s.sessions.length === 1, 5_000, 'the session to close');
      expect(['transport-error', 'client-closed']).toContain(s.sessions[0]!.reason);
      await waitUntil(() => fwd.connectionCount === 0, 5_000, 'the in-flight app request to be released');
      expect(s.runtime.sessionCount()).toBe(1);

      other.send({ type: 'Data', id: 9, payload: httpRequest('GET', '/') });
      const r = await reply(other, 9);
      expect(r.type === 'Data' ? statusOf(r.payload) : r.message).toBe(200);
      other.close();
    } finally {
      await s.close();
    }
  }, 30_000);

  it('closes a client that stalls mid-frame (half a frame, then silence) after the idle timeout', async () => {
    const s = await startAgentStack({ appPort: app.port, limits: { idle_timeout_ms: 1000 } });
    try {
      const c = await connectClient(s.port);
      const frame = c.seal({ type: 'Data', id: 1, payload: httpRequest('GET', '/') });
      c.pipe.write(frame.subarray(0, frame.length - 5));
      await waitUntil(() => s.sessions.length === 1, 5_000, 'the stalled session to close');
      expect(s.sessions[0]!.reason).toBe('idle');
      await waitUntil(() => c.isClosed, 2_000, 'the client socket to be closed');
    } finally {
      await s.close();
    }
  }, 30_000);
});

describe('5,000 connections that never finish the handshake', () => {
  // Each connection costs two fds in this process (client and agent side): 10,000 of the runner's limit
  // (ulimit -n is 20,000 here). Opening them takes seconds on a loaded 2-core machine, so the legitimate
  // clients run WHILE the flood is being opened, and again once it is complete.
  const N = 5_000;
  const LEGIT_TIMEOUT_MS = 10_000;

  /** Runs legitimate clients one after another until `done` resolves (each must be served by its deadline); returns how many were. */
  async function legitimateDuring(port: number, done: Promise<unknown>, retry: boolean): Promise<number> {
    let finished = false;
    void done.then(() => (finished = true));
    let served = 0;
    while (!finished) {
      await (retry ? legitimateWithRetry(port, LEGIT_TIMEOUT_MS) : legitimateRequest(port, LEGIT_TIMEOUT_MS));
      served++;
      await sleep(100);
    }
    return served;
  }

  it('with room for them (max_sessions 6000): legitimate clients are served meanwhile, and the stalled sessions hold nothing else', async () => {
    const s = await startAgentStack({ appPort: app.port, limits: { max_sessions: 6_000, handshake_timeout_ms: 60_000 } });
    let sockets: net.Socket[] = [];
    try {
      const flood = halfOpen(s.port, N, stalled).then((x) => (sockets = x));
      const during = await legitimateDuring(s.port, flood, false);
      await flood;
      await waitUntil(() => s.runtime.sessionCount() >= N, 10_000, `${N} pending sessions`);
      // All 5,000 are pending at once: legitimate clients still get in, each within its timeout.
      await Promise.all(Array.from({ length: 5 }, () => legitimateRequest(s.port, LEGIT_TIMEOUT_MS)));
      expect(during).toBeGreaterThan(0);
      expect(s.sessions.filter((x) => x.reason !== 'client-closed')).toEqual([]);
      for (const x of sockets) x.destroy();
      await waitUntil(() => s.runtime.sessionCount() === 0, 15_000, 'the stalled sessions to close');
    } finally {
      for (const x of sockets) x.destroy();
      await s.close();
    }
  }, 90_000);

  it('beyond max_sessions (1000): the extra connections are refused before any crypto, the handshake timeout reclaims the stalled slots, and a retrying legitimate client gets in within its timeout', async () => {
    const s = await startAgentStack({ appPort: app.port, limits: { max_sessions: 1_000, handshake_timeout_ms: 1_500 } });
    let sockets: net.Socket[] = [];
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, s.runtime.sessionCount())), 20);
    try {
      const flood = halfOpen(s.port, N, stalled).then((x) => (sockets = x));
      const during = await legitimateDuring(s.port, flood, true);
      await flood;
      await legitimateWithRetry(s.port, LEGIT_TIMEOUT_MS);
      expect(during).toBeGreaterThan(0);
      expect(peak).toBeLessThanOrEqual(1_000);
      await waitUntil(() => s.runtime.sessionCount() === 0, 10_000, 'the stalled sessions to time out');
      const stalledSessions = s.sessions.filter((x) => x.reason !== 'client-closed');
      expect(stalledSessions.length).toBeGreaterThan(0);
      expect(stalledSessions.every((x) => x.reason === 'handshake-timeout')).toBe(true);
    } finally {
      clearInterval(sampler);
      for (const x of sockets) x.destroy();
      await s.close();
    }
  }, 90_000);
});

describe('a session floods requests past its in-flight limit', () => {
  it('answers the overflow at once with Error, runs the admitted ones, answers every id exactly once, and keeps other sessions fast', async () => {
    const LIMIT = 8;
    const s = await startAgentStack({ appPort: app.port, limits: { max_in_flight: LIMIT } });
    try {
      const flood = await connectClient(s.port);
      const other = await connectClient(s.port);
      const TOTAL = 400;
      const answers = new Map<number, Reply[]>();
      const collecting = (async () => {
        let seen = 0;
        while (seen < TOTAL) {
          const { message } = await flood.next(15_000);
          if (message.type !== 'Data' && message.type !== 'Error') continue;
          answers.set(message.id, [...(answers.get(message.id) ?? []), message]);
          seen++;
        }
      })();
      for (let id = 1; id <= TOTAL; id++) flood.send({ type: 'Data', id, payload: httpRequest('GET', '/slow?ms=6000') });
      // The other session is not stuck behind the flood: it is answered before any admitted flood request
      // (each holds the app for 6 s) is, i.e. it waited for none of them.
      other.send({ type: 'Data', id: 1, payload: httpRequest('GET', '/') });
      const r = await reply(other, 1, 30_000);
      expect(r.type === 'Data' ? statusOf(r.payload) : r.message).toBe(200);
      expect([...answers.values()].filter((a) => a[0]!.type === 'Data').map((a) => a[0]!.id)).toEqual([]);

      await collecting;
      expect([...answers.values()].every((a) => a.length === 1)).toBe(true);
      expect(answers.size).toBe(TOTAL);
      const refused = [...answers.values()].filter((a) => a[0]!.type === 'Error' && /too many in-flight requests \(limit 8\)/.test((a[0] as { message: string }).message));
      const admittedData = [...answers.values()].filter((a) => a[0]!.type === 'Data');
      expect(refused.length).toBe(TOTAL - LIMIT);
      expect(admittedData.length).toBe(LIMIT);
      expect(admittedData.every((a) => statusOf((a[0] as { payload: Uint8Array }).payload) === 200)).toBe(true);
      expect(flood.isClosed).toBe(false);

      // Once the admitted work is done, the same session is served normally.
      await sleep(200);
      for (let id = 1001; id <= 1000 + LIMIT; id++) flood.send({ type: 'Data', id, payload: httpRequest('GET', '/') });
      for (let id = 1001; id <= 1000 + LIMIT; id++) {
        const x = await reply(flood, id, 10_000);
        expect(x.type === 'Data' ? utf8.decode(x.payload.subarray(0, 15)) : x.message).toBe('HTTP/1.1 200 OK');
      }
      flood.close();
      other.close();
    } finally {
      await s.close();
    }
  }, 60_000);
});

// [limits] workers: public sessions run on worker threads the listener hands connections to. The same
// behaviour with 1 (the main thread) and 2 workers: sessions attest and are served, the process-wide limits
// (sessions, per client) hold exactly across threads, a scrape counts every request and session, drain
// finishes what is in flight on every worker, transaction records and logs reach the main thread. The threads
// start on demand: none at boot, the first with the first session, the next when every started one holds one.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { configFromObject } from '../../src/config.ts';
import { utf8 } from '../../src/util/bytes.ts';
import { nativeAvailable } from '../../src/transport/native.ts';
import { encodeProxyV2 } from '../../src/transport/proxy-v2.ts';
import { httpRequest, startAgentStack, statusOf, waitUntil, type AgentStack } from '../faults/stack.ts';
import { closedWithin, connectClient, connectTcp, handshake, tcpPipe, type TestClient } from '../responder/helpers.ts';
import { promtoolCheck } from '../ops/promtool.ts';
import { sessionThreadBuiltins } from './thread-modules.ts';

const native = nativeAvailable();

let app: http.Server;
let appPort: number;
/** Requests the app holds until released (drain test). */
const held: (() => void)[] = [];

beforeAll(async () => {
  app = http.createServer((req, res) => {
    const answer = (): void => {
      res.setHeader('content-type', 'text/plain');
      res.end(`ok ${req.url}`);
    };
    if (req.url === '/slow') held.push(answer);
    else answer();
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as AddressInfo).port;
});

afterAll(async () => {
  app.closeAllConnections();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

let stack: AgentStack | undefined;
const clients: TestClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const h of held.splice(0)) h();
  await stack?.close();
  stack = undefined;
});

async function client(port: number, preamble?: Uint8Array): Promise<TestClient> {
  const c = preamble === undefined ? await connectClient(port) : await handshake(tcpPipe(await connectTcp(port)), { preamble });
  clients.push(c);
  return c;
}

let nextId = 1;
async function get(c: TestClient, path: string): Promise<number> {
  const id = nextId++;
  c.send({ type: 'Data', id, payload: httpRequest('GET', path) });
  const got = await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, 15_000);
  const m = got.at(-1)!.message;
  if (m.type !== 'Data') throw new Error(`reply ${m.type}`);
  return statusOf(m.payload);
}

async function scrape(s: AgentStack): Promise<string> {
  return (await fetch(`http://127.0.0.1:${s.runtime.opsPort!}/metrics`)).text();
}

function sample(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Each of `names` has exactly one series per thread, labelled `thread`, each value passing `ok`. */
function expectOneSeriesPerThread(lines: string[], names: string[], threads: string[], ok: (value: number) => boolean): void {
  for (const name of names) {
    const series = lines.filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
    expect(series.map((l) => l.slice(0, l.lastIndexOf(' '))).sort(), name).toEqual(threads.map((t) => `${name}{thread="${t}"}`).sort());
    for (const l of series) expect(ok(Number(l.slice(l.lastIndexOf(' ') + 1))), l).toBe(true);
  }
}

/** The session threads started so far, in order (the main thread logs each one's start). */
function startedThreads(s: AgentStack): unknown[] {
  return s.log.records().filter((r) => r.msg === 'session thread started').map((r) => r.worker);
}

/** The thread each session closed since log record `from` ran on, sorted. */
function servedBy(s: AgentStack, from = 0): unknown[] {
  return s.log.records().slice(from).filter((r) => r.msg === 'session closed').map((r) => r.worker).sort();
}

/** The `thread` labels a scrape shows (the event-loop lag has one series per thread). */
function threadLabels(text: string): string[] {
  return [...text.matchAll(/^nodejs_eventloop_lag_seconds\{thread="([^"]*)"\}/gm)].map((m) => m[1]!).sort();
}

/** A connection the agent closes before answering hs1 (refused at admission). */
async function refused(port: number, preamble?: Uint8Array): Promise<void> {
  const sock = await connectTcp(port);
  const pipe = tcpPipe(sock);
  const gone = new Promise<void>((resolve) => pipe.onClose(resolve));
  handshake(pipe, preamble === undefined ? {} : { preamble }).catch(() => {});
  await gone;
}

describe.each(native ? [1, 2] : [1])('[limits] workers = %i', (workers) => {
  /**
   * Two sessions, left open, after which (with 2 workers) both threads have started: the second starts when a
   * session arrives while the first thread holds one. Both are on thread 1 (the second went there while thread 2
   * started), so the next sessions go to thread 2 first.
   */
  async function onBothThreads(s: AgentStack): Promise<TestClient[]> {
    const two = [await client(s.port), await client(s.port)];
    if (workers > 1) await waitUntil(() => startedThreads(s).length === 2, 15_000, 'the second session thread');
    return two;
  }

  /** An agent's exposition (promtool-clean) once every thread started, and the labels it must carry: main, session-1…N. */
  async function scrapeEveryThread(): Promise<{ threads: string[]; lines: string[] }> {
    stack = await startAgentStack({ appPort, limits: { workers } });
    const threads = ['main', ...(workers > 1 ? Array.from({ length: workers }, (_, i) => `session-${i + 1}`) : [])];
    if (workers > 1) {
      // None at boot: the threads start with the sessions that need them.
      expect(threadLabels(await scrape(stack))).toEqual(['main']);
      await onBothThreads(stack);
    }
    const text = await scrape(stack);
    expect(promtoolCheck(text)).toEqual({ output: '', status: 0 });
    return { threads, lines: text.split('\n') };
  }

  it('serves sessions (attestation, Data) and records each request and session on the main thread', async () => {
    stack = await startAgentStack({ appPort, limits: { workers } });
    const s = stack;
    const cs = [...(await onBothThreads(s)), ...(await Promise.all(Array.from({ length: 4 }, () => client(s.port))))];
    for (const c of cs) {
      c.send({ type: 'RequestAttestation' });
      const m = (await c.next()).message;
      expect(m.type).toBe('Attestation');
      if (m.type !== 'Attestation') continue;
      const doc = parseAttestationDocument(m.data).document;
      // Bound to this session's handshake, made by the main thread's NSM, with the process's control nonce.
      expect(doc.nonce).toEqual(c.handshakeHash);
      expect(doc.pcrs.get(0)).toEqual(s.sim.pcrs[0]);
      expect(doc.userData).toEqual(m.control_nonce);
      expect(await get(c, '/hello')).toBe(200);
    }
    // A scrape right away counts every request: the workers' figures are brought in before it renders.
    const text = await scrape(s);
    expect(sample(text, 'enclave_agent_requests_total', 'mode="http",status_class="2xx"')).toBe(6);
    await waitUntil(() => s.trx.records.length >= 6, 5_000, 'six transaction records');
    expect(s.trx.records.filter((r) => r.path === '/hello' && r.status === 200)).toHaveLength(6);
    for (const c of cs) c.close();
    await waitUntil(() => s.sessions.length === 6, 5_000, 'six session summaries');
    expect(sample(await scrape(s), 'enclave_agent_sessions_total', 'channel="public",outcome="client-closed"')).toBe(6);
    // A session's slot comes back when its socket is closed, which after the client's FIN may be a turn after its
    // summary (the lingering close).
    await waitUntil(() => s.runtime.sessionCount() === 0, 5_000, 'every session slot released');
    if (workers > 1) {
      // Both workers served sessions: their log lines carry the worker's number.
      const served = new Set(servedBy(s));
      expect(served).toEqual(new Set([1, 2]));
    }
  }, 60_000);

  it('max_sessions holds across threads: one more is refused, a freed slot is taken again', async () => {
    stack = await startAgentStack({ appPort, limits: { workers, max_sessions: 4 } });
    const s = stack;
    const cs = await Promise.all(Array.from({ length: 4 }, () => client(s.port)));
    for (const c of cs) expect(await get(c, '/a')).toBe(200);
    await refused(s.port);
    expect(s.runtime.sessionCount()).toBe(4);
    cs[0]!.close();
    await waitUntil(() => s.runtime.sessionCount() === 3, 5_000, 'a slot to free');
    const again = await client(s.port);
    expect(await get(again, '/b')).toBe(200);
    expect(sample(await scrape(s), 'enclave_agent_handshakes_total', 'result="refused"')).toBeGreaterThanOrEqual(1);
  }, 60_000);

  it('max_sessions_per_client holds across threads for one PROXY v2 source', async () => {
    stack = await startAgentStack({ appPort, limits: { workers, max_sessions_per_client: 3 }, extra: { accept_proxy_protocol: true } });
    const s = stack;
    const from = (address: string): Uint8Array => encodeProxyV2({ source: { address, port: 4000 }, destination: { address: '10.0.0.1', port: 443 } });
    const cs = [];
    for (let i = 0; i < 3; i++) cs.push(await client(s.port, from('203.0.113.9')));
    for (const c of cs) expect(await get(c, '/c')).toBe(200);
    await refused(s.port, from('203.0.113.9'));
    const other = await client(s.port, from('203.0.113.10'));
    expect(await get(other, '/d')).toBe(200);
    cs[0]!.close();
    await waitUntil(() => s.runtime.sessionCount() === 3, 5_000, 'the first client to be gone');
    const back = await client(s.port, from('203.0.113.9'));
    expect(await get(back, '/e')).toBe(200);
  }, 60_000);

  it('max_buffered_bodies_bytes holds across threads: a JSON body held on one session leaves no room on another', async () => {
    // Failed before: the key did not exist, and each thread's forwarder had a 256 MiB budget of its own.
    stack = await startAgentStack({ appPort, limits: { workers, max_buffered_body_bytes: 4096, max_buffered_bodies_bytes: 5000 } });
    const s = stack;
    const json = (n: number): string => `{"v":"${'x'.repeat(n - 8)}"}`;
    // Both threads started, then idle again: A goes to thread 1, B to thread 2.
    for (const c of await onBothThreads(s)) c.close();
    await waitUntil(() => s.sessions.length === 2 && s.runtime.sessionCount() === 0, 5_000, 'the first two sessions to end');
    s.sessions.splice(0);
    const logged = s.log.records().length;
    const head = (n: number): string => `POST /json HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nContent-Length: ${n}\r\n\r\n`;
    // Session A: 3,000 of a 4,000-byte JSON body, held by the decrypt stage (the rest never comes).
    const a = await client(s.port);
    a.send({ type: 'OpenStream', id: 1, payload: utf8.encode(head(4000) + json(4000).slice(0, 3000)) });
    await waitUntil(() => s.runtime.sessionCount() === 1, 5_000, 'session A');
    await new Promise((r) => setTimeout(r, 300));
    // Session B (with 2 workers, on the other thread): 3,000 more would pass 5,000 process-wide.
    const b = await client(s.port);
    b.send({ type: 'OpenStream', id: 1, payload: utf8.encode(head(3000) + json(3000)) });
    const got = await b.until((m) => m.type === 'StreamData' && m.id === 1 && utf8.decode(m.payload).includes('\r\n\r\n'), 10_000);
    const answer = got.map(({ message: m }) => (m.type === 'StreamData' && m.id === 1 ? utf8.decode(m.payload) : '')).join('');
    expect(answer).toMatch(/^HTTP\/1\.1 503 /);
    expect(answer).toContain('HTTP_DECRYPT_BUSY');
    a.close();
    b.close();
    await waitUntil(() => s.sessions.length === 2, 5_000, 'two session summaries');
    // With 2 workers the sessions ran on different threads: the budget is the process's, not a thread's.
    if (workers > 1) expect(new Set(servedBy(s, logged))).toEqual(new Set([1, 2]));
  }, 60_000);

  it('drain finishes the requests in flight on every worker, refuses new connections, then closes', async () => {
    stack = await startAgentStack({ appPort, limits: { workers } });
    const s = stack;
    const cs = [...(await onBothThreads(s)), ...(await Promise.all(Array.from({ length: 2 }, () => client(s.port))))];
    const replies = cs.map((c) => get(c, '/slow'));
    await waitUntil(() => held.length === 4, 10_000, 'four requests at the app');
    const drained = s.runtime.drain(10_000);
    await refused(s.port).catch(() => {});
    for (const h of held.splice(0)) h();
    expect(await Promise.all(replies)).toEqual([200, 200, 200, 200]);
    await drained;
    await Promise.all(cs.map((c) => closedWithin(c, 5_000)));
    await waitUntil(() => s.sessions.length === 4, 5_000, 'four session summaries');
    expect(s.sessions.every((x) => x.reason === 'drain')).toBe(true);
  }, 60_000);

  it('shows every thread\'s V8 heap under a `thread` label (main, session-N), promtool-clean', async () => {
    // Each worker's heap is its own: the main thread's figures alone would miss most of the process's memory.
    const { threads, lines } = await scrapeEveryThread();
    // Before: one unlabelled series each (the main thread's).
    expectOneSeriesPerThread(lines, ['nodejs_heap_size_total_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_external_memory_bytes'], threads, (v) => v > 0);
    for (const name of ['nodejs_heap_space_size_total_bytes', 'nodejs_heap_space_size_used_bytes', 'nodejs_heap_space_size_available_bytes']) {
      const seen = new Set(lines.filter((l) => l.startsWith(`${name}{`)).map((l) => /thread="([^"]*)"/.exec(l)?.[1]));
      expect([...seen].sort(), name).toEqual(threads.slice().sort());
      for (const t of threads) expect(lines.some((l) => l.startsWith(`${name}{`) && l.includes(`thread="${t}"`) && l.includes('space="old"')), `${name} ${t} old`).toBe(true);
    }
  }, 60_000);

  it('shows every thread\'s event-loop lag under a `thread` label (main, session-N), promtool-clean', async () => {
    // Each worker's loop is its own: the main thread's figures alone would not show a stalled session thread.
    const { threads, lines } = await scrapeEveryThread();
    // Before: one unlabelled series each (the main thread's).
    expectOneSeriesPerThread(lines, ['nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_max_seconds', 'nodejs_eventloop_lag_p99_seconds'], threads, (v) => v >= 0);
    expect(lines.some((l) => l.startsWith('nodejs_gc_duration_seconds_count{') && l.includes('thread="main"'))).toBe(true);
  }, 60_000);
});

describe.runIf(native)('[limits] workers = 2: session threads start on demand', () => {
  /** A fresh agent with two session threads allowed, none started yet. */
  async function atRest(): Promise<AgentStack> {
    stack = await startAgentStack({ appPort, limits: { workers: 2 } });
    // Before: both threads started at boot.
    expect(startedThreads(stack)).toEqual([]);
    return stack;
  }

  it('starts none at boot, the first with the first session, the second with a session while the first holds one', async () => {
    const s = await atRest();
    expect(threadLabels(await scrape(s))).toEqual(['main']);
    const a = await client(s.port);
    expect(await get(a, '/first')).toBe(200);
    expect(startedThreads(s)).toEqual([1]);
    expect(threadLabels(await scrape(s))).toEqual(['main', 'session-1']);
    // A second session while the first is open: thread 1 serves it while thread 2 starts (it waits for nothing).
    const b = await client(s.port);
    expect(await get(b, '/second')).toBe(200);
    await waitUntil(() => startedThreads(s).length === 2, 15_000, 'the second session thread');
    expect(startedThreads(s)).toEqual([1, 2]);
    expect(threadLabels(await scrape(s))).toEqual(['main', 'session-1', 'session-2']);
    // The next goes to the idle thread 2; no third thread exists to start.
    const c = await client(s.port);
    expect(await get(c, '/third')).toBe(200);
    for (const x of [a, b, c]) x.close();
    await waitUntil(() => s.sessions.length === 3, 5_000, 'three session summaries');
    expect(servedBy(s)).toEqual([1, 1, 2]);
    expect(startedThreads(s)).toEqual([1, 2]);
  }, 60_000);

  it('starts both threads on a burst before any is ready and spreads it over them (clients reconnecting after a restart)', async () => {
    const s = await atRest();
    // Four at once, all accepted before the first thread is ready (a thread takes ~0.1-0.2 s to start).
    const burst = await Promise.all([0, 1, 2, 3].map(() => client(s.port)));
    for (const [i, c] of burst.entries()) expect(await get(c, `/burst-${i}`)).toBe(200);
    for (const c of burst) c.close();
    await waitUntil(() => s.sessions.length === 4, 5_000, 'four session summaries');
    // Before: all four on thread 1 (it was the only one starting), thread 2 started by a later connection only.
    expect(startedThreads(s).sort()).toEqual([1, 2]);
    expect(servedBy(s)).toEqual([1, 1, 2, 2]);
  }, 60_000);

  it('a thread without TLS ingress has loaded neither node:tls nor node:https after serving a session', async () => {
    const s = await atRest();
    const a = await client(s.port);
    expect(await get(a, '/plain')).toBe(200);
    const loaded = await sessionThreadBuiltins();
    expect([...loaded.keys()]).toEqual([1]);
    // What its sessions use is there (HTTP mode: the in-process http.Server)...
    expect(loaded.get(1)).toContain('http');
    // ...but not TLS: before, worker-tls.ts and prom-client's index (its Pushgateway) loaded it in every thread.
    expect(loaded.get(1)!.filter((m) => /tls|^https$/.test(m))).toEqual([]);
  }, 60_000);
});

describe('[limits] workers: configuration', () => {
  it('accepts 1..64, refuses 0 and 65 naming the key, and leaves it unset by default', () => {
    expect(configFromObject({}).limits.workers).toBeNull();
    expect(configFromObject({ limits: { workers: 3 } }).limits.workers).toBe(3);
    expect(() => configFromObject({ limits: { workers: 0 } })).toThrow(/limits\.workers/);
    expect(() => configFromObject({ limits: { workers: 65 } })).toThrow(/limits\.workers/);
  });

  it('max_buffered_bodies_bytes: 256 MiB by default, at least one body (max_buffered_body_bytes)', () => {
    expect(configFromObject({}).limits.max_buffered_bodies_bytes).toBe(256 * 1024 * 1024);
    expect(configFromObject({ limits: { max_buffered_bodies_bytes: 5000, max_buffered_body_bytes: 4096 } }).limits.max_buffered_bodies_bytes).toBe(5000);
    expect(() => configFromObject({ limits: { max_buffered_bodies_bytes: 4095, max_buffered_body_bytes: 4096 } })).toThrow(/limits\.max_buffered_bodies_bytes: expected at least limits\.max_buffered_body_bytes/);
  });

  it.runIf(native)('refuses workers > 1 with a replacement decrypt stage (it runs on the main thread only)', async () => {
    await expect(startAgentStack({ appPort, limits: { workers: 2 }, decrypt: () => null })).rejects.toMatchObject({ code: 'RUNTIME_BAD_OPTIONS' });
  });

  it.skipIf(native)('refuses workers > 1 where the native addon is not built', async () => {
    await expect(startAgentStack({ appPort, limits: { workers: 2 } })).rejects.toMatchObject({ code: 'RUNTIME_BAD_OPTIONS' });
  });
});

// metrics-proxy: what a worker's MetricsRecorder records reaches the main registry exactly (the same
// series AgentMetrics would show had it recorded the calls itself), a scrape after requestFlush is exact,
// and session summaries reach the main thread's hook in order.
import { MessageChannel } from 'node:worker_threads';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { AgentMetrics, type ExchangeFacts } from '../../../src/ops/metrics.ts';
import type { SessionSummary } from '../../../src/responder/session.ts';
import { MetricsRecorder, serveMetrics, type MetricsServer } from '../../../src/runtime/worker-services/metrics-proxy.ts';
import { family, samples, until } from './helpers.ts';
import { promtoolCheck } from '../../ops/promtool.ts';

const closers: (() => void)[] = [];
afterAll(() => {
  for (const c of closers) c();
});

function over(metrics: AgentMetrics, onSession?: (s: SessionSummary) => void, intervalMs = 60_000): { recorder: MetricsRecorder; server: MetricsServer } {
  const { port1, port2 } = new MessageChannel();
  const server = serveMetrics(port1, metrics, onSession);
  const recorder = new MetricsRecorder(port2, { intervalMs });
  closers.push(() => recorder.close(), () => server.close());
  return { recorder, server };
}

const stats = (framesIn: number): SessionSummary['stats'] => ({ framesIn, framesOut: 0, data: 0, streams: 0, attestations: 0, controls: 0, refused: 0 });
const summary = (id: string, reason: SessionSummary['reason'], framesIn = 1, channel: SessionSummary['channel'] = 'public'): SessionSummary => ({ id, remote: 'tcp:127.0.0.1:1', channel, reason, durationMs: 5, stats: stats(framesIn) });

/** An exchange that took `ms` (its start is set back by that much at the call). */
const exchange = (ms: number, status: number, extra: Partial<ExchangeFacts> = {}): ExchangeFacts => ({ started: performance.now() - ms, sentStatus: status, bytesIn: 100, bytesOut: 2_000, decryptedFields: 0, errorCode: undefined, ...extra });

const FAMILIES = ['enclave_agent_requests_total', 'enclave_agent_requests_abandoned_total', 'enclave_agent_http_body_bytes_total', 'enclave_agent_ev_decrypt_total', 'enclave_agent_sessions_total', 'enclave_agent_handshakes_total'];

describe('MetricsRecorder / serveMetrics', () => {
  it('gives the same series as AgentMetrics recording the same calls itself', async () => {
    const direct = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const main = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const { recorder, server } = over(main);
    // Each exchange is handed to both at once, on a fixed clock: the same durations (mid-bucket as well).
    const now = vi.spyOn(performance, 'now').mockReturnValue(5_000_000);
    const exchanges = [
      () => exchange(7, 200, { decryptedFields: 3 }),
      () => exchange(15, 204, { decryptedFields: () => 2 }),
      () => exchange(35, 422, { errorCode: 'HTTP_DECRYPT_FAILED' }),
      () => exchange(35, 413, { errorCode: 'HTTP_TOO_MANY_ENCRYPTED_FIELDS' }),
      () => exchange(120_000, 0),
      () => exchange(170, 101),
      () => exchange(1_700, 503, { errorCode: 'HTTP_UPSTREAM_TIMEOUT' }),
      // The summary record of abandoned requests: 31, one of them answered 400 while it waited.
      () => exchange(3, 0, { abandoned: { requests: 31, outcomes: [{ status: 0, error: 'CLIENT_GONE', requests: 30 }, { status: 400, error: 'HTTP_BAD_REQUEST', requests: 1 }] } }),
    ];
    for (const make of exchanges) {
      const ex = make();
      direct.observeExchange(ex);
      recorder.observeExchange(ex);
    }
    now.mockRestore();
    for (const s of [summary('a', 'client-closed'), summary('b', 'handshake-timeout', 0), summary('c', 'handshake-failed', 0), summary('d', 'client-closed', 0), summary('e', 'idle', 0, 'control')]) {
      direct.sessionClosed(s);
      recorder.sessionClosed(s);
    }
    await server.requestFlush();
    const a = await direct.metrics();
    const b = await main.metrics();
    for (const f of FAMILIES) {
      expect(Object.keys(family(a, f)).length, f).toBeGreaterThan(0);
      expect(family(b, f), f).toEqual(family(a, f));
    }
    // Durations: the same buckets, count and sum (up to floating-point addition order).
    const da = family(a, 'enclave_agent_request_duration_seconds');
    const db = family(b, 'enclave_agent_request_duration_seconds');
    const sum = 'enclave_agent_request_duration_seconds_sum';
    expect({ ...db, [sum]: 0 }).toEqual({ ...da, [sum]: 0 });
    expect(db[sum]).toBeCloseTo(da[sum]!, 6);
    // The abandoned requests have no duration: the 7 that ran.
    expect(db['enclave_agent_request_duration_seconds_count']).toBe(7);
    // The summary record stands for 31 requests; with the 120 s exchange, 31 without an answer, and one 400.
    expect(family(b, 'enclave_agent_requests_total')['enclave_agent_requests_total{mode="http",status_class="none"}']).toBe(31);
    expect(family(b, 'enclave_agent_requests_total')['enclave_agent_requests_total{mode="http",status_class="4xx"}']).toBe(3);
    expect(family(b, 'enclave_agent_requests_abandoned_total')['enclave_agent_requests_abandoned_total']).toBe(31);
  });

  it('shows exactly N exchanges and M sessions after requestFlush, and nothing before', async () => {
    const main = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const { recorder, server } = over(main);
    const N = 37;
    const M = 11;
    for (let i = 0; i < N; i++) recorder.observeExchange(exchange(1, 200, { decryptedFields: 1 }));
    for (let i = 0; i < M; i++) recorder.sessionClosed(summary(`s${i}`, 'client-closed'));
    let s = samples(await main.metrics());
    expect(s.get('enclave_agent_requests_total{mode="http",status_class="2xx"}')).toBe(0);
    await server.requestFlush();
    s = samples(await main.metrics());
    expect(s.get('enclave_agent_requests_total{mode="http",status_class="2xx"}')).toBe(N);
    expect(s.get('enclave_agent_http_body_bytes_total{direction="in"}')).toBe(N * 100);
    expect(s.get('enclave_agent_http_body_bytes_total{direction="out"}')).toBe(N * 2_000);
    expect(s.get('enclave_agent_ev_decrypt_total{result="ok"}')).toBe(N);
    expect(s.get('enclave_agent_request_duration_seconds_count')).toBe(N);
    expect(s.get('enclave_agent_sessions_total{channel="public",outcome="client-closed"}')).toBe(M);
    expect(s.get('enclave_agent_handshakes_total{result="ok"}')).toBe(M);
    // A second flush with nothing new changes nothing (the delta was cleared).
    await server.requestFlush();
    expect(samples(await main.metrics()).get('enclave_agent_requests_total{mode="http",status_class="2xx"}')).toBe(N);
  });

  it('counts raw mode’s requests and streams, and shows no http series in raw mode', async () => {
    const main = new AgentMetrics({ mode: 'raw', version: 't', processMetrics: false });
    const { recorder, server } = over(main);
    recorder.rawRequest('data');
    recorder.rawRequest('data');
    recorder.rawRequest('stream');
    await server.requestFlush();
    expect(family(await main.metrics(), 'enclave_agent_requests_total')).toEqual({
      'enclave_agent_requests_total{mode="raw",status_class="none"}': 2,
      'enclave_agent_requests_total{mode="raw-stream",status_class="none"}': 1,
    });
  });

  it('hands the session summaries to the main thread’s hook in the order the sessions ended', async () => {
    const seen: SessionSummary[] = [];
    const main = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const { recorder, server } = over(main, (s) => seen.push(s));
    const sent = Array.from({ length: 25 }, (_, i) => summary(`s${i}`, i % 3 === 0 ? 'idle' : 'client-closed'));
    for (const s of sent.slice(0, 10)) recorder.sessionClosed(s);
    await server.requestFlush();
    for (const s of sent.slice(10)) recorder.sessionClosed(s);
    recorder.flushNow();
    await until(() => seen.length === 25);
    expect(seen).toEqual(sent);
  });

  it('hands a summary over at the end of the turn its session ended, not at the next interval', async () => {
    const seen: SessionSummary[] = [];
    const main = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const { recorder } = over(main, (s) => seen.push(s)); // interval 60 s
    recorder.sessionClosed(summary('s1', 'client-closed'));
    recorder.sessionClosed(summary('s2', 'idle'));
    await until(() => seen.length === 2);
    expect(seen.map((s) => s.id)).toEqual(['s1', 's2']);
  });

  it('posts on its own every interval', async () => {
    const main = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const { recorder } = over(main, undefined, 10);
    recorder.observeExchange(exchange(1, 500));
    const key = 'enclave_agent_requests_total{mode="http",status_class="5xx"}';
    await until(async () => samples(await main.metrics()).get(key) === 1);
  });

  it('resolves requestFlush when the worker does not answer in time, applies the late answer, and resolves at once when the port closes', async () => {
    const main = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const { port1, port2 } = new MessageChannel();
    const server = serveMetrics(port1, main);
    closers.push(() => server.close());
    const asked: unknown[] = [];
    port2.on('message', (m: unknown) => asked.push(m));
    await server.requestFlush(20); // nobody answers
    expect(asked).toEqual([{ k: 'note', m: 'flush', v: 1 }]);
    // The worker's answer, late: still applied (the worker cleared what it sent).
    const scratch = new MessageChannel();
    const r = new MetricsRecorder(scratch.port1);
    r.observeExchange(exchange(1, 302));
    const batch = r.flush();
    r.close();
    port2.postMessage({ k: 'note', m: 'batch', v: { ...batch, ack: 1 } });
    const key = 'enclave_agent_requests_total{mode="http",status_class="3xx"}';
    await until(async () => samples(await main.metrics()).get(key) === 1);
    const pending = server.requestFlush(600_000);
    port2.close();
    await pending; // the port closed: no minutes-long wait
    await server.requestFlush(600_000);
  });

  it("shows a worker's heap under its `thread` label beside the main thread's, until its port closes; bad figures are ignored", async () => {
    const main = new AgentMetrics({ mode: 'http', version: 't' });
    const { port1, port2 } = new MessageChannel();
    const server = serveMetrics(port1, main, undefined, 'session-3');
    const recorder = new MetricsRecorder(port2, { intervalMs: 60_000 });
    closers.push(() => recorder.close(), () => server.close());
    const threads = (text: string, name: string): string[] => Object.keys(family(text, name)).sort();
    // Before any flush: the main thread's figures only, labelled.
    expect(threads(await main.metrics(), 'nodejs_heap_size_used_bytes')).toEqual(['nodejs_heap_size_used_bytes{thread="main"}']);
    await server.requestFlush();
    const text = await main.metrics();
    for (const name of ['nodejs_heap_size_total_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_external_memory_bytes']) {
      expect(threads(text, name), name).toEqual([`${name}{thread="main"}`, `${name}{thread="session-3"}`]);
    }
    const used = family(text, 'nodejs_heap_space_size_used_bytes');
    expect(used['nodejs_heap_space_size_used_bytes{thread="session-3",space="old"}']).toBeGreaterThan(0);
    expect(used['nodejs_heap_space_size_used_bytes{thread="main",space="old"}']).toBeGreaterThan(0);
    expect(promtoolCheck(text)).toEqual({ output: '', status: 0 });
    // Figures that are no byte counts, or space names that are no V8 space: ignored, the last good ones stay.
    const good = family(text, 'nodejs_heap_size_used_bytes')['nodejs_heap_size_used_bytes{thread="session-3"}'];
    const heap = { total: 1, used: 1, external: 1, spaces: [] };
    const bad = [
      { ...heap, used: -1 },
      { ...heap, total: Number.NaN },
      { ...heap, spaces: [{ space: 'old"} x{', total: 1, used: 1, available: 1 }] },
      { ...heap, spaces: Array.from({ length: 100 }, (_, i) => ({ space: `s${i}`, total: 1, used: 1, available: 1 })) },
      'heap',
    ];
    const before = server.ignored;
    // Sent as the worker would: on its metrics port (the recorder's end).
    for (const h of bad) port2.postMessage({ k: 'note', m: 'batch', v: { delta: null, summaries: [], heap: h } });
    await until(() => server.ignored === before + bad.length);
    expect(family(await main.metrics(), 'nodejs_heap_size_used_bytes')['nodejs_heap_size_used_bytes{thread="session-3"}']).toBe(good);
    // The worker is gone: its series go with it.
    recorder.close();
    server.close();
    await until(async () => threads(await main.metrics(), 'nodejs_heap_size_used_bytes').length === 1);
    expect(threads(await main.metrics(), 'nodejs_heap_space_size_total_bytes').every((k) => k.includes('thread="main"'))).toBe(true);
  });

  it('ignores and counts malformed batches, applying nothing of them', async () => {
    const main = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const seen: SessionSummary[] = [];
    const { port1, port2 } = new MessageChannel();
    const server = serveMetrics(port1, main, (s) => seen.push(s));
    closers.push(() => server.close(), () => port2.close());
    const scratch = new MessageChannel();
    const r = new MetricsRecorder(scratch.port1);
    r.observeExchange(exchange(1, 200));
    r.sessionClosed(summary('x', 'client-closed'));
    const good = r.flush();
    r.close();
    const bad = [
      null,
      7,
      { delta: { ...good.delta, requests: [1, 2] }, summaries: [] },
      { delta: { ...good.delta, bytesIn: -5 }, summaries: [] },
      { delta: { ...good.delta, bytesOut: Number.NaN }, summaries: [] },
      { delta: { ...good.delta, sessions: [{ channel: 'public', outcome: 'Not A Label {}', n: 1 }] }, summaries: [] },
      { delta: { ...good.delta, sessions: [{ channel: 'other', outcome: 'idle', n: 1 }] }, summaries: [] },
      { delta: { ...good.delta, duration: { counts: [1], sum: 1 } }, summaries: [] },
      { summaries: [] },
    ];
    for (const v of bad) port2.postMessage({ k: 'note', m: 'batch', v });
    port2.postMessage({ k: 'note', m: 'batch', v: { delta: null, summaries: [42, { id: 'no channel' }, summary('ok', 'idle')] } });
    await until(() => server.ignored === bad.length && seen.length === 1);
    const text = await main.metrics();
    expect(family(text, 'enclave_agent_requests_total')).toEqual(Object.fromEntries(['none', '1xx', '2xx', '3xx', '4xx', '5xx'].map((c) => [`enclave_agent_requests_total{mode="http",status_class="${c}"}`, 0])));
    expect(family(text, 'enclave_agent_sessions_total')).toEqual({});
    expect(seen.map((s) => s.id)).toEqual(['ok']);
  });
});

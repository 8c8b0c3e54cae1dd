// /metrics and /health on the ops port of a runtime assembled as `run` and `start` assemble it: promtool
// accepts the real output, counters move by exactly what a test sends, /health follows the app and the drain.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { devKeySource, loadKeyring } from '../../src/crypto/keyring.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { httpRequest, startAgentStack, startAppProcess, statusOf, waitUntil, type AgentStack, type AppProcess } from '../faults/stack.ts';
import { connectClient, type TestClient } from '../responder/helpers.ts';
import { promtoolCheck } from './promtool.ts';

let app: AppProcess;
let stack: AgentStack;
let client: TestClient;
let ops: string;

beforeAll(async () => {
  app = await startAppProcess();
  stack = await startAgentStack({ appPort: app.port });
  ops = `http://127.0.0.1:${stack.runtime.opsPort!}`;
  client = await connectClient(stack.port);
}, 30_000);

afterAll(async () => {
  client?.close();
  await stack?.close();
  await app?.kill();
});

let nextId = 1;
async function data(payload: Uint8Array): Promise<number> {
  const id = nextId++;
  client.send({ type: 'Data', id, payload });
  const got = await client.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, 15_000);
  const m = got.at(-1)!.message as Extract<ServerMessage, { type: 'Data' | 'Error' }>;
  if (m.type === 'Error') throw new Error(`Error reply: ${m.message}`);
  return statusOf(utf8.decode(m.payload));
}

async function scrape(): Promise<string> {
  const res = await fetch(`${ops}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return res.text();
}

/** The value of one sample line (`name{labels} value`), 0 when absent. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

describe('GET /metrics', () => {
  it('passes `promtool check metrics` on the real output', async () => {
    await data(httpRequest('GET', '/'));
    const text = await scrape();
    expect(promtoolCheck(text)).toEqual({ output: '', status: 0 });
    // Node's process metrics are there (and the *_total gauges promtool rejects are not).
    // Event loop and GC by thread (ops/thread-loop.ts): with one thread, main's.
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds\{thread="main"\} /m);
    expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds\{thread="main"\} /m);
    expect(text).toMatch(/^process_resident_memory_bytes /m);
    expect(text).not.toMatch(/^nodejs_active_handles_total/m);
  });

  it('counts exactly the requests sent, by status class, with their body bytes and durations', async () => {
    const before = await scrape();
    const ok = 'enclave_agent_requests_total{mode="http",status_class="2xx"}';
    const notFound = 'enclave_agent_requests_total{mode="http",status_class="4xx"}';
    for (let i = 0; i < 7; i++) expect(await data(httpRequest('POST', '/echo', 'abcde', { 'content-type': 'text/plain' }))).toBe(200);
    // Answered by the agent itself (405 from its /.well-known/health stage): counted as well.
    for (let i = 0; i < 3; i++) expect(await data(httpRequest('POST', '/.well-known/health'))).toBe(405);
    const after = await scrape();
    expect(sample(after, ok) - sample(before, ok)).toBe(7);
    expect(sample(after, notFound) - sample(before, notFound)).toBe(3);
    const bytesIn = 'enclave_agent_http_body_bytes_total{direction="in"}';
    expect(sample(after, bytesIn) - sample(before, bytesIn)).toBe(35);
    const count = 'enclave_agent_request_duration_seconds_count';
    expect(sample(after, count) - sample(before, count)).toBe(10);
    expect(sample(after, 'enclave_agent_sessions_open{channel="public"}')).toBe(1);
  });

  it('counts ev: values decrypted and refused', async () => {
    const before = await scrape();
    const pub = stack.runtime.keyring.publicKeys();
    const body = JSON.stringify({ a: encryptValue('x', pub), b: encryptValue(2, pub) });
    expect(await data(httpRequest('POST', '/echo', body, { 'content-type': 'application/json' }))).toBe(200);
    // A well-formed value for another keyring: it does not decrypt here (422, nothing forwarded).
    const otherDir = mkdtempSync(path.join(os.tmpdir(), 'ea-ops-other-'));
    const other = await loadKeyring(devKeySource(otherDir));
    rmSync(otherDir, { recursive: true, force: true });
    const bad = JSON.stringify({ a: encryptValue('x', other.publicKeys()) });
    expect(await data(httpRequest('POST', '/echo', bad, { 'content-type': 'application/json' }))).toBe(422);
    const after = await scrape();
    const delta = (s: string): number => sample(after, s) - sample(before, s);
    expect(delta('enclave_agent_ev_decrypt_total{result="ok"}')).toBe(2);
    expect(delta('enclave_agent_ev_decrypt_total{result="failed"}')).toBe(1);
  });

  it('counts local API calls by route and status class; unknown paths are "other"', async () => {
    const before = await scrape();
    const api = `http://127.0.0.1:${stack.runtime.apiPort!}`;
    for (let i = 0; i < 2; i++) expect((await fetch(`${api}/encrypt`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"data":"x"}' })).status).toBe(200);
    expect((await fetch(`${api}/secret-path-123`)).status).toBe(404);
    const after = await scrape();
    const delta = (s: string): number => sample(after, s) - sample(before, s);
    expect(delta('enclave_agent_api_requests_total{route="/encrypt",status_class="2xx"}')).toBe(2);
    expect(delta('enclave_agent_api_requests_total{route="other",status_class="4xx"}')).toBe(1);
    expect(after).not.toContain('secret-path-123');
  });

  it('counts a finished session and its handshake', async () => {
    const before = await scrape();
    const ended = stack.sessions.length;
    const c2 = await connectClient(stack.port);
    c2.send({ type: 'Data', id: 1, payload: httpRequest('GET', '/') });
    await c2.until((m) => m.type === 'Data' && m.id === 1, 10_000);
    c2.close();
    await waitUntil(() => stack.sessions.length === ended + 1, 5_000, 'the second session to end');
    const after = await scrape();
    const delta = (s: string): number => sample(after, s) - sample(before, s);
    expect(delta('enclave_agent_sessions_total{channel="public",outcome="client-closed"}')).toBe(1);
    expect(delta('enclave_agent_handshakes_total{result="ok"}')).toBe(1);
  });
});

describe('GET /health', () => {
  it('200 while the app answers, 503 app-down when it is killed, 200 again when it is back', async () => {
    const up = await fetch(`${ops}/health`);
    expect(up.status).toBe(200);
    expect(await up.json()).toMatchObject({ status: 'ok', agent: { phase: 'ready' }, app: { status: 'up' } });

    await app.kill();
    const down = await fetch(`${ops}/health`);
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ status: 'unhealthy', reason: 'app-down', app: { status: 'down' } });
    expect(sample(await scrape(), 'enclave_agent_app_up')).toBe(0);

    app = await startAppProcess(app.port);
    const back = await fetch(`${ops}/health`);
    expect(back.status).toBe(200);
    expect(sample(await scrape(), 'enclave_agent_app_up')).toBe(1);
  });

  it('only GET/HEAD; other paths 404', async () => {
    expect((await fetch(`${ops}/health`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${ops}/nope`)).status).toBe(404);
  });
});

describe('raw mode', () => {
  it('counts each stream handed to the app under mode="raw-stream"', async () => {
    const rawApp = await startAppProcess(undefined, { raw: true });
    const raw = await startAgentStack({ appPort: rawApp.rawPort!, mode: 'raw' });
    const c = await connectClient(raw.port);
    try {
      for (let id = 1; id <= 3; id++) {
        c.send({ type: 'OpenStream', id, payload: utf8.encode(`ping ${id}`) });
        await c.until((m) => m.type === 'StreamData' && m.id === id, 10_000);
        c.send({ type: 'StreamClose', id, half: 'Both' });
      }
      const text = await (await fetch(`http://127.0.0.1:${raw.runtime.opsPort!}/metrics`)).text();
      expect(sample(text, 'enclave_agent_requests_total{mode="raw-stream",status_class="none"}')).toBe(3);
      expect(sample(text, 'enclave_agent_requests_total{mode="raw",status_class="none"}')).toBe(0);
      expect(text).not.toMatch(/^enclave_agent_requests_total\{mode="http"/m);
    } finally {
      c.close();
      await raw.close();
      await rawApp.kill();
    }
  }, 30_000);

  it('counts a stream reset because its app took none of its bytes (the stall watch), on session threads too', async () => {
    // An app that accepts and never reads: the stream's queue goes over its limit and holds the session.
    const held: net.Socket[] = [];
    const deaf = net.createServer((s) => (s.pause(), held.push(s)));
    await new Promise<void>((r) => deaf.listen(0, '127.0.0.1', r));
    const raw = await startAgentStack({ appPort: (deaf.address() as net.AddressInfo).port, mode: 'raw', limits: { write_stall_timeout_ms: 500, workers: 2 } });
    const c = await connectClient(raw.port);
    try {
      c.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) });
      const chunk = new Uint8Array(60_000);
      for (let i = 0; i < 400; i++) c.send({ type: 'StreamData', id: 1, payload: chunk });
      await c.until((m) => m.type === 'Error' && m.id === 1, 15_000);
      const metrics = async (): Promise<string> => (await fetch(`http://127.0.0.1:${raw.runtime.opsPort!}/metrics`)).text();
      let text = await metrics();
      for (let i = 0; i < 50 && sample(text, 'enclave_agent_stream_app_stalls_total') !== 1; i++) text = (await new Promise((r) => setTimeout(r, 100)), await metrics());
      expect(sample(text, 'enclave_agent_stream_app_stalls_total')).toBe(1);
      expect(promtoolCheck(text)).toEqual({ output: '', status: 0 });
    } finally {
      c.close();
      await raw.close();
      for (const s of held) s.destroy();
      await new Promise((r) => deaf.close(r));
    }
  }, 60_000);
});

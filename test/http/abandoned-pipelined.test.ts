// Pipelined requests the agent took in and never sent to the app, because the client went away while they
// waited their turn, still get their transaction-log record (ENCRYPTION.md §4: one per request, errors
// included): status 0 and CLIENT_GONE, as a request whose client left mid-exchange — on the http.Server path
// (a Noise stream, a keep-alive connection handed over) and on the keep-alive fast path (requests read ahead).
// On both, past the first MAX_ABANDONED_RECORDS abandoned together, one record with the count stands for the
// rest (abandoned-records.ts). The records carry no body and no credential.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type { ServerResponse } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHttpForwarder, type HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink, type MemoryLogSink } from '../../src/http/log-sink.ts';
import type { AttachedConnection } from '../../src/http/keep-alive-connection.ts';
import { MAX_ABANDONED_RECORDS } from '../../src/http/abandoned-records.ts';
import { SERVER_READ_SLICE_BYTES } from '../../src/http/forwarder.ts';
import { AgentMetrics } from '../../src/ops/metrics.ts';
import { promtoolCheck } from '../ops/promtool.ts';
import { attachFront, fakeContext, ResponseReader, silentLogger, startApp, tcpTo, type TestApp } from './helpers.ts';

/** Answers /first at once; holds every other request until the test ends (the client leaves meanwhile). */
let app: TestApp;
const heldAtApp: ServerResponse[] = [];
let arrived: string[] = [];

beforeAll(async () => {
  app = await startApp((req, res) => {
    arrived.push(req.url ?? '');
    req.resume();
    if (req.url === '/first') req.on('end', () => res.end('ok'));
    else heldAtApp.push(res);
  });
});
afterAll(async () => {
  await app.close();
});

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  for (const res of heldAtApp.splice(0)) res.destroy();
  arrived = [];
});

function forwarder(sink: MemoryLogSink): HttpForwarder {
  const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink, appStartupGraceMs: 0 });
  cleanups.push(() => fwd.close());
  return fwd;
}

const front = (fwd: HttpForwarder): Promise<number> => attachFront(fwd, cleanups);
const tcp = (port: number): Promise<net.Socket> => tcpTo(port, cleanups);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits (bounded) until `cond` holds; the assertions that follow say what was expected. */
async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await sleep(20);
}

const SECRET = 'Bearer s3cr3t-token';
const BODY = 'pan=card-number-in-body';

/** `n` pipelined requests, every third a POST with a body, all with a credential header. */
function batch(n: number): { raw: string; paths: string[] } {
  const paths: string[] = [];
  let raw = '';
  for (let i = 0; i < n; i++) {
    const path = `/p${i}?token=abc`;
    paths.push(`/p${i}?token=***`);
    raw +=
      i % 3 === 2
        ? `POST ${path} HTTP/1.1\r\nHost: a\r\nAuthorization: ${SECRET}\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`
        : `GET ${path} HTTP/1.1\r\nHost: a\r\nAuthorization: ${SECRET}\r\n\r\n`;
  }
  return { raw, paths };
}

/**
 * After the client left with `paths` sent (the first at the app, the rest waiting): one record per request,
 * each with status 0 and CLIENT_GONE, no body and no credential in any of them.
 */
async function expectOneRecordEach(fwd: HttpForwarder, sink: MemoryLogSink, paths: string[], before: string[] = []): Promise<void> {
  const all = [...before, ...paths];
  await until(() => sink.records.length >= all.length);
  // close() lets the last batch of records out; nothing more is written after it.
  await fwd.close();
  const records = sink.records;
  expect(records.map((r) => r.path).sort()).toEqual(all.slice().sort());
  for (const r of records.filter((x) => paths.includes(x.path as string))) {
    expect(r).toMatchObject({ kind: 'trx', status: 0, status_group: 'none', error: 'CLIENT_GONE', response_headers: {} });
    expect((r.request_headers as Record<string, string>).authorization).toBe('***');
    expect(r.txid).toMatch(/^[0-9a-f-]{36}$/);
  }
  const text = JSON.stringify(records);
  expect(text).not.toContain('s3cr3t');
  expect(text).not.toContain('card-number');
}

/**
 * After the client left with `paths` taken in (the first at the app, the rest never sent): the one at the app and
 * the first MAX_ABANDONED_RECORDS of the rest get a record each, then one record — the next request's — stands for
 * the rest, `abandoned_requests: summarised`. All status 0 and CLIENT_GONE, no body and no credential.
 */
async function expectBoundedRecords(fwd: HttpForwarder, sink: MemoryLogSink, paths: string[], summarised: number): Promise<void> {
  const kept = 1 + MAX_ABANDONED_RECORDS;
  await until(() => sink.records.length >= kept + 1);
  await fwd.close();
  const records = sink.records;
  expect(records).toHaveLength(kept + 1);
  expect(records.map((r) => r.path).sort()).toEqual(paths.slice(0, kept + 1).sort());
  const summary = records.find((r) => r.path === paths[kept]);
  expect(summary).toMatchObject({ kind: 'trx', status: 0, status_group: 'none', error: 'CLIENT_GONE', response_headers: {}, abandoned_requests: summarised });
  for (const r of records.filter((x) => x !== summary)) {
    expect(r).toMatchObject({ status: 0, error: 'CLIENT_GONE' });
    expect(r).not.toHaveProperty('abandoned_requests');
  }
  const text = JSON.stringify(records);
  expect(text).not.toContain('s3cr3t');
  expect(text).not.toContain('card-number');
}

describe('pipelined requests abandoned on the http.Server path', () => {
  it('a Noise stream closed with 40 requests in: 1 + MAX_ABANDONED_RECORDS records, then one for the other 31', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    d.on('error', () => {});
    // ~2.6 KB: within one read slice, so the server takes in all 40 (the first at the app, 39 waiting).
    const { raw, paths } = batch(40);
    expect(Buffer.byteLength(raw)).toBeLessThan(SERVER_READ_SLICE_BYTES);
    d.write(raw);
    await until(() => arrived.length >= 1);
    expect(arrived).toEqual([paths[0]!.replace('***', 'abc')]);
    d.destroy();
    // Before the bound: 40 records, one per request.
    await expectBoundedRecords(fwd, sink, paths, 40 - 1 - MAX_ABANDONED_RECORDS);
  });

  it('a Noise stream closed with 64 KiB of tiny pipelined requests: 10 records, not one per request taken in', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    d.on('error', () => {});
    const paths: string[] = [];
    const requests: string[] = [];
    for (let bytes = 0; bytes < 64 * 1024; bytes += requests.at(-1)!.length) {
      paths.push(`/t${paths.length}`);
      requests.push(`GET ${paths.at(-1)!} HTTP/1.1\r\nHost: a\r\n\r\n`);
    }
    d.write(requests.join(''));
    await until(() => arrived.length >= 1);
    d.destroy();
    await until(() => sink.records.length >= 1 + MAX_ABANDONED_RECORDS + 1);
    // The server took in at least one read slice's worth of requests: before the bound, ~135 records came of it.
    const takenIn = Math.floor(SERVER_READ_SLICE_BYTES / Math.max(...requests.map((r) => r.length)));
    const summary = sink.records.find((r) => r.abandoned_requests !== undefined);
    expect(summary).toBeDefined();
    const summarised = summary!.abandoned_requests as number;
    expect(summarised).toBeGreaterThanOrEqual(takenIn - 1 - MAX_ABANDONED_RECORDS);
    expect(summarised).toBeLessThan(paths.length - 1 - MAX_ABANDONED_RECORDS);
    await expectBoundedRecords(fwd, sink, paths, summarised);
  });

  it('a keep-alive connection handed to the server, reset with requests waiting: one record each', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const c = await tcp(await front(fwd));
    const reader = new ResponseReader(c);
    // The chunked request hands the connection over; the rest is the server's.
    c.write('POST /first HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
    expect((await reader.next()).status).toBe(200);
    const { raw, paths } = batch(6);
    c.write(raw);
    await until(() => arrived.length >= 2);
    c.resetAndDestroy();
    await expectOneRecordEach(fwd, sink, paths, ['/first']);
    expect(sink.records.find((r) => r.path === '/first')).toMatchObject({ status: 200 });
  });

  it('an Upgrade waiting behind a request when the client leaves: its record too', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    d.on('error', () => {});
    const auth = `Authorization: ${SECRET}\r\n`;
    d.write(`GET /p0 HTTP/1.1\r\nHost: a\r\n${auth}\r\nGET /ws HTTP/1.1\r\nHost: a\r\n${auth}Connection: Upgrade\r\nUpgrade: test\r\n\r\n`);
    await until(() => arrived.length >= 1);
    d.destroy();
    await expectOneRecordEach(fwd, sink, ['/p0', '/ws']);
    expect(sink.records.find((r) => r.path === '/ws')).toMatchObject({ type: 'WebSocket' });
  });
});

describe('a summary record of abandoned requests, and the metrics', () => {
  it('keeps the outcome of a request answered 400 while it waited; the metrics count each request by its own', async () => {
    const sink = createMemoryLogSink();
    const metrics = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
    const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink, appStartupGraceMs: 0, observe: metrics.observeExchange });
    cleanups.push(() => fwd.close());
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    d.on('error', () => {});
    // 39 GETs (the first held at the app), then a POST whose chunked body is malformed: answered 400 while it waits.
    const paths = Array.from({ length: 39 }, (_, i) => `/p${i}`);
    const bad = 'POST /bad HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n';
    d.write(paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: a\r\n\r\n`).join('') + bad);
    await until(() => arrived.length >= 1);
    d.destroy();
    await until(() => sink.records.length >= 1 + MAX_ABANDONED_RECORDS + 1);
    await fwd.close();
    expect(sink.records).toHaveLength(1 + MAX_ABANDONED_RECORDS + 1);
    const summary = sink.records.find((r) => r.abandoned_requests !== undefined);
    // The 40 taken in: one at the app, MAX_ABANDONED_RECORDS with a record each, the rest (the 400 among them) in one.
    const rest = 40 - 1 - MAX_ABANDONED_RECORDS;
    expect(summary).toMatchObject({ path: paths[1 + MAX_ABANDONED_RECORDS], status: 0, error: 'CLIENT_GONE', abandoned_requests: rest });
    // Before: the 400 and its code were folded into CLIENT_GONE.
    expect(summary!.abandoned_outcomes).toEqual([
      { status: 0, error: 'CLIENT_GONE', requests: rest - 1 },
      { status: 400, error: 'HTTP_BAD_REQUEST', requests: 1 },
    ]);
    const text = await metrics.metrics();
    const value = (series: string): number => Number(text.split('\n').find((l) => l.startsWith(`${series} `))?.slice(series.length + 1));
    // Every request counted once, by its own status: 39 without an answer (the one at the app too), one 400.
    expect(value('enclave_agent_requests_total{mode="http",status_class="none"}')).toBe(39);
    expect(value('enclave_agent_requests_total{mode="http",status_class="4xx"}')).toBe(1);
    // Only the request that ran has a duration; the 39 that never did are counted apart. Before: the summary
    // was one observation (10 in all) for 40 requests.
    expect(value('enclave_agent_request_duration_seconds_count')).toBe(1);
    expect(value('enclave_agent_requests_abandoned_total')).toBe(39);
    expect(promtoolCheck(text)).toEqual({ output: '', status: 0 });
  });
});

describe('a pipelined request answered with a parse error before its turn', () => {
  it('gets its record with that status and code, and never reaches the app', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    d.on('error', () => {});
    const reader = new ResponseReader(d);
    d.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST /bad HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n');
    expect((await reader.next()).status).toBe(200);
    expect((await reader.next()).status).toBe(400);
    await reader.waitEnd();
    await until(() => sink.records.length >= 2);
    await fwd.close();
    expect(sink.records.map((r) => [r.path, r.status, r.error ?? null])).toEqual([
      ['/first', 200, null],
      ['/bad', 400, 'HTTP_BAD_REQUEST'],
    ]);
    // Answered before its turn: it never runs, and the app never sees it.
    expect(arrived).toEqual(['/first']);
  });
});

describe('a CONNECT pipelined behind requests on the http.Server path', () => {
  it('gets its 405 after the earlier answers, which run; then the connection closes', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    d.on('error', () => {});
    const reader = new ResponseReader(d);
    d.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\nCONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    const first = await reader.next();
    expect([first.status, first.body.toString()]).toEqual([200, 'ok']);
    expect((await reader.next()).status).toBe(405);
    await reader.waitEnd();
    await until(() => sink.records.length >= 2);
    await fwd.close();
    expect(arrived).toEqual(['/first']);
    // Records are written as each exchange ends (the stages' a tick later): their order says nothing.
    expect(sink.records.map((r) => [r.method, r.path, r.status, r.error ?? null]).sort()).toEqual([
      ['CONNECT', 'example.com:443', 405, 'HTTP_METHOD_NOT_ALLOWED'],
      ['GET', '/first', 200, null],
    ]);
  });

  it('is recorded CLIENT_GONE, never answered, when the client leaves before its turn', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    d.on('error', () => {});
    const got: Buffer[] = [];
    d.on('data', (c: Buffer) => got.push(c));
    d.write('GET /p0 HTTP/1.1\r\nHost: a\r\n\r\nCONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    await until(() => arrived.length >= 1);
    expect(Buffer.concat(got).toString('latin1')).toBe('');
    d.destroy();
    await until(() => sink.records.length >= 2);
    await fwd.close();
    expect(sink.records.map((r) => [r.method, r.path, r.status, r.error ?? null]).sort()).toEqual([
      ['CONNECT', 'example.com:443', 0, 'CLIENT_GONE'],
      ['GET', '/p0', 0, 'CLIENT_GONE'],
    ]);
  });
});

// One rule on both paths: a request whose head was complete was taken in and gets its record (CLIENT_GONE when
// the client left, its body never complete); one whose head was not complete is not a request yet: no record.
describe.each([
  ['a Noise stream (http.Server path)', 'stream'],
  ['the keep-alive fast path', 'fast'],
] as const)('a request still arriving when the client leaves, on %s', (_name, kind) => {
  const auth = `Authorization: ${SECRET}\r\n`;
  const held = `GET /p0 HTTP/1.1\r\nHost: a\r\n${auth}\r\n`;

  async function open(fwd: HttpForwarder): Promise<net.Socket | Duplex> {
    if (kind === 'fast') return tcp(await front(fwd));
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    d.on('error', () => {});
    return d;
  }
  const leave = (c: net.Socket | Duplex): void => void ('resetAndDestroy' in c ? c.resetAndDestroy() : c.destroy());

  it('head complete, body partial, behind a request at the app: a CLIENT_GONE record for it', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const c = await open(fwd);
    c.write(`${held}POST /partial?token=abc HTTP/1.1\r\nHost: a\r\n${auth}Content-Length: 100\r\n\r\n12345`);
    await until(() => arrived.length >= 1);
    leave(c);
    await expectOneRecordEach(fwd, sink, ['/p0', '/partial?token=***']);
  });

  it('head not complete, behind a request at the app: no record for it', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const c = await open(fwd);
    c.write(`${held}POST /partial HTTP/1.1\r\nHost: a\r\n${auth}Content-Len`);
    await until(() => arrived.length >= 1);
    leave(c);
    await expectOneRecordEach(fwd, sink, ['/p0']);
  });
});

describe('the keep-alive fast path, a body the client never finished', () => {
  it('the client ends its side mid-body: the connection closes, the request is recorded CLIENT_GONE', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const c = await tcp(await front(fwd));
    const reader = new ResponseReader(c);
    c.end(`POST /partial?token=abc HTTP/1.1\r\nHost: a\r\nAuthorization: ${SECRET}\r\nContent-Length: 100\r\n\r\n${BODY}`);
    await reader.waitEnd();
    await expectOneRecordEach(fwd, sink, ['/partial?token=***']);
    expect(arrived).toEqual([]);
  });

  it('the client resets mid-body of its first request: recorded CLIENT_GONE', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    let received = false;
    const port = await attachFront(
      {
        attach: (s, ctx) => {
          s.once('data', () => (received = true));
          fwd.attach(s, ctx);
        },
      },
      cleanups,
    );
    const c = await tcp(port);
    c.write(`POST /partial?token=abc HTTP/1.1\r\nHost: a\r\nAuthorization: ${SECRET}\r\nContent-Length: 100\r\n\r\n${BODY}`);
    await until(() => received);
    c.resetAndDestroy();
    await expectOneRecordEach(fwd, sink, ['/partial?token=***']);
  });
});

describe('requests read ahead on the keep-alive fast path when the connection drains', () => {
  it('are never sent, the client is told by the close, and each gets a DRAINING record', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const attached: AttachedConnection[] = [];
    const port = await attachFront({ attach: (s, ctx) => void attached.push(fwd.attach(s, ctx)) }, cleanups);
    const c = await tcp(port);
    const reader = new ResponseReader(c);
    const { raw, paths } = batch(3);
    c.write(raw);
    await until(() => arrived.length >= 1 && sink.records.length === 0);
    expect(attached).toHaveLength(1);
    // As the TLS ingress on SIGTERM: what is in flight is answered, nothing new is taken.
    attached[0]!.drain();
    heldAtApp.shift()!.end('held-ok');
    const res = await reader.next();
    expect([res.status, res.body.toString()]).toEqual([200, 'held-ok']);
    await reader.waitEnd();
    await until(() => sink.records.length >= 3);
    await fwd.close();
    expect(arrived).toEqual([paths[0]!.replace('***', 'abc')]);
    expect(sink.records.map((r) => [r.path, r.status, r.error ?? null]).sort()).toEqual([
      [paths[0], 200, null],
      [paths[1], 0, 'DRAINING'],
      [paths[2], 0, 'DRAINING'],
    ]);
    for (const r of sink.records.filter((x) => x.status === 0)) expect(r).toMatchObject({ status_group: 'none', response_headers: {} });
    const text = JSON.stringify(sink.records);
    expect(text).not.toContain('s3cr3t');
    expect(text).not.toContain('card-number');
  });
});

describe('pipelined requests abandoned on the keep-alive fast path', () => {
  it('a connection reset with requests read ahead: one record each, the unsent ones CLIENT_GONE', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const c = await tcp(await front(fwd));
    const { raw, paths } = batch(6);
    c.write(raw);
    await until(() => arrived.length >= 1);
    expect(fwd.keepAliveFastPathRequests).toBe(1);
    c.resetAndDestroy();
    await expectOneRecordEach(fwd, sink, paths);
  });

  it('thousands read ahead and reset: a record each for the first MAX_ABANDONED_RECORDS, one with the count for the rest', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    let server: net.Socket | undefined;
    const port = await attachFront({ attach: (s, ctx) => ((server = s), fwd.attach(s, ctx)) }, cleanups);
    const c = await tcp(port);
    // 2,000 requests (~120 KB), all within the read-ahead: the first goes to the app and is held there.
    const { raw, paths } = batch(2000);
    c.write(raw);
    await until(() => arrived.length >= 1 && server?.bytesRead === Buffer.byteLength(raw));
    expect(server?.bytesRead).toBe(Buffer.byteLength(raw));
    c.resetAndDestroy();
    // Before the fix: 2,000 records, one per request.
    await expectBoundedRecords(fwd, sink, paths, 2000 - 1 - MAX_ABANDONED_RECORDS);
  });

  it('a request still arriving when the client leaves is not a request taken in: no record for it', async () => {
    const sink = createMemoryLogSink();
    const fwd = forwarder(sink);
    const c = await tcp(await front(fwd));
    const auth = `Authorization: ${SECRET}\r\n`;
    c.write(`GET /p0 HTTP/1.1\r\nHost: a\r\n${auth}\r\nGET /p1 HTTP/1.1\r\nHost: a\r\n${auth}\r\nGET /partial HTTP/1.1\r\nHo`);
    await until(() => arrived.length >= 1);
    c.resetAndDestroy();
    await expectOneRecordEach(fwd, sink, ['/p0', '/p1']);
  });
});

// The activity store and its queries: records in the agent's exact shape (trxLine) are stored in batches,
// malformed ones refused and counted, a full queue drops and counts, retention deletes by age and by rows,
// and the listing walks newest first by keyset with every filter, through the reader's worker thread.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createHeaderMasker, trxLine, type TrxRecordInput } from '../../src/http/stages/trx-log.ts';
import { openActivityReader } from '../../src/host/activity-reader.ts';
import { openActivityStore, type ActivityStore } from '../../src/host/activity-store.ts';
import { ActivityStoreError } from '../../src/host/activity-schema.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function dbFile(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-activity-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, 'activity.db');
}

function open(file: string, extra: Partial<Parameters<typeof openActivityStore>[0]> = {}): ActivityStore {
  const s = openActivityStore({ file, ...extra });
  cleanup.push(() => s.close());
  return s;
}

const mask = createHeaderMasker();
const T0 = Date.parse('2026-12-01T10:00:00.000Z');

function input(i: number, over: Partial<TrxRecordInput> = {}): TrxRecordInput {
  return {
    txid: `req-${String(i).padStart(6, '0')}`,
    startedAt: T0 + i * 1000,
    elapsedMs: 1 + (i % 10),
    sessionId: 's1',
    type: 'HTTP',
    method: i % 2 === 0 ? 'GET' : 'POST',
    url: i % 3 === 0 ? `/pay/${i}?card=4242` : `/users/${i}`,
    status: i % 7 === 0 ? 503 : 200,
    bytesIn: 10,
    bytesOut: 20,
    remoteIp: '203.0.113.9',
    requestHeaders: ['Host', 'app', 'Authorization', 'Bearer x', 'User-Agent', 'ua/1'],
    responseHeaders: ['Content-Type', 'application/json'],
    decryptedFields: i % 4,
    error: undefined,
    ...over,
  };
}

describe('activity store', () => {
  it('stores agent-shaped lines in batches and keeps the masked headers as the agent wrote them', async () => {
    const file = await dbFile();
    const store = open(file, { batchSize: 10 });
    const batches: number[] = [];
    store.onInserted((rows) => batches.push(rows.length));
    for (let i = 0; i < 25; i++) expect(store.addLine(trxLine(input(i), mask))).toBe('queued');
    expect(batches).toEqual([10, 10]);
    store.flush();
    expect(batches).toEqual([10, 10, 5]);
    expect(store.stats).toMatchObject({ inserted: 25, rows: 25, dropped: 0, rejected: 0 });
    expect((await stat(file)).mode & 0o777).toBe(0o600);

    const reader = openActivityReader(file);
    cleanup.push(() => reader.close());
    const page = await reader.list({ txid: 'req-000003' });
    expect(page.records).toHaveLength(1);
    const d = await reader.get(page.records[0]!.id);
    expect(d).toMatchObject({ txid: 'req-000003', method: 'POST', path: '/pay/3?card=***', status: 200, remoteIp: '203.0.113.9', decryptedFields: 3, userAgent: 'ua/1' });
    expect(d!.requestHeaders).toEqual({ host: 'app', authorization: '***', 'user-agent': 'ua/1' });
  });

  it('refuses malformed transaction records (counted), leaves operational lines to the caller, and rejects non-JSON', async () => {
    const store = open(await dbFile());
    expect(store.addLine('{"level":30,"msg":"runtime started"}')).toBe('other');
    expect(store.addLine('{"kind":"trx","txid":"x","ts":"not a date","status":200,"elapsed_ms":1}')).toBe('rejected');
    expect(store.addLine('{"kind":"trx","txid":"x","ts":"2026-12-01T10:00:00Z","status":-1,"elapsed_ms":1}')).toBe('rejected');
    expect(store.addLine('not json')).toBe('invalid');
    store.flush();
    expect(store.stats).toMatchObject({ inserted: 0, rejected: 2 });
  });

  it('drops and counts records when the queue is full instead of growing without bound', async () => {
    const store = open(await dbFile(), { batchSize: 1000, maxPending: 5, flushMs: 60_000 });
    const results = Array.from({ length: 8 }, (_, i) => store.addLine(trxLine(input(i), mask)));
    expect(results.filter((r) => r === 'dropped')).toHaveLength(3);
    store.flush();
    expect(store.stats).toMatchObject({ inserted: 5, dropped: 3 });
  });

  it('retention deletes rows older than retainDays and keeps at most retainRows, oldest first', async () => {
    const file = await dbFile();
    let now = T0 + 100 * 1000;
    const store = open(file, { retainRows: 60, retainDays: 1, now: () => now });
    for (let i = 0; i < 100; i++) store.addLine(trxLine(input(i), mask));
    store.flush();
    store.expireNow();
    expect(store.stats).toMatchObject({ rows: 60, expired: 40 });
    const reader = openActivityReader(file);
    cleanup.push(() => reader.close());
    const all = await reader.list({ limit: 200 });
    expect(all.records.map((r) => r.txid).at(-1)).toBe('req-000040');
    // A day later, every row is older than retainDays.
    now += 86_400_000 + 100_000;
    store.expireNow();
    expect(store.stats.rows).toBe(0);
    expect((await reader.list({})).records).toEqual([]);
  });

  it('refuses options that make no sense, naming them', () => {
    expect(() => openActivityStore({ file: '/nonexistent-dir/x.db' })).toThrow(ActivityStoreError);
    expect(() => openActivityStore({ file: 'x.db', retainRows: 0 })).toThrow(/retainRows/);
  });
});

describe('activity queries through the reader', () => {
  it('walks newest first by keyset across pages and applies every filter', async () => {
    const file = await dbFile();
    const store = open(file);
    for (let i = 0; i < 300; i++) store.addLine(trxLine(input(i), mask));
    store.flush();
    const reader = openActivityReader(file);
    cleanup.push(() => reader.close());

    const seen: string[] = [];
    let before: string | undefined;
    for (;;) {
      const page = await reader.list({ limit: 70, ...(before === undefined ? {} : { before }) });
      seen.push(...page.records.map((r) => r.txid));
      if (page.next === null) break;
      before = page.next;
    }
    expect(seen).toHaveLength(300);
    expect(seen[0]).toBe('req-000299');
    expect(seen.at(-1)).toBe('req-000000');
    expect(new Set(seen).size).toBe(300);

    const errors = await reader.list({ statusClass: 5, limit: 200 });
    expect(errors.records.length).toBe(43);
    expect(errors.records.every((r) => r.status === 503)).toBe(true);
    const pay = await reader.list({ pathPrefix: '/pay/1', limit: 200 });
    expect(pay.records.length).toBeGreaterThan(0);
    expect(pay.records.every((r) => r.path.startsWith('/pay/1'))).toBe(true);
    const posts = await reader.list({ method: 'POST', limit: 200 });
    expect(posts.records.every((r) => r.method === 'POST')).toBe(true);
    const window = await reader.list({ from: T0 + 100_000, to: T0 + 110_000, limit: 200 });
    expect(window.records.map((r) => r.txid)).toEqual(Array.from({ length: 10 }, (_, k) => `req-${String(109 - k).padStart(6, '0')}`));
  });

  it('aggregates traffic per bucket in SQL: counts, errors and latency percentiles', async () => {
    const file = await dbFile();
    const store = open(file);
    // 60 records in one minute: latency 1..60 ms, every 10th a 502.
    for (let i = 0; i < 60; i++) store.addLine(trxLine(input(i, { elapsedMs: i + 1, status: i % 10 === 9 ? 502 : 200 }), mask));
    store.flush();
    const reader = openActivityReader(file);
    cleanup.push(() => reader.close());
    const t = await reader.traffic({ from: T0, to: T0 + 60_000, buckets: 2 });
    expect(t.bucketMs).toBe(30_000);
    expect(t.points.map((p) => [p.requests, p.errors])).toEqual([
      [30, 3],
      [30, 3],
    ]);
    expect(t.total.requests).toBe(60);
    expect(t.total.p50).toBeCloseTo(30.5, 5);
    expect(t.total.p99).toBeGreaterThan(59);
    expect(t.points[0]!.p95).toBeGreaterThan(28);
  });
});

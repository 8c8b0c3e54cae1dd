// The activity store and its queries: records in the agent's exact shape (trxLine) are stored in batches,
// malformed ones refused and counted, a full queue drops and counts, retention deletes by age and by rows,
// and the listing walks newest first by keyset with every filter, through the reader's worker thread.
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
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

  it('the reader holds at most maxPending queries: more fail at once with ACTIVITY_READER_BUSY, none queued', async () => {
    const file = await dbFile();
    const store = open(file);
    for (let i = 0; i < 5; i++) store.addLine(trxLine(input(i), mask));
    store.flush();
    const reader = openActivityReader(file, { maxPending: 2 });
    cleanup.push(() => reader.close());
    // Asked in one tick: none can have been answered yet.
    const asked = [reader.list({}), reader.get(1), reader.traffic({ from: T0, to: T0 + 10_000 }), reader.list({})];
    const settled = await Promise.allSettled(asked);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected']);
    for (const s of settled.slice(2)) expect((s as PromiseRejectedResult).reason).toMatchObject({ code: 'ACTIVITY_READER_BUSY' });
    // Answered, they free their places.
    expect((await reader.list({})).records).toHaveLength(5);
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

  it('retention by rows drops the oldest partition whole (⌈retainRows / 32⌉ rows), never keeping more than retainRows', async () => {
    const file = await dbFile();
    // 160 rows kept → partitions of 5.
    const store = open(file, { retainRows: 160, retainDays: 36_500, now: () => T0 });
    for (let i = 0; i < 160; i++) store.addLine(trxLine(input(i), mask));
    store.flush();
    store.expireNow();
    expect(store.stats).toMatchObject({ rows: 160, expired: 0 });
    // One over: the oldest partition (req-000000 … req-000004) goes as a whole.
    store.addLine(trxLine(input(160), mask));
    store.flush();
    store.expireNow();
    expect(store.stats).toMatchObject({ rows: 156, expired: 5 });
    for (let i = 161; i < 400; i++) {
      store.addLine(trxLine(input(i), mask));
      if (i % 7 === 0) {
        store.flush();
        store.expireNow();
        expect(store.stats.rows).toBeLessThanOrEqual(160);
        expect(store.stats.rows).toBeGreaterThan(155);
      }
    }
    store.flush();
    store.expireNow();
    const reader = openActivityReader(file);
    cleanup.push(() => reader.close());
    const all = await reader.list({ limit: 200 });
    // Newest kept, contiguous, starting at a partition's first record.
    expect(all.records[0]!.txid).toBe('req-000399');
    expect(all.records).toHaveLength(store.stats.rows);
    expect(Number(all.records.at(-1)!.txid.slice(4)) % 5).toBe(0);
  });

  it('retention by age is exact across partitions, late records in the newest partition included', async () => {
    const file = await dbFile();
    let now = T0;
    const store = open(file, { retainRows: 32 * 5, retainDays: 1, now: () => now });
    // 30 records one second apart (6 partitions of 5), then one that arrives late with an older timestamp.
    for (let i = 0; i < 30; i++) store.addLine(trxLine(input(i), mask));
    store.addLine(trxLine(input(99, { startedAt: T0 + 2500 }), mask));
    store.flush();
    now = T0 + 86_400_000 + 12_500; // rows with ts < T0 + 12,500 are older than a day: req 0..12 and the late one
    store.expireNow();
    expect(store.stats).toMatchObject({ rows: 17, expired: 14 });
    const reader = openActivityReader(file);
    cleanup.push(() => reader.close());
    const left = (await reader.list({ limit: 200 })).records.map((r) => r.txid);
    expect(left).toEqual(Array.from({ length: 17 }, (_, k) => `req-${String(29 - k).padStart(6, '0')}`));
  });

  it('moves a database of the old one-table schema aside (logged) and starts a new one; refuses a newer schema', async () => {
    const file = await dbFile();
    const old = new Database(file);
    old.exec('CREATE TABLE trx (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, txid TEXT NOT NULL); INSERT INTO trx (ts, txid) VALUES (1, \'old\'); PRAGMA user_version = 1;');
    old.close();
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => void warnings.push(l) });
    const store = open(file, { logger });
    expect(store.stats.rows).toBe(0);
    expect(warnings.join('')).toMatch(/schema 1 moved aside/);
    expect(existsSync(`${file}.schema-1`)).toBe(true);
    const moved = new Database(`${file}.schema-1`, { readonly: true });
    expect(moved.prepare('SELECT txid FROM trx').pluck().all()).toEqual(['old']);
    moved.close();
    store.addLine(trxLine(input(1), mask));
    store.flush();
    expect(store.stats.rows).toBe(1);

    const newer = await dbFile();
    const db = new Database(newer);
    db.pragma('user_version = 3');
    db.close();
    expect(() => openActivityStore({ file: newer })).toThrow(expect.objectContaining({ code: 'ACTIVITY_STORE_WRONG_SCHEMA' }) as Error);
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

  it('answers over many partitions as over one: keyset walk in time order with late records, filters, detail, traffic', async () => {
    const file = await dbFile();
    // Partitions of 8 rows; timestamps out of insertion order (records are written when the exchange ends),
    // so partitions overlap in time.
    const store = open(file, { retainRows: 32 * 8, retainDays: 36_500, now: () => T0 });
    const order = Array.from({ length: 120 }, (_, i) => i).sort((a, b) => ((a * 37) % 11) - ((b * 37) % 11) || a - b);
    for (const i of order) store.addLine(trxLine(input(i), mask));
    store.flush();
    store.expireNow();
    expect(store.stats).toMatchObject({ rows: 120, expired: 0 });
    const reader = openActivityReader(file);
    cleanup.push(() => reader.close());

    const seen: string[] = [];
    let before: string | undefined;
    for (;;) {
      const page = await reader.list({ limit: 13, ...(before === undefined ? {} : { before }) });
      seen.push(...page.records.map((r) => r.txid));
      if (page.next === null) break;
      before = page.next;
    }
    expect(seen).toEqual(Array.from({ length: 120 }, (_, k) => `req-${String(119 - k).padStart(6, '0')}`));

    const found = await reader.list({ txid: `req-${String(order[0]).padStart(6, '0')}` });
    expect(found.records).toHaveLength(1);
    expect((await reader.get(found.records[0]!.id))!.txid).toBe(found.records[0]!.txid);
    expect((await reader.list({ statusClass: 5, limit: 200 })).records.map((r) => r.txid)).toEqual(
      Array.from({ length: 120 }, (_, i) => 119 - i).filter((i) => i % 7 === 0).map((i) => `req-${String(i).padStart(6, '0')}`),
    );
    const pay = await reader.list({ pathPrefix: '/pay/1', limit: 200 });
    expect(pay.records.map((r) => r.path)).toEqual(
      Array.from({ length: 120 }, (_, i) => 119 - i).filter((i) => i % 3 === 0 && String(i).startsWith('1')).map((i) => `/pay/${i}?card=***`),
    );
    const t = await reader.traffic({ from: T0, to: T0 + 120_000, buckets: 4 });
    expect(t.points.map((p) => p.requests)).toEqual([30, 30, 30, 30]);
    expect(t.total).toMatchObject({ requests: 120, errors: 18 });
  });

  it('keeps answering while the writer creates and drops partitions under it (one snapshot per question)', async () => {
    const file = await dbFile();
    // Partitions of 2 rows: nearly every batch creates one and retention drops one.
    const store = open(file, { retainRows: 64, retainDays: 36_500, batchSize: 3, now: () => T0 });
    const reader = openActivityReader(file);
    cleanup.push(() => reader.close());
    let writing = true;
    const writer = (async () => {
      for (let i = 0; i < 600; i++) {
        store.addLine(trxLine(input(i), mask));
        if (i % 5 === 0) {
          store.flush();
          store.expireNow();
          await new Promise((r) => setImmediate(r));
        }
      }
      store.flush();
      store.expireNow();
      writing = false;
    })();
    let answers = 0;
    while (writing) {
      const [page, t] = await Promise.all([reader.list({ limit: 20 }), reader.traffic({ from: T0, to: T0 + 600_000, buckets: 10 })]);
      const ts = page.records.map((r) => r.ts);
      expect(ts).toEqual([...ts].sort((a, b) => b - a));
      // The reader sees each commit as it lands: a batch can be in before retention's drop that follows it.
      expect(t.total.requests).toBeLessThanOrEqual(64 + 5);
      answers++;
    }
    await writer;
    expect(answers).toBeGreaterThan(0);
    expect(store.stats.rows).toBeLessThanOrEqual(64);
    expect((await reader.list({ limit: 200 })).records).toHaveLength(store.stats.rows);
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

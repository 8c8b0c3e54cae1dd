// The activity store (issue 19): how many of the agent's transaction records per second go into SQLite, next
// to a baseline measured in the same run — the same JSON lines appended to a file, which is what `logs --out`
// does — first in-process (the store's own cost), then end to end through the log sink server over TCP
// loopback (socket → line splitter → JSON check → store), and again while a page queries the database in a
// loop. Then the page with 1,000,000 stored rows: the API calls the page makes (median of several), and, when
// Debian's chromium is installed, the time for the page to load in a real browser until its first rows show.
import { closeSync, createWriteStream, existsSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startLogSinkServer } from '../../src/host/log-sink-server.ts';
import { startActivityService } from '../../src/host/activity-service.ts';
import { openActivityStore } from '../../src/host/activity-store.ts';
import { activityRow, parseLine } from '../../src/host/activity-record.ts';
import { partitionRows } from '../../src/host/activity-schema.ts';
import { createHeaderMasker, trxLine, type TrxRecordInput } from '../../src/http/stages/trx-log.ts';
import { formatNumber, medianMs, printTable, ratio } from './lib.ts';

const N = 200_000;
const TARGET_PER_SEC = 20_000;
const MILLION = 1_000_000;
const mask = createHeaderMasker();

/** Agent-shaped lines: the headers a browser SDK request carries, a mix of paths, methods and statuses. */
function lines(n: number, t0: number, spanMs: number): string[] {
  const out: string[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const input: TrxRecordInput = {
      txid: `${(i * 2654435761) % 4294967296}`.padStart(10, '0') + '-' + i.toString(16).padStart(8, '0'),
      startedAt: t0 + Math.floor((i * spanMs) / n),
      elapsedMs: 0.5 + ((i * 7919) % 1000) / 10,
      sessionId: `sess-${i >> 8}`,
      type: 'HTTP',
      method: i % 5 === 0 ? 'GET' : 'POST',
      url: i % 3 === 0 ? `/pay/${i % 1000}?amount=12&currency=EUR` : `/users/${i % 5000}/profile`,
      status: i % 50 === 0 ? 503 : i % 17 === 0 ? 404 : 200,
      bytesIn: 300 + (i % 700),
      bytesOut: 120 + (i % 2000),
      remoteIp: `198.51.100.${i % 250}`,
      requestHeaders: [
        'Host', 'api.example.com', 'User-Agent', 'enclave-agent-sdk/0.1 node/20', 'Accept', 'application/json',
        'Content-Type', 'application/json', 'Content-Length', '512', 'Authorization', 'Bearer abc', 'X-Request-Id', `r-${i}`,
      ],
      responseHeaders: ['Content-Type', 'application/json', 'Content-Length', '240', 'Date', 'Sun, 06 Dec 2026 11:00:00 GMT'],
      decryptedFields: i % 4,
      error: undefined,
    };
    out[i] = trxLine(input, mask);
  }
  return out;
}

function fresh(dir: string, name: string): string {
  const f = path.join(dir, name);
  for (const s of ['', '-wal', '-shm']) rmSync(f + s, { force: true });
  return f;
}

/** Records per second of wall time, and per second of this process's CPU time (what one busy core does). */
interface Rate {
  wall: number;
  cpu: number;
}

function timer(): (n: number) => Rate {
  const t = performance.now();
  const c = process.cpuUsage();
  return (n) => {
    const used = process.cpuUsage(c);
    return { wall: (n * 1000) / (performance.now() - t), cpu: (n * 1e6) / (used.user + used.system) };
  };
}

/** Baseline: the lines appended to a file in batches of 2000 (one write each), fsync-free like the sink. */
function fileBaseline(file: string, data: string[]): Rate {
  const fd = openSync(file, 'w');
  const done = timer();
  for (let i = 0; i < data.length; i += 2000) writeSync(fd, data.slice(i, i + 2000).join(''));
  closeSync(fd);
  return done(data.length);
}

function storeInProcess(file: string, data: string[]): Rate {
  const store = openActivityStore({ file });
  const done = timer();
  for (const l of data) store.addLine(l.slice(0, -1));
  store.flush();
  const rate = done(data.length);
  if (store.stats.inserted !== data.length) throw new Error(`stored ${store.stats.inserted} of ${data.length}`);
  store.close();
  return rate;
}

/** Through the log sink server over TCP: to a file (--out) or to the store (--db). */
async function throughSink(data: string[], mode: { file: string } | { db: string }, whileQuerying = false): Promise<Rate> {
  const service = 'db' in mode ? await startActivityService({ file: mode.db, ui: { host: '127.0.0.1', port: 0 } }) : null;
  const out = 'file' in mode ? createWriteStream(mode.file) : createWriteStream('/dev/null');
  let written = 0;
  const sink = await startLogSinkServer({
    listen: { kind: 'tcp', host: '127.0.0.1', port: 0 },
    output: out,
    maxLineBytes: 65536,
    ...(service === null ? {} : { onLine: (_text: string, value: Record<string, unknown>) => service.takeRecord(value) }),
  });
  const payload = Buffer.from(data.join(''));
  let querying = whileQuerying && service !== null;
  let queries = 0;
  const loop = (async () => {
    while (querying) {
      const now = Date.now();
      await fetch(`${service!.url}api/traffic?from=${now - 7 * 86_400_000}&to=${now}&buckets=120`).then((r) => r.arrayBuffer());
      await fetch(`${service!.url}api/records?limit=50`).then((r) => r.arrayBuffer());
      queries += 2;
    }
  })();
  const done0 = timer();
  await new Promise<void>((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: sink.port! }, () => s.end(payload));
    s.on('error', reject);
    s.on('close', () => resolve());
  });
  const done = (): boolean => (service === null ? sink.stats.lines >= data.length && out.writableLength === 0 : service.store.stats.inserted + service.store.stats.dropped >= data.length);
  while (!done()) {
    service?.store.flush();
    await new Promise((r) => setTimeout(r, 1));
  }
  written = service === null ? sink.stats.lines : service.store.stats.inserted;
  const rate = done0(written);
  querying = false;
  await loop;
  const dropped = service?.store.stats.dropped ?? 0;
  await sink.close();
  await service?.close();
  await new Promise<void>((r) => out.end(r));
  if (written !== data.length || dropped !== 0) throw new Error(`sink: ${written} of ${data.length} written, ${dropped} dropped`);
  if (whileQuerying) console.log(`(while ingesting, the page answered ${queries} API calls: a 7-day traffic aggregate and a listing, in a loop)`);
  return rate;
}

async function browserLoad(url: string): Promise<number | null> {
  if (!existsSync('/usr/bin/chromium')) return null;
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(path.join(os.tmpdir(), 'ea-bench-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const times: number[] = [];
    for (let i = 0; i < 4; i++) {
      const page = await browser.newPage();
      const t = performance.now();
      await page.goto(url);
      await page.waitForSelector('#rows tr:nth-child(50)');
      if (i > 0) times.push(performance.now() - t);
      await page.close();
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)]!;
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

export default async function bench(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-bench-activity-'));
  try {
    const now = Date.now();
    const data = lines(N, now - 3_600_000, 3_600_000);
    const avg = data.reduce((s, l) => s + l.length, 0) / data.length;
    console.log(`\n(${formatNumber(N)} records in the agent's trxLine shape, ${Math.round(avg)} bytes per line on average; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')})`);

    const base = fileBaseline(path.join(dir, 'baseline.jsonl'), data);
    const inproc = storeInProcess(fresh(dir, 'a.db'), data);
    const sinkFile = await throughSink(data, { file: path.join(dir, 'sink.jsonl') });
    const sinkDb = await throughSink(data, { db: fresh(dir, 'b.db') });
    const sinkDbQueried = await throughSink(data, { db: fresh(dir, 'c.db') }, true);
    const mark = (r: Rate): string => `${r.wall >= TARGET_PER_SEC ? '✓' : '✗'} / ${r.cpu >= TARGET_PER_SEC ? '✓' : '✗'}`;
    printTable('activity ingest: records/s (target ≥ 20,000/s into SQLite)', [
      ['path', 'records/s (wall)', 'records per CPU-s', 'vs baseline (CPU)', '≥ 20k (wall / CPU)'],
      ['baseline: append the lines to a file (in process)', base.wall, base.cpu, '1.00×', ''],
      ['store: parse + batched INSERT (in process)', inproc.wall, inproc.cpu, ratio(inproc.cpu, base.cpu), mark(inproc)],
      ['baseline: log sink over TCP → file (logs --out)', sinkFile.wall, sinkFile.cpu, '1.00×', ''],
      ['log sink over TCP → SQLite (logs --db)', sinkDb.wall, sinkDb.cpu, ratio(sinkDb.cpu, sinkFile.cpu), mark(sinkDb)],
      ['the same while the page queries in a loop', sinkDbQueried.wall, sinkDbQueried.cpu, ratio(sinkDbQueried.cpu, sinkFile.cpu), mark(sinkDbQueried)],
    ]);
    console.log('(records per CPU-s: records over the CPU time this process used, sender included: what one core does; the query loop runs in the reader worker, which this counts too)');

    // 1,000,000 rows over the last 7 days. ACTIVITY_BENCH_DB=FILE keeps them for the next run (filling takes
    // a minute or more on a busy machine); a kept file is reused when it holds them (a file of the old schema
    // is moved aside to FILE.schema-1 by the store, and refilled).
    const week = 7 * 86_400_000;
    const kept = process.env.ACTIVITY_BENCH_DB;
    const big = kept ?? fresh(dir, 'million.db');
    const fill = openActivityStore({ file: big, batchSize: 10_000, retainRows: MILLION, retainDays: 30 });
    if (fill.stats.rows < MILLION) {
      const t0 = Date.now() - week;
      const tFill = timer();
      for (let done = fill.stats.rows; done < MILLION; done += N) {
        const chunk = lines(Math.min(N, MILLION - done), t0 + Math.floor((done * week) / MILLION), Math.floor((N * week) / MILLION));
        for (const l of chunk) fill.add(activityRow(parseLine(l)!)!);
        fill.flush();
      }
      const r = tFill(MILLION);
      console.log(`\n(filled ${formatNumber(MILLION)} rows over 7 days: ${formatNumber(r.wall)} records/s wall, ${formatNumber(r.cpu)} per CPU-s)`);
    }
    // Steady state: a store that already holds 1,000,000 rows takes the agent's records while retention keeps
    // it at (31/32 … 1) × 1,000,000: 200,000 records, so about six partitions are created and six dropped.
    const extra = lines(N, Date.now() - 60_000, 60_000);
    const steady = timer();
    for (const l of extra) fill.addLine(l.slice(0, -1));
    fill.flush();
    fill.expireNow();
    const st = steady(extra.length);
    const rowsKept = fill.stats.rows;
    fill.close();
    // The same through the log sink over TCP (logs --db), retention running on its own timer and after batches.
    const sinkBig = await throughSink(lines(N, Date.now() - 30_000, 30_000), { db: big });
    const mark2 = (r: Rate): string => `${r.wall >= TARGET_PER_SEC ? '✓' : '✗'} / ${r.cpu >= TARGET_PER_SEC ? '✓' : '✗'}`;
    printTable('activity ingest into a store holding 1,000,000 rows (retention on: --retain-rows 1000000)', [
      ['path', 'records/s (wall)', 'records per CPU-s', '≥ 20k (wall / CPU)'],
      ['store: parse + batched INSERT + retention (in process)', st.wall, st.cpu, mark2(st)],
      ['log sink over TCP → SQLite (logs --db)', sinkBig.wall, sinkBig.cpu, mark2(sinkBig)],
    ]);
    console.log(`(rows kept after the in-process run: ${formatNumber(rowsKept)}; partitions of ${formatNumber(partitionRows(MILLION))} rows)`);

    const service = await startActivityService({ file: big, ui: { host: '127.0.0.1', port: 0 } });
    try {
      const url = service.url!;
      const get = (p: string) => () => fetch(url + p).then(async (r) => {
        if (!r.ok) throw new Error(`${p}: HTTP ${r.status}`);
        return r.arrayBuffer();
      });
      const first = (await (await fetch(`${url}api/records?limit=50`)).json()) as { records: { txid: string }[]; next: string };
      let deep = first.next;
      for (let i = 0; i < 200; i++) deep = ((await (await fetch(`${url}api/records?limit=50&before=${deep}`)).json()) as { next: string }).next;
      const nowMs = Date.now();
      const cases: [string, string][] = [
        ['page shell + app.js + app.css', ''],
        ['listing, first page (50, newest first)', 'api/records?limit=50'],
        ['listing, page 201 (keyset cursor)', `api/records?limit=50&before=${deep}`],
        ['request id (exact)', `api/records?txid=${first.records[10]!.txid}`],
        ['path prefix /pay/12', 'api/records?limit=50&path=%2Fpay%2F12'],
        ['status 5xx', 'api/records?limit=50&status=5xx'],
        ['status 4xx + method GET + last 24 h', `api/records?limit=50&status=4xx&method=GET&from=${nowMs - 86_400_000}`],
        ['traffic, last hour (120 buckets)', `api/traffic?from=${nowMs - 3_600_000}&to=${nowMs}&buckets=120`],
        ['traffic, last 24 h', `api/traffic?from=${nowMs - 86_400_000}&to=${nowMs}&buckets=120`],
        ['traffic, last 7 days (all 1M rows)', `api/traffic?from=${nowMs - week}&to=${nowMs}&buckets=120`],
      ];
      const rows: (string | number)[][] = [['query (HTTP API, 1,000,000 rows)', 'median ms']];
      for (const [name, p] of cases) {
        const fn = p === '' ? () => Promise.all([get('')(), get('app.js')(), get('app.css')()]) : get(p);
        rows.push([name, await medianMs(fn, p.includes('7 days') || name.includes('7 days') ? 3 : 7, 1)]);
      }
      printTable('activity page with 1,000,000 stored records', rows);
      const load = await browserLoad(url);
      printTable('activity page with 1,000,000 stored records, in chromium', [
        ['what', 'median ms'],
        ['page load until the first 50 rows show', load === null ? 'no /usr/bin/chromium' : load],
      ]);
    } finally {
      await service.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}


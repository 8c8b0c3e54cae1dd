// A flood of ev: decryption against the local API, and what it does to a small request beside it.
//
// Process layout: a child process runs the local API (its own event loop, as in the agent); this process
// runs the clients. The flood: BENCH_FLOOD_CLIENTS clients, each posting /decrypt bodies of 1,024 values
// (the per-request cap), every value under its own ephemeral key, P-256 and secp256k1 alternating — 8
// bodies cycled in order, 8,192 keys, more than the 4,096-entry ECDH cache holds, so every value pays its
// ECDH (the pool's workers have caches of their own, as cold). The probe: one client sending
// GET /health back to back to the same server; its p50/p99 latency,
// and the server's event-loop delay (perf_hooks.monitorEventLoopDelay, 1 ms resolution), are reported.
//
// Rows, measured in interleaved rounds in the same run:
//   no flood                the probe alone (the baseline of the ratios)
//   before: one go          each request's values decrypted in one go, no budget (the old code path: a
//                           DecryptScheduler with sliceMs 1e9 and maxConcurrent 1e6 runs every job whole)
//   sliced, budget          a DecryptScheduler without a pool (5 ms slices on the event loop, 16 requests at once)
//   worker pool, budget     a DecryptScheduler with a DecryptPool of os.availableParallelism() workers: what
//                           the runtime runs (the body leaves the event loop; headers would stay sliced)
// Each ratio is the median of the per-round ratios.
//
// A second table: the HTTP decrypt stage given one 8 MiB JSON body holding an ev: value (valid, and the same
// with trailing garbage: 400), its "is this UTF-8 JSON" check inline (no pool, the old path) and in a pool
// (JSON_TEXT_POOL_MIN_BYTES and up); the longest gap between 1 ms interval ticks in this process while the
// stage runs is the event-loop stall (a tick timer sees a block that starts at once; median of the rounds).
//
// Env: BENCH_FLOOD_MS (per row, default 3000), BENCH_FLOOD_ROUNDS (default 3), BENCH_FLOOD_CLIENTS (default 4),
// BENCH_FLOOD_JSON_CHECK_ONLY=1 (the second table only).
// Run: npx tsx scripts/bench/run.ts decrypt-flood
import { fork, type ChildProcess } from 'node:child_process';
import { Readable } from 'node:stream';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Pool } from 'undici';
import { startApiServer } from '../../src/api/server.ts';
import type { Nsm } from '../../src/attestation/nsm.ts';
import { DecryptScheduler } from '../../src/crypto/decrypt-scheduler.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { DecryptPool } from '../../src/crypto/decrypt-pool.ts';
import { createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';
import { askChild, percentile, printTable, ratio } from './lib.ts';

const SELF = fileURLToPath(import.meta.url);
const ROW_MS = Number(process.env.BENCH_FLOOD_MS ?? 3000);
const ROUNDS = Number(process.env.BENCH_FLOOD_ROUNDS ?? 3);
const CLIENTS = Number(process.env.BENCH_FLOOD_CLIENTS ?? 4);
const VALUES = 1024;
const BODIES = 8; // 8,192 keys: with 4 bodies in progress at once, a body's keys are evicted before its turn comes again

type Mode = 'before' | 'sliced' | 'pool';
type ChildMsg = { cmd: 'start' } | { cmd: 'eld-reset' } | { cmd: 'eld' } | { cmd: 'stop' };
interface Started {
  ports: Record<Mode, number>;
  pub: { p256: number[]; secp256k1: number[] };
}

// ---------------------------------------------------------------------------------------------------------------
// The server child

function serverChild(): void {
  const send = (m: unknown): void => void process.send!(m);
  const eld = monitorEventLoopDelay({ resolution: 1 });
  const nsm: Nsm = { attest: () => Promise.resolve(new Uint8Array(0)), random: (n) => Promise.resolve(new Uint8Array(n)) };
  process.on('message', (m: ChildMsg) => {
    void (async () => {
      if (m.cmd === 'start') {
        const keyring = Keyring.generate();
        const logger = pino({ level: 'silent' });
        const common = { keyring, nsm, port: 0, logger, maxBodyBytes: 4 << 20 };
        const before = await startApiServer({ ...common, decryptScheduler: new DecryptScheduler({ sliceMs: 1e9, maxConcurrent: 1e6 }) });
        const sliced = await startApiServer({ ...common, decryptScheduler: new DecryptScheduler() });
        const pool = await startApiServer({ ...common, decryptScheduler: new DecryptScheduler({ pool: new DecryptPool(keyring) }) });
        const pub = keyring.publicKeys();
        send({ ports: { before: before.port, sliced: sliced.port, pool: pool.port }, pub: { p256: [...pub.p256], secp256k1: [...pub.secp256k1] } } satisfies Started);
      } else if (m.cmd === 'eld-reset') {
        eld.reset();
        eld.enable();
        send({});
      } else if (m.cmd === 'eld') {
        eld.disable();
        send({ p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 });
      } else setImmediate(() => process.exit(0));
    })();
  });
  process.on('disconnect', () => process.exit(0));
  send({ ready: true });
}

// ---------------------------------------------------------------------------------------------------------------
// The clients

interface Row {
  probeP50: number;
  probeP99: number;
  probes: number;
  eldP99: number;
  eldMax: number;
  valuesPerSec: number;
  busy: number;
  failed: number;
}

// Across phases too: a phase starting again at body 0 would find the last phase's keys in the ECDH cache.
let cursor = 0;

async function phase(child: ChildProcess, port: number, flood: boolean, bodies: string[]): Promise<Row> {
  const origin = `http://127.0.0.1:${port}`;
  const floodPool = new Pool(origin, { connections: CLIENTS });
  const probePool = new Pool(origin, { connections: 1 });
  let decrypted = 0;
  let busy = 0;
  await askChild(child, { cmd: 'eld-reset' });
  const start = performance.now();
  const end = start + ROW_MS;
  let failed = 0; // connections reset: the server held its loop past its own headers/request timeouts
  const floodLoop = async (): Promise<void> => {
    while (performance.now() < end) {
      try {
        const res = await floodPool.request({ path: '/decrypt', method: 'POST', body: bodies[cursor++ % bodies.length]!, headers: { 'content-type': 'application/json' } });
        await res.body.arrayBuffer();
        if (res.statusCode === 200) decrypted += VALUES;
        else if (res.statusCode === 429) busy++;
        else throw new Error(`/decrypt: status ${res.statusCode}`);
      } catch (err) {
        if ((err as { code?: string }).code !== 'ECONNRESET' && (err as { code?: string }).code !== 'UND_ERR_SOCKET') throw err;
        failed++;
      }
    }
  };
  const latencies: number[] = [];
  const probeLoop = async (): Promise<void> => {
    while (performance.now() < end) {
      const t = performance.now();
      try {
        const res = await probePool.request({ path: '/health', method: 'GET' });
        await res.body.arrayBuffer();
        if (res.statusCode !== 200) throw new Error(`/health: status ${res.statusCode}`);
      } catch (err) {
        if ((err as { code?: string }).code !== 'ECONNRESET' && (err as { code?: string }).code !== 'UND_ERR_SOCKET') throw err;
        failed++;
      }
      latencies.push(performance.now() - t);
    }
  };
  await Promise.all([probeLoop(), ...(flood ? Array.from({ length: CLIENTS }, floodLoop) : [])]);
  const elapsed = performance.now() - start;
  const eld = await askChild<{ p99: number; max: number }>(child, { cmd: 'eld' });
  await Promise.all([floodPool.close(), probePool.close()]);
  latencies.sort((a, b) => a - b);
  return {
    probeP50: percentile(latencies, 50),
    probeP99: percentile(latencies, 99),
    probes: latencies.length,
    eldP99: eld.p99,
    eldMax: eld.max,
    valuesPerSec: (decrypted * 1000) / elapsed,
    busy,
    failed,
  };
}

function makeBodies(pub: { p256: Uint8Array; secp256k1: Uint8Array }): string[] {
  return Array.from({ length: BODIES }, (_, b) =>
    JSON.stringify(Array.from({ length: VALUES }, (_, i) => encryptValue(`value ${b}-${i}`, pub, { curve: i % 2 === 0 ? 'p256' : 'secp256k1' }))),
  );
}

/** The longest event-loop stall (ms) and the total time while the decrypt stage handles `body` with `scheduler`. */
async function stageStall(keyring: Keyring, scheduler: DecryptScheduler, body: Buffer): Promise<{ stall: number; total: number; status: number }> {
  const stage = createDecryptStage(keyring, { scheduler });
  await new Promise((r) => setTimeout(r, 50));
  let last = performance.now();
  let stall = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last);
    last = now;
  }, 1);
  const start = performance.now();
  const input = { method: 'POST', url: '/', headers: ['content-type', 'application/json'], body: Readable.from([body]), contentLength: body.length, maxBufferedBodyBytes: 8 << 20, requestId: 'bench' };
  const status = await Promise.resolve(stage(input)).then(
    () => 200,
    (err: { status?: number }) => err.status ?? 500,
  );
  const total = performance.now() - start;
  await new Promise((r) => setTimeout(r, 5));
  clearInterval(tick);
  return { stall: Math.max(stall, performance.now() - last), total, status };
}

async function jsonCheckStall(): Promise<void> {
  const keyring = Keyring.generate();
  const value = encryptValue('4111 1111 1111 1111', keyring.publicKeys());
  const rows: string[] = [];
  for (let i = 0, len = 0; len < (8 << 20) - 4096; i++) {
    const r = JSON.stringify({ id: i, name: `naïve café ${i}`, note: 'plain text, plain text' });
    rows.push(r);
    len += Buffer.byteLength(r) + 1;
  }
  const valid = Buffer.from(`{"v":${JSON.stringify(value)},"rows":[${rows.join(',')}]}`);
  const bodies = { 'valid JSON': valid, 'not JSON (trailing garbage)': Buffer.concat([valid, Buffer.from(' x')]) };
  const pool = new DecryptPool(keyring, { size: 1 });
  const modes = { 'before: check inline': new DecryptScheduler(), 'after: check in the pool': new DecryptScheduler({ pool }) };
  const table: (string | number)[][] = [['body (8 MiB, one ev: value)', 'row', 'status', 'longest stall ms', 'stall vs inline', 'stage ms']];
  try {
    for (const [bodyName, body] of Object.entries(bodies)) {
      const got: Record<string, { stall: number; total: number; status: number }[]> = {};
      for (let r = 0; r < ROUNDS; r++) for (const [name, scheduler] of Object.entries(modes)) (got[name] ??= []).push(await stageStall(keyring, scheduler, body));
      const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const inline = got['before: check inline']!;
      for (const [name, runs] of Object.entries(got)) {
        table.push([bodyName, name, runs[0]!.status, median(runs.map((x) => x.stall)), ratio(median(runs.map((x, i) => x.stall / inline[i]!.stall)), 1), median(runs.map((x) => x.total))]);
      }
    }
  } finally {
    await pool.close();
  }
  printTable(`HTTP decrypt stage, one 8 MiB JSON body with an ev: value: longest event-loop stall (median of ${ROUNDS} interleaved rounds)`, table);
}

export default async function bench(): Promise<void> {
  if (process.env.BENCH_FLOOD_JSON_CHECK_ONLY === '1') return jsonCheckStall();
  const child = fork(SELF, ['--decrypt-flood-server'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  await new Promise((resolve) => child.once('message', resolve));
  try {
    const started = await askChild<Started>(child, { cmd: 'start' });
    const bodies = makeBodies({ p256: Uint8Array.from(started.pub.p256), secp256k1: Uint8Array.from(started.pub.secp256k1) });
    const rows: Record<'none' | Mode, Row[]> = { none: [], before: [], sliced: [], pool: [] };
    for (let r = 0; r < ROUNDS; r++) {
      rows.none.push(await phase(child, started.ports.pool, false, bodies));
      rows.before.push(await phase(child, started.ports.before, true, bodies));
      rows.sliced.push(await phase(child, started.ports.sliced, true, bodies));
      rows.pool.push(await phase(child, started.ports.pool, true, bodies));
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const m = (key: 'none' | Mode, f: (r: Row) => number): number => median(rows[key].map(f));
    const p99Ratio = (key: 'none' | Mode): string => ratio(median(rows[key].map((x, i) => x.probeP99 / rows.none[i]!.probeP99)), 1);
    const table: (string | number)[][] = [['row', 'probe p50 ms', 'probe p99 ms', 'p99 vs no flood', 'probes', 'loop delay p99 ms', 'loop delay max ms', 'flood values/s', '429s', 'resets']];
    const names: Record<'none' | Mode, string> = {
      none: 'no flood',
      before: 'before: one go, no budget',
      sliced: 'after, no pool: 5 ms slices, budget 16',
      pool: `after, runtime default: pool of ${os.availableParallelism()} workers, budget 16`,
    };
    for (const key of ['none', 'before', 'sliced', 'pool'] as const) {
      table.push([
        names[key],
        m(key, (x) => x.probeP50),
        m(key, (x) => x.probeP99),
        key === 'none' ? '1.00×' : p99Ratio(key),
        m(key, (x) => x.probes),
        m(key, (x) => x.eldP99),
        m(key, (x) => x.eldMax),
        key === 'none' ? '' : m(key, (x) => x.valuesPerSec),
        key === 'none' ? '' : m(key, (x) => x.busy),
        m(key, (x) => x.failed),
      ]);
    }
    printTable(
      `ev: decrypt flood: GET /health beside ${CLIENTS} clients posting /decrypt bodies of ${VALUES} distinct-key values (median of ${ROUNDS} interleaved rounds of ${ROW_MS} ms)`,
      table,
    );
    const thr = (key: Mode): string => median(rows[key].map((x, i) => x.valuesPerSec / rows.before[i]!.valuesPerSec)).toFixed(2);
    console.log(`flood throughput vs before: sliced ${thr('sliced')}×, pool ${thr('pool')}×`);
    await jsonCheckStall();
  } finally {
    child.send({ cmd: 'stop' });
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
  }
}

if (process.argv.includes('--decrypt-flood-server')) serverChild();
else if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === SELF) void bench();

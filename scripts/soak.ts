// Soak / load test (not part of CI): N SDK sessions × M requests in flight each, for T seconds, against the
// local stack (`enclave-agent start --json`, spawned here) or a given bridge URL. Every request goes the whole
// way: SDK → WebSocket bridge → agent (Noise, attestation verified at connect) → HTTP pipeline → app.
//
//   npx tsx scripts/soak.ts --sessions 8 --requests 8 --seconds 600
//   npx tsx scripts/soak.ts --url ws://127.0.0.1:8443/ --pcrs .state/pcrs.json --root .state/nsm-simulator/root.pem --pid 1234
//
// The mix: GET / and POST /echo with a small JSON body (checked: status 200, the echo carries the body).
// Reports requests/s, latency p50/p99/p999/max after the warm-up, errors by kind, and the agent's RSS
// (VmRSS of the `start` process, or of --pid) at start, after the warm-up, at its peak and at the end.
// Exit 1 on any error, or when RSS at the end exceeds 1.1 × RSS after the warm-up.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ClientError, connect, type Client } from '../src/client/node.ts';

const HELP = `Usage: npx tsx scripts/soak.ts [--sessions N] [--requests M] [--seconds T] [--warmup S]
                                [--url WS_URL --pcrs FILE|JSON --root FILE [--pid PID]] [--json]
  --sessions N   SDK clients (one attested session each). Default 8.
  --requests M   requests kept in flight per session. Default 8.
  --seconds T    measured duration after the warm-up. Default 60.
  --warmup S     warm-up seconds (not measured; RSS "after warm-up" is taken at its end). Default min(60, T/5).
  --url ...      use a running stack instead of spawning \`enclave-agent start --json\`; give --pcrs and --root,
                 and --pid for RSS figures.
  --json         print the report as one JSON line as well.`;

const { values } = parseArgs({
  options: {
    sessions: { type: 'string', default: '8' },
    requests: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '60' },
    warmup: { type: 'string' },
    url: { type: 'string' },
    pcrs: { type: 'string' },
    root: { type: 'string' },
    pid: { type: 'string' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
const SESSIONS = Number(values.sessions);
const IN_FLIGHT = Number(values.requests);
const SECONDS = Number(values.seconds);
const WARMUP = values.warmup === undefined ? Math.min(60, Math.round(SECONDS / 5)) : Number(values.warmup);
for (const [k, v] of Object.entries({ sessions: SESSIONS, requests: IN_FLIGHT, seconds: SECONDS, warmup: WARMUP })) {
  if (!Number.isFinite(v) || v < 0 || (k !== 'warmup' && v < 1)) {
    console.error(`--${k}: expected a positive number, found ${String(v)}\n${HELP}`);
    process.exit(2);
  }
}

const REPO = path.resolve(import.meta.dirname, '..');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---- the stack ------------------------------------------------------------------------------------------

interface Target {
  url: string;
  pcrs: { PCR0: string; PCR1: string; PCR2: string };
  rootPem: string;
  pid: number | undefined;
  stop(): Promise<void>;
}

function pemOf(text: string): string {
  return text.startsWith('-----BEGIN') ? text : readFileSync(text, 'utf8');
}

async function spawnStart(): Promise<Target> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-soak-'));
  const child: ChildProcess = spawn(
    process.execPath,
    [path.join(REPO, 'bin/enclave-agent.js'), 'start', '--json', '--state-dir', path.join(dir, 'state'), '--bridge-port', '0', '--agent-port', '0', '--app-port', '0', '--api-port', '0'],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // stderr carries the warn-level log and one transaction record per request: keep it drained.
  let stderrTail = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (c: string) => (stderrTail = (stderrTail + c).slice(-4000)));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const line = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (c: string) => {
      buf += c;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(buf.slice(0, nl));
    });
    void exited.then((code) => reject(new Error(`enclave-agent start exited (${String(code)}) before its --json line; stderr: ${stderrTail}`)));
    setTimeout(() => reject(new Error('enclave-agent start: no --json line within 60 s')), 60_000).unref();
  });
  const info = JSON.parse(line) as { bridgeUrl: string; rootPem: string; pcrs: { PCR0: string; PCR1: string; PCR2: string } };
  return {
    url: info.bridgeUrl,
    pcrs: { PCR0: info.pcrs.PCR0, PCR1: info.pcrs.PCR1, PCR2: info.pcrs.PCR2 },
    rootPem: pemOf(info.rootPem),
    pid: child.pid,
    async stop() {
      child.kill('SIGTERM');
      const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout' as const)]);
      if (code === 'timeout') child.kill('SIGKILL');
      else if (code !== 0) console.error(`enclave-agent start exited with ${String(code)}; stderr tail:\n${stderrTail}`);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function givenTarget(): Target {
  if (values.pcrs === undefined || values.root === undefined) {
    console.error('--url needs --pcrs (file or JSON) and --root (PEM file)');
    process.exit(2);
  }
  const pcrsText = existsSync(values.pcrs) ? readFileSync(values.pcrs, 'utf8') : values.pcrs;
  const p = JSON.parse(pcrsText) as Record<string, string>;
  return {
    url: values.url!,
    pcrs: { PCR0: p.PCR0!, PCR1: p.PCR1!, PCR2: p.PCR2! },
    rootPem: pemOf(values.root),
    pid: values.pid === undefined ? undefined : Number(values.pid),
    stop: async () => {},
  };
}

// ---- measurement ----------------------------------------------------------------------------------------

function rssKiB(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Latencies (ms) in growable Float32 chunks: ~4 bytes per request. */
class Samples {
  #chunks: Float32Array[] = [new Float32Array(1 << 16)];
  #n = 0;
  add(v: number): void {
    let last = this.#chunks[this.#chunks.length - 1]!;
    const off = this.#n - (this.#chunks.length - 1) * (1 << 16);
    if (off === last.length) {
      last = new Float32Array(1 << 16);
      this.#chunks.push(last);
      last[0] = v;
    } else last[off] = v;
    this.#n++;
  }
  get count(): number {
    return this.#n;
  }
  sorted(): Float32Array {
    const all = new Float32Array(this.#n);
    let at = 0;
    for (const c of this.#chunks) {
      const take = Math.min(c.length, this.#n - at);
      all.set(c.subarray(0, take), at);
      at += take;
    }
    return all.sort();
  }
}

const quantile = (s: Float32Array, q: number): number => (s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(q * s.length))]!);

// ---- load ----------------------------------------------------------------------------------------------

const errors = new Map<string, number>();
const samples = new Samples();
let measuring = false;
let stopping = false;
let measuredOk = 0;
let totalOk = 0;

function fail(kind: string): void {
  errors.set(kind, (errors.get(kind) ?? 0) + 1);
}

async function worker(client: Client, s: number, w: number): Promise<void> {
  let n = 0;
  while (!stopping) {
    n++;
    const t0 = performance.now();
    try {
      if (n % 2 === 0) {
        const res = await client.fetch('/');
        const text = await res.text();
        if (res.status !== 200) fail(`GET / status ${res.status}`);
        else if (!text.includes('Hello')) fail('GET / unexpected body');
        else totalOk++;
      } else {
        const body = JSON.stringify({ session: s, worker: w, n, note: 'soak' });
        const res = await client.fetch('/echo', { method: 'POST', body, headers: { 'content-type': 'application/json' } });
        const got = (await res.json()) as { body?: string };
        if (res.status !== 200) fail(`POST /echo status ${res.status}`);
        else if (got.body !== body) fail('POST /echo body mismatch');
        else totalOk++;
      }
      if (measuring) {
        samples.add(performance.now() - t0);
        measuredOk++;
      }
    } catch (err) {
      fail(err instanceof ClientError ? err.code : `exception ${(err as Error).name}`);
      await sleep(50);
    }
  }
}

async function main(): Promise<void> {
  const target = values.url === undefined ? await spawnStart() : givenTarget();
  const rss = { start: rssKiB(target.pid), afterWarmup: null as number | null, peak: rssKiB(target.pid) ?? 0, end: null as number | null };
  const sampler = setInterval(() => {
    const r = rssKiB(target.pid);
    if (r !== null && r > rss.peak) rss.peak = r;
  }, 1000);
  let clients: Client[] = [];
  let code = 0;
  try {
    clients = await Promise.all(Array.from({ length: SESSIONS }, () => connect(target.url, { pcrs: target.pcrs, roots: [target.rootPem], requestTimeoutMs: 30_000 })));
    console.error(`soak: ${SESSIONS} sessions × ${IN_FLIGHT} in flight against ${target.url}; warm-up ${WARMUP} s, then ${SECONDS} s measured`);
    const workers = clients.flatMap((c, s) => Array.from({ length: IN_FLIGHT }, (_, w) => worker(c, s, w)));
    await sleep(WARMUP * 1000);
    rss.afterWarmup = rssKiB(target.pid);
    measuring = true;
    const t0 = performance.now();
    const progress = setInterval(() => {
      const el = (performance.now() - t0) / 1000;
      console.error(`  ${el.toFixed(0)} s: ${measuredOk} ok (${(measuredOk / el).toFixed(0)} req/s), ${[...errors.values()].reduce((a, b) => a + b, 0)} errors, RSS ${rssKiB(target.pid) ?? '?'} KiB`);
    }, 30_000);
    await sleep(SECONDS * 1000);
    measuring = false;
    const elapsed = (performance.now() - t0) / 1000;
    clearInterval(progress);
    stopping = true;
    await Promise.all(workers);
    rss.end = rssKiB(target.pid);

    const s = samples.sorted();
    const errorCount = [...errors.values()].reduce((a, b) => a + b, 0);
    const report = {
      sessions: SESSIONS,
      inFlightPerSession: IN_FLIGHT,
      warmupSeconds: WARMUP,
      seconds: Math.round(elapsed),
      requests: measuredOk,
      requestsIncludingWarmup: totalOk,
      requestsPerSecond: Math.round(measuredOk / elapsed),
      latencyMs: { p50: round(quantile(s, 0.5)), p99: round(quantile(s, 0.99)), p999: round(quantile(s, 0.999)), max: round(s[s.length - 1] ?? NaN) },
      errors: Object.fromEntries(errors),
      errorCount,
      rssKiB: rss,
      rssEndOverWarmup: rss.end !== null && rss.afterWarmup !== null ? round(rss.end / rss.afterWarmup, 3) : null,
    };
    printReport(report);
    if (values.json) console.log(JSON.stringify(report));
    if (errorCount > 0) {
      console.error(`FAIL: ${errorCount} errors`);
      code = 1;
    }
    if (rss.end !== null && rss.afterWarmup !== null && rss.end > 1.1 * rss.afterWarmup) {
      console.error(`FAIL: RSS at the end (${rss.end} KiB) > 1.1 × RSS after the warm-up (${rss.afterWarmup} KiB)`);
      code = 1;
    }
  } finally {
    clearInterval(sampler);
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await target.stop();
  }
  process.exit(code);
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

function printReport(r: {
  requests: number;
  requestsPerSecond: number;
  seconds: number;
  latencyMs: Record<string, number>;
  errorCount: number;
  errors: Record<string, number>;
  rssKiB: { start: number | null; afterWarmup: number | null; peak: number; end: number | null };
  rssEndOverWarmup: number | null;
}): void {
  const mib = (k: number | null): string => (k === null ? '?' : `${(k / 1024).toFixed(1)} MiB`);
  const rows: [string, string][] = [
    ['load', `${SESSIONS} sessions × ${IN_FLIGHT} in flight, ${WARMUP} s warm-up + ${r.seconds} s measured`],
    ['requests', `${r.requests} ok (${r.requestsPerSecond} req/s)`],
    ['latency', `p50 ${r.latencyMs.p50} ms · p99 ${r.latencyMs.p99} ms · p999 ${r.latencyMs.p999} ms · max ${r.latencyMs.max} ms`],
    ['errors', r.errorCount === 0 ? '0' : `${r.errorCount} ${JSON.stringify(r.errors)}`],
    ['agent RSS', `start ${mib(r.rssKiB.start)} · after warm-up ${mib(r.rssKiB.afterWarmup)} · peak ${mib(r.rssKiB.peak)} · end ${mib(r.rssKiB.end)} (end/warm-up ${r.rssEndOverWarmup ?? '?'})`],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
}

await main();

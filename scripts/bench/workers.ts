// Session workers: `[limits] workers = N` (the public channel's sessions sharded across N threads) against
// workers = 1 (sessions on the main thread), in HTTP mode, in interleaved rounds of the same run.
//
// WHAT A 2-vCPU VM SHARED BY THE LOAD GENERATOR, THE APP AND THE AGENT CAN AND CANNOT SHOW
//   It cannot show scaling. Every request the agent serves also costs the load generator (a Noise initiator:
//   frame, seal, open) and the app CPU on the same two cores: with workers = 1 the three processes can already
//   keep both cores busy (check: the "cores busy" columns add up to ~2), and then a second session thread finds
//   no idle core. A workers=2 ÷ workers=1 throughput ratio near 1 (or below) on such a machine says nothing about
//   an enclave, whose vCPUs run the agent and the app only, with the load coming from outside.
//   It can show: that sharded sessions carry real load end to end (every request checked for `200`); what the
//   sharding costs per request and per handshake (agent CPU µs per request, all threads: the hand-off, the
//   cross-thread trx log and metrics — the figure that moves least with other load); and what each worker
//   thread costs in memory at rest (RSS of a fresh process).
// HOW TO MEASURE SCALING
//   - On a bigger Linux host, emulate an enclave's dedicated vCPUs: pin the agent to its own cores and give the
//     load generators and the app the others, e.g. on 8 cores
//       BENCH_WORKERS_AGENT_CPUS=0-1 BENCH_WORKERS_LOAD_CPUS=2-7 BENCH_WORKERS_CLIENTS=3 npm run bench -- workers
//     and check that the load side is not saturated (its "cores busy" below its core count).
//   - On a real enclave (2–8 vCPUs): run the image with `[limits] workers = 1`, then unset (= the enclave's CPU
//     count); drive it from the parent instance through the bridge with enough client processes (this bench's
//     generator only reaches an agent it started itself: use the SDK's client), and compare requests/s. CPU per
//     request is the ops port's `process_cpu_seconds_total` (all threads), scraped before and after each run,
//     divided by the requests.
//
// Processes:  agent ×K   `enclave-agent run` from the Docker layer's bundle (agent-bundle.ts: build-bundle.mjs,
//                        the launcher's node flags), one per workers value, --listen tcp:0,0 --nsm simulator,
//                        HTTP mode, tls_termination = true for the rows (the TLS row), off for the at-rest
//                        figure (the default configuration, its own fresh agents), trx log on (stdout to a temp file, emptied after every row), `sleep` as its
//                        supervised app; its CPU from lib.ts procCpuUs (every thread)
//             app        anchors.ts's app child (node:http, GET → 11-byte JSON, keep-alive), shared by all agents
//             clients    BENCH_WORKERS_CLIENTS load generators (children of this file; default 1). In children so
//                        that this process only orchestrates and reads /proc, and so that more than one thread of
//                        load can be had where there are cores for it (one client thread saturates at about one
//                        agent core's worth of requests). On this VM one: another would take the agent's core.
// Rows (each BENCH_WORKERS_MS of closed-loop load after its own warm-up, and after one unmeasured pass of every
// row against every agent, for the JIT; agents in alternating order per round):
//   requests    S Noise sessions (BENCH_WORKERS_SESSIONS, default 8 and 64), each with c Data requests in flight
//               (small GET, as the SDK sends it; anchors.ts agentClient)
//   handshakes  connect + Noise handshake + RequestAttestation (NSM simulator), closed loop, c = 16
//   tls         HTTPS small GET through TLS ingress: BENCH_WORKERS_TLS_C keep-alive connections (default 64), one
//               request in flight each (undici Pool; handshakes happen before the measured window)
//   rest        VmRSS of each agent, fresh, BENCH_WORKERS_IDLE_MS after "runtime started" (V8's idle GCs done)
// Ratios are medians of per-round ratios against workers = 1, with their spread (min–max).
// Run: npm run bench -- workers [--json]. Env: BENCH_WORKERS_MS (row, default 1000), BENCH_WORKERS_ROUNDS
// (default 7), BENCH_WORKERS_LIST (default 1,2,4), BENCH_WORKERS_SESSIONS (8,64), BENCH_WORKERS_C (in flight
// per session, 8), BENCH_WORKERS_HANDSHAKE_C (16), BENCH_WORKERS_CLIENTS (1), BENCH_WORKERS_IDLE_MS (20000),
// BENCH_WORKERS_TLS_C (64), BENCH_WORKERS_AGENT_CPUS / BENCH_WORKERS_LOAD_CPUS (taskset CPU lists for the agents / the clients and app),
// BENCH_WORKERS_CLI (a cli.js already built by `npm run build:bundle -- DIR/cli.js`, e.g. another revision's,
// instead of building this checkout's).
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, truncateSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { buildCliBundle, shippedLaunch, statusKiB } from './agent-bundle.ts';
import { agentClient } from './anchors.ts';
import { askChild, closedLoop, formatSpread, jsonMode, loadAverage, machine, printTable, procCpuSource, procCpuUs, serveChild, spreadOf, type BenchRow } from './lib.ts';
import { attestedSessionsPerSec } from './responder.ts';

const SELF = fileURLToPath(import.meta.url);
const HERE = path.dirname(SELF);
const ROW_MS = Number(process.env.BENCH_WORKERS_MS ?? 1000);
const ROUNDS = Math.max(1, Number(process.env.BENCH_WORKERS_ROUNDS ?? 7));
const WORKERS = (process.env.BENCH_WORKERS_LIST ?? '1,2,4').split(',').map(Number);
const SESSIONS = (process.env.BENCH_WORKERS_SESSIONS ?? '8,64').split(',').map(Number);
const IN_FLIGHT = Number(process.env.BENCH_WORKERS_C ?? 8);
const HANDSHAKE_C = Number(process.env.BENCH_WORKERS_HANDSHAKE_C ?? 16);
const TLS_C = Number(process.env.BENCH_WORKERS_TLS_C ?? 64);
const CLIENTS = Math.max(1, Number(process.env.BENCH_WORKERS_CLIENTS ?? 1));
const IDLE_MS = Number(process.env.BENCH_WORKERS_IDLE_MS ?? 20_000);
const AGENT_CPUS = process.env.BENCH_WORKERS_AGENT_CPUS;
const LOAD_CPUS = process.env.BENCH_WORKERS_LOAD_CPUS;
const WARMUP_MS = 300;
const MiB = 2 ** 20;

// ---------------------------------------------------------------------------------------------------------------
// A load generator (child of this file): `open` connects and warms up, `run` is the measured closed loop.

type Job =
  | { job: 'open'; kind: 'requests'; port: number; sessions: number; c: number }
  | { job: 'open'; kind: 'handshakes'; port: number; c: number }
  | { job: 'open'; kind: 'tls'; port: number; c: number }
  | { job: 'run'; ms: number }
  | { job: 'close' };
interface RunReply {
  done: number;
  ms: number;
  cpuUs: number;
}

function clientChild(): void {
  let sessions: Awaited<ReturnType<typeof agentClient>>[] = [];
  let pool: Pool | null = null;
  let loop: ((ms: number) => Promise<number>) | null = null;
  const smallGet = async (p: Pool): Promise<void> => {
    const res = await p.request({ path: '/small', method: 'GET', headers: { host: 'localhost' } });
    await res.body.arrayBuffer();
    if (res.statusCode !== 200) throw new Error(`HTTPS status ${res.statusCode}`);
  };
  serveChild<Job>((m) => job(m).catch((e: unknown) => ({ error: String(e) })));
  async function job(m: Job): Promise<object> {
    if (m.job === 'open' && m.kind === 'requests') {
      sessions = await Promise.all(Array.from({ length: m.sessions }, () => agentClient(m.port)));
      loop = async (ms) => (await Promise.all(sessions.map((s) => closedLoop(ms, m.c, () => s.request())))).reduce((a, b) => a + b, 0);
      await loop(WARMUP_MS);
    } else if (m.job === 'open' && m.kind === 'tls') {
      const p = (pool = new Pool(`https://127.0.0.1:${m.port}`, { connections: m.c, pipelining: 1, keepAliveTimeout: 600_000, connect: { rejectUnauthorized: false, servername: 'localhost' } }));
      // Every connection handshaken and answering before the measured window.
      await Promise.all(Array.from({ length: m.c }, async () => { for (let i = 0; i < 3; i++) await smallGet(p); }));
      loop = (ms) => closedLoop(ms, m.c, () => smallGet(p));
      await loop(WARMUP_MS);
    } else if (m.job === 'open') {
      loop = async (ms) => {
        const t0 = performance.now();
        return Math.round(((await attestedSessionsPerSec(m.port, ms, m.c)) * (performance.now() - t0)) / 1000);
      };
      await loop(WARMUP_MS);
    } else if (m.job === 'run') {
      const u0 = process.cpuUsage();
      const t0 = performance.now();
      const done = await loop!(m.ms);
      const ms = performance.now() - t0;
      const u = process.cpuUsage(u0);
      return { done, ms, cpuUs: u.user + u.system } satisfies RunReply;
    } else {
      await Promise.all(sessions.map((s) => s.close()));
      await pool?.close();
      pool = null;
      sessions = [];
      loop = null;
    }
    return {};
  }
}

/** askChild, but a client's failure (a request that did not get its 200, a session gone) or silence throws. */
async function ask<T>(child: ChildProcess, msg: Job, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const reply = await Promise.race([
    askChild<T | { error: string }>(child, { cmd: 'start', ...msg }),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`load generator: no answer to ${msg.job} within ${timeoutMs} ms`)), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
  if (typeof reply === 'object' && reply !== null && 'error' in reply) throw new Error(`load generator, ${msg.job}: ${reply.error}`);
  return reply as T;
}

// ---------------------------------------------------------------------------------------------------------------
// The agents

interface AgentProc {
  workers: number;
  child: ChildProcess;
  pid: number;
  port: number;
  tlsPort: number;
  log: string;
}

const pin = (pid: number, cpus: string | undefined): void => {
  if (cpus !== undefined) execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
};

async function startAgent(cli: string, dir: string, workers: number, appPort: number, tls: boolean): Promise<AgentProc> {
  const name = `${workers}${tls ? '-tls' : ''}`;
  const config = path.join(dir, `enclave-${name}.toml`);
  await writeFile(
    config,
    [
      'mode = "http"',
      `tls_termination = ${tls}`,
      '[app]',
      `port = ${appPort}`,
      '[api]',
      'enabled = false',
      '[listen]',
      'drain_timeout_ms = 1000',
      // Every client connects from 127.0.0.1: the per-client limit would stop the 64-session rows.
      '[limits]',
      `workers = ${workers}`,
      'max_sessions_per_client = 100000',
      '',
    ].join('\n'),
  );
  const { flags, env } = await shippedLaunch();
  const log = path.join(dir, `agent-${name}.log`);
  const fd = openSync(log, 'a'); // O_APPEND: the file can be emptied under the agent's writes
  const args = [...flags, cli, 'run', '--config', config, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, `state-${name}`), '--', 'sleep', '86400'];
  const child = spawn(process.execPath, args, { cwd: dir, env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const started = Date.now();
  for (;;) {
    const line = readFileSync(log, 'utf8')
      .split('\n')
      .find((l) => l.includes('"runtime started"'));
    if (line !== undefined) {
      const started = JSON.parse(line) as { public: string; tls: string | null };
      const port = Number(/:(\d+)$/.exec(started.public)?.[1]);
      const tlsPort = tls ? Number(/:(\d+)$/.exec(started.tls ?? '')?.[1]) : 0;
      if (!Number.isInteger(port) || !Number.isInteger(tlsPort)) throw new Error(`workers = ${workers}: no public or TLS port in ${line}`);
      pin(child.pid!, AGENT_CPUS);
      return { workers, child, pid: child.pid!, port, tlsPort, log };
    }
    if (child.exitCode !== null || Date.now() - started > 60_000) {
      child.kill('SIGKILL');
      throw new Error(`workers = ${workers}: the agent did not start: ${readFileSync(log, 'utf8').slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopAgent(a: AgentProc): Promise<void> {
  if (a.child.exitCode !== null || a.child.signalCode !== null) return;
  const exited = new Promise((r) => a.child.once('exit', r));
  a.child.kill('SIGTERM');
  const force = setTimeout(() => a.child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(force);
}

// ---------------------------------------------------------------------------------------------------------------
// One row

interface Sample {
  /** Requests (or handshakes) per second, all clients together. */
  rate: number;
  agentUsPerOp: number;
  /** CPU time ÷ wall time over the row: how many cores each side kept busy. */
  agentCores: number;
  clientCores: number;
  appCores: number;
}

type Open = Extract<Job, { job: 'open' }>;

async function sample(agent: AgentProc, clients: ChildProcess[], appPid: number, open: (a: AgentProc, i: number) => Open, ms = ROW_MS): Promise<Sample> {
  const limit = ms + 60_000;
  await Promise.all(clients.map((c, i) => ask(c, open(agent, i), limit)));
  const [a0, p0, t0] = [procCpuUs(agent.pid), procCpuUs(appPid), performance.now()];
  const runs = await Promise.all(clients.map((c) => ask<RunReply>(c, { job: 'run', ms }, limit)));
  const [a1, p1, wallUs] = [procCpuUs(agent.pid), procCpuUs(appPid), (performance.now() - t0) * 1000];
  await Promise.all(clients.map((c) => ask(c, { job: 'close' }, limit)));
  truncateSync(agent.log, 0);
  const done = runs.reduce((s, r) => s + r.done, 0);
  if (done === 0) throw new Error(`workers = ${agent.workers}: nothing completed in ${ms} ms`);
  return {
    rate: runs.reduce((s, r) => s + (r.done * 1000) / r.ms, 0),
    agentUsPerOp: (a1 - a0) / done,
    agentCores: (a1 - a0) / wallUs,
    clientCores: runs.reduce((s, r) => s + r.cpuUs, 0) / wallUs,
    appCores: (p1 - p0) / wallUs,
  };
}

/** `n` split over the clients as evenly as can be (client i's share). */
const share = (n: number, i: number): number => Math.floor(n / CLIENTS) + (i < n % CLIENTS ? 1 : 0);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f1 = (x: number): string => x.toFixed(1);
const f2 = (x: number): string => x.toFixed(2);

/** One table: a row per workers value, figures and their per-round ratios to workers = 1. */
function report(title: string, unit: string, what: string, agents: AgentProc[], res: Map<AgentProc, Sample[]>): void {
  const base = res.get(agents[0]!)!;
  const table: (string | number)[][] = [['workers', `${unit}/s`, 'vs workers=1 (spread)', `agent CPU µs/${unit} (spread)`, 'vs workers=1 (spread)', 'agent cores busy', 'clients cores', 'app cores']];
  const json: BenchRow[] = [];
  for (const a of agents) {
    const s = res.get(a)!;
    const isBase = a === agents[0];
    const rate = s.map((x, i) => x.rate / base[i]!.rate);
    const cpu = s.map((x) => x.agentUsPerOp);
    const cpuRatio = s.map((x, i) => x.agentUsPerOp / base[i]!.agentUsPerOp);
    table.push([
      String(a.workers),
      median(s.map((x) => x.rate)),
      isBase ? 'baseline' : `${f2(median(rate))}× (${formatSpread(spreadOf(rate))})`,
      `${f1(median(cpu))} (${formatSpread(spreadOf(cpu), 1)})`,
      isBase ? 'baseline' : `${f2(median(cpuRatio))}× (${formatSpread(spreadOf(cpuRatio))})`,
      f2(median(s.map((x) => x.agentCores))),
      f2(median(s.map((x) => x.clientCores))),
      f2(median(s.map((x) => x.appCores))),
    ]);
    const name = `${what}, workers=${a.workers}`;
    const baseRate = median(base.map((x) => x.rate));
    const baseCpu = median(base.map((x) => x.agentUsPerOp));
    json.push(
      isBase
        ? { name: `${name}: throughput`, figure: median(s.map((x) => x.rate)), unit: `${unit}/s`, rounds: ROUNDS, spread: spreadOf(s.map((x) => x.rate)) }
        : { name: `${name}: throughput`, figure: median(s.map((x) => x.rate)), unit: `${unit}/s`, baseline: baseRate, ratio: median(rate), rounds: ROUNDS, spread: spreadOf(rate) },
      isBase
        ? { name: `${name}: agent CPU per ${unit}`, figure: median(cpu), unit: 'µs', rounds: ROUNDS, spread: spreadOf(cpu) }
        : { name: `${name}: agent CPU per ${unit}`, figure: median(cpu), unit: 'µs', baseline: baseCpu, ratio: median(cpuRatio), rounds: ROUNDS, spread: spreadOf(cpuRatio) },
      { name: `${name}: agent cores busy`, figure: median(s.map((x) => x.agentCores)), unit: 'cores', rounds: ROUNDS, spread: spreadOf(s.map((x) => x.agentCores)) },
    );
  }
  printTable(title, table, json);
}

export default async function bench(): Promise<void> {
  if (WORKERS[0] !== 1) throw new Error('BENCH_WORKERS_LIST must start with 1 (the baseline)');
  const where = `${machine()}, os.availableParallelism() ${os.availableParallelism()}${AGENT_CPUS === undefined ? '' : `, agent on CPUs ${AGENT_CPUS}`}${LOAD_CPUS === undefined ? '' : `, clients and app on CPUs ${LOAD_CPUS}`}`;
  (jsonMode() ? console.error : console.log)(`# workers: ${where}; ${CLIENTS} load generator process(es); load average ${loadAverage()}`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-workers-'));
  const agents: AgentProc[] = [];
  const children: ChildProcess[] = [];
  try {
    const cli = process.env.BENCH_WORKERS_CLI ?? (await buildCliBundle(dir));
    const app = fork(path.join(HERE, 'anchors.ts'), ['--anchors-app'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.push(app);
    const { httpPort } = await new Promise<{ httpPort: number }>((r) => app.once('message', (m) => r(m as { httpPort: number })));
    pin(app.pid!, LOAD_CPUS);
    // At rest: fresh processes in the default configuration (no TLS ingress), nothing served yet, after V8's
    // idle-time GCs; stopped before the measured agents start.
    const resting: AgentProc[] = [];
    try {
      for (const n of WORKERS) resting.push(await startAgent(cli, dir, n, httpPort, false));
      await new Promise((r) => setTimeout(r, IDLE_MS));
    } finally {
      agents.push(...resting); // stopped with the rest if reading them fails
    }
    const rest = await Promise.all(
      resting.map(async (a) => {
        const status = await readFile(`/proc/${a.pid}/status`, 'utf8');
        return { rss: statusKiB(a.pid, 'VmRSS', status), anon: statusKiB(a.pid, 'RssAnon', status), threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1]) };
      }),
    );
    await Promise.all(resting.map(stopAgent));
    agents.length = 0;
    for (const n of WORKERS) agents.push(await startAgent(cli, dir, n, httpPort, true));
    for (let i = 0; i < CLIENTS; i++) {
      const c = fork(SELF, ['--workers-client'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      children.push(c);
      await new Promise((r) => c.once('message', r)); // { ready }
      pin(c.pid!, LOAD_CPUS);
    }
    const clients = children.slice(1);

    const rows: { what: string; unit: string; title: string; open: (a: AgentProc, i: number) => Open }[] = [
      ...SESSIONS.map((s) => ({
        what: `${s} sessions × ${IN_FLIGHT} in flight`,
        unit: 'req',
        title: `Data requests (small GET → app), ${s} Noise sessions × ${IN_FLIGHT} in flight each`,
        open: (a: AgentProc, i: number): Open => ({ job: 'open', kind: 'requests', port: a.port, sessions: share(s, i), c: IN_FLIGHT }),
      })),
      {
        what: `handshakes, c=${HANDSHAKE_C}`,
        unit: 'handshake',
        title: `new sessions (connect + Noise handshake + attestation, NSM simulator), closed loop, c=${HANDSHAKE_C}`,
        open: (a: AgentProc, i: number): Open => ({ job: 'open', kind: 'handshakes', port: a.port, c: Math.max(1, share(HANDSHAKE_C, i)) }),
      },
      {
        what: `TLS small GET, c=${TLS_C}`,
        unit: 'req',
        title: `HTTPS requests (TLS ingress, small GET → app), ${TLS_C} keep-alive connections, one request in flight each`,
        open: (a: AgentProc, i: number): Open => ({ job: 'open', kind: 'tls', port: a.tlsPort, c: Math.max(1, share(TLS_C, i)) }),
      },
    ];
    // A fresh agent runs its first thousands of requests unoptimised: one unmeasured pass of every row first.
    for (const row of rows) for (const a of agents) await sample(a, clients, app.pid!, row.open, Math.max(ROW_MS, 1000));
    for (const row of rows) {
      const load0 = loadAverage();
      const res = new Map<AgentProc, Sample[]>(agents.map((a) => [a, []]));
      for (let r = 0; r < ROUNDS; r++) {
        // Alternate the order: no configuration always runs right after another's load.
        for (const a of r % 2 === 0 ? agents : [...agents].reverse()) res.get(a)!.push(await sample(a, clients, app.pid!, row.open));
      }
      report(
        `workers: ${row.title}; median of ${ROUNDS} interleaved rounds of ${ROW_MS} ms; agent CPU (all threads) from ${procCpuSource}; ${where}; load average ${load0} → ${loadAverage()}`,
        row.unit,
        row.what,
        agents,
        res,
      );
    }

    const b = rest[0]!;
    printTable(
      `workers: agent at rest, fresh \`enclave-agent run\` (bundle, HTTP mode, TCP listeners, NSM simulator), VmRSS ${IDLE_MS / 1000} s after "runtime started", before any session (session threads start on demand: the responder bench's base-RSS row reads it again once they ran); one process each; load average ${loadAverage()}`,
      [
        ['workers', 'RSS MiB', 'vs workers=1 MiB', 'anonymous MiB', 'threads'],
        ...agents.map((a, i) => [String(a.workers), rest[i]!.rss / MiB, i === 0 ? '' : `+${f1((rest[i]!.rss - b.rss) / MiB)}`, rest[i]!.anon / MiB, String(rest[i]!.threads)]),
      ],
      agents.map((a, i) => ({ name: `at rest, workers=${a.workers}: RSS`, figure: rest[i]!.rss / MiB, unit: 'MiB', ...(i === 0 ? {} : { baseline: b.rss / MiB, ratio: rest[i]!.rss / b.rss }), rounds: 1 })),
    );
  } finally {
    await Promise.all(agents.map(stopAgent));
    for (const c of children) if (c.connected) c.send({ cmd: 'stop' });
    for (const c of children) if (c.connected) c.disconnect(); // the app child exits on disconnect
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--workers-client')) clientChild();

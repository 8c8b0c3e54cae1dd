// TLS ingress: small-GET requests/s at concurrency 64 and added p50 at concurrency 1 through the agent's TLS
// termination (src/ingress/, the HTTP pipeline behind it), against direct keep-alive HTTP to the app and against
// nginx (Debian's) terminating TLS in front of the same app — the tool a user would otherwise pick; and full TLS
// handshakes/s (no resumption) against each TLS server. All measured in one run, rows interleaved in rounds.
//
// Process layout:
//   this process   the clients: undici keep-alive Pools (rejectUnauthorized off: the agent's certificate is
//                  attested, not CA-signed), and a closed loop of tls.connect for handshakes
//   app child      node:http answering GET /small with an 11-byte JSON body (keep-alive)
//   agent child    the NSM simulator, createHttpForwarder as the runtime configures it (ev: decrypt stage on,
//                  transaction records written to /dev/null through the file sink), AttestedIdentity +
//                  startTlsIngress twice: on TCP loopback, and on the addon's AF_UNIX stream (the code path of
//                  vsock in `run`: Node's TLSSocket over a JS stream instead of a native handle)
//   nginx          one worker, TLS 1.3 only, ECDSA P-384 self-signed certificate (same curve as the agent's),
//                  keep-alive upstream to the app, access log off; config, pid and error log in a temp dir
// The agent's certificate carries the attestation document (~9.5 KB of hex in a SAN), so every full handshake
// sends ~5 KB more than nginx's: that is part of what is measured.
// Targets (issue 18): agent req/s at c=64 ≥ 0.8× nginx's; full handshakes/s ≥ 0.5× nginx's.
// Env: BENCH_TLS_MS (per row, default 800), BENCH_TLS_ROUNDS (default 5), BENCH_TLS_HS_CONCURRENCY (default 8),
// BENCH_TLS_SINK=stream (transaction records through the vsock log sink's code over AF_UNIX, not to /dev/null),
// BENCH_TLS_PROFILE=<dir> (a CPU profile of the agent process), BENCH_PERF_MAP=1 (the agent child writes
// /tmp/perf-<pid>.map, so `perf record -g -p <pid>` names JS frames: V8's profiler samples wall-clock time and
// charges a write that wakes another process with the time spent preempted; perf counts only on-CPU time).
// Run: npx tsx scripts/bench/run.ts tls-ingress   (nginx must be installed; run as root or with a writable temp dir)
import { execFileSync, fork, spawn as spawnProcess, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import type { LogSink } from '../../src/http/log-sink.ts';
import type { createRuntimeLogs } from '../../src/runtime/logs.ts';
import { askChild, childPids, closedLoop, closedLoopPerSec, machine, procCpuUs, percentile, printTable, ratio, serveChild, startSmallJsonApp } from './lib.ts';

const SELF = fileURLToPath(import.meta.url);
const ROW_MS = Number(process.env.BENCH_TLS_MS ?? 800);
const ROUNDS = Number(process.env.BENCH_TLS_ROUNDS ?? 5);
const HS_CONCURRENCY = Number(process.env.BENCH_TLS_HS_CONCURRENCY ?? 8);
const WARMUP_MS = 200;



function appChild(): void {
  serveChild(startSmallJsonApp);
}

function agentChild(): void {
  serveChild<{ appPort?: number }>(async ({ appPort }) => {
    const pino = (await import('pino')).default;
    const { createNsmSimulator } = await import('../../src/attestation/simulator.ts');
    const { createHttpForwarder } = await import('../../src/http/forwarder.ts');
    const { createRuntimeLogs } = await import('../../src/runtime/logs.ts');
    const { createDecryptStage } = await import('../../src/http/stages/decrypt-ev.ts');
    const { devKeySource, loadKeyring } = await import('../../src/crypto/keyring.ts');
    const { AttestedIdentity } = await import('../../src/ingress/attested-identity.ts');
    const { startTlsIngress } = await import('../../src/ingress/tls-ingress.ts');
    const { listenTcp } = await import('../../src/transport/tcp.ts');
    const { listenUnixNative } = await import('../../src/transport/unix-native.ts');
    const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bench-tls-nsm-'));
    const keyring = await loadKeyring(devKeySource(stateDir));
    const sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'bench', app: 'bench', config: 'bench' } });
    const silent = pino({ level: 'silent' });
    const forwarder = createHttpForwarder({
      appPort: appPort!,
      logger: silent,
      decrypt: createDecryptStage(keyring),
      logSink: await trxSink(createRuntimeLogs, stateDir),
    });
    const identity = new AttestedIdentity({ nsm: sim });
    const common = { identity, attach: forwarder.attach.bind(forwarder), maxPendingHandshakes: 4096, logger: silent };
    const ingress = await startTlsIngress({ ...common, listen: (o) => listenTcp({ host: '127.0.0.1', port: 0 }, o) });
    // The vsock code path: the addon's stream (NativeStream) under Node's TLSSocket, over AF_UNIX here.
    const socketPath = path.join(stateDir, 'tls.sock');
    await startTlsIngress({ ...common, listen: (o) => listenUnixNative(socketPath, o) });
    return { port: ingress.port, socketPath };
  });
}

type CreateRuntimeLogs = typeof createRuntimeLogs;

/**
 * The transaction records' sink: the file sink to /dev/null, or with BENCH_TLS_SINK=stream what `run` uses in an
 * enclave with [log] sink = "vsock" (the reconnecting stream sink), over AF_UNIX to a reader that discards.
 */
async function trxSink(createRuntimeLogs: CreateRuntimeLogs, dir: string): Promise<LogSink> {
  if (process.env.BENCH_TLS_SINK !== 'stream') return createRuntimeLogs({ level: 'info', sink: 'file', path: '/dev/null', vsock_port: 5008 }).trxSink;
  const sock = path.join(dir, 'logs.sock');
  await new Promise<void>((resolve) => net.createServer((c) => c.resume()).listen(sock, resolve));
  return createRuntimeLogs({ level: 'info', sink: 'vsock', path: null, vsock_port: 5008 }, { target: { kind: 'unix', path: sock } }).trxSink;
}

function spawnChild(flag: string): Promise<ChildProcess> {
  const profile = flag === '--tls-bench-agent' ? process.env.BENCH_TLS_PROFILE : undefined;
  const child = fork(SELF, [flag], { execArgv: ['--import', 'tsx', ...(process.env.BENCH_PERF_MAP && flag === '--tls-bench-agent' ? ['--perf-basic-prof'] : []), ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [])], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve) => child.once('message', () => resolve(child)));
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect(port, '127.0.0.1', () => (c.destroy(), r(true)));
      c.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

async function startNginx(dir: string, appPort: number): Promise<{ port: number; proc: ChildProcess; pid: number }> {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384', '-nodes', '-subj', '/CN=localhost', '-days', '1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
  const port = await freePort();
  const conf = `
worker_processes 1;
daemon off;
master_process on;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream app { server 127.0.0.1:${appPort}; keepalive 128; }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${dir}/cert.pem;
    ssl_certificate_key ${dir}/key.pem;
    ssl_session_tickets off;
    ssl_session_cache off;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }
  }
}
`;
  await writeFile(path.join(dir, 'nginx.conf'), conf);
  const proc = spawnProcess('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitForPort(port);
  return { port, proc, pid: proc.pid! };
}

interface Target {
  name: string;
  origin: string;
  tls: boolean;
  /** Connect over this AF_UNIX path instead of the origin's TCP port. */
  socketPath?: string;
}

async function smallGet(pool: Pool): Promise<void> {
  const res = await pool.request({ path: '/small', method: 'GET', headers: { host: 'localhost' } });
  await res.body.arrayBuffer();
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
}

const drive = (pool: Pool, concurrency: number, ms: number, latencies: number[] | null): Promise<number> =>
  closedLoop(ms, concurrency, () => smallGet(pool), latencies);

/**
 * One keep-alive Pool per target and concurrency, opened once and reused by every round: the req/s rows measure
 * requests on established connections (handshakes are measured on their own below). Opening runs requests
 * until every connection has answered at least once.
 */
async function openPool(t: Target, concurrency: number): Promise<Pool> {
  const pool = new Pool(t.origin, { connections: concurrency, pipelining: 1, keepAliveTimeout: 600_000, ...(t.tls ? { connect: { rejectUnauthorized: false, servername: 'localhost', ...(t.socketPath === undefined ? {} : { socketPath: t.socketPath }) } } : {}) });
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = 0; i < 3; i++) await (await pool.request({ path: '/small', method: 'GET', headers: { host: 'localhost' } })).body.arrayBuffer();
    }),
  );
  return pool;
}

/** Warm-up, then a measured window; with `cpu`, the server's CPU µs per request over that window only. */
async function measureRow(pool: Pool, concurrency: number, cpu: (() => Promise<number>) | null = null): Promise<{ rps: number; p50: number; cpuPerReq: number | undefined }> {
  await drive(pool, concurrency, WARMUP_MS, null);
  const lat: number[] = [];
  const c0 = await cpu?.();
  const t0 = performance.now();
  const n = await drive(pool, concurrency, ROW_MS, lat);
  const elapsed = performance.now() - t0;
  const c1 = await cpu?.();
  lat.sort((a, b) => a - b);
  return { rps: (n * 1000) / elapsed, p50: percentile(lat, 50), cpuPerReq: c0 === undefined || c1 === undefined ? undefined : (c1 - c0) / n };
}

/** Full TLS 1.3 handshakes/s (a fresh connection each time, no session reuse): closed loop of `HS_CONCURRENCY`. */
async function handshakesPerSec(to: { port: number } | { path: string }, ms: number): Promise<number> {
  return closedLoopPerSec(
    ms,
    HS_CONCURRENCY,
    () =>
      new Promise<void>((resolve, reject) => {
        const s = tls.connect({ ...('port' in to ? { host: '127.0.0.1', port: to.port } : { path: to.path }), servername: 'localhost', rejectUnauthorized: false, minVersion: 'TLSv1.3' });
        s.once('secureConnect', () => {
          s.destroy();
          resolve();
        });
        s.once('error', reject);
      }),
  );
}

/** CPU µs of nginx so far: its master and its worker (lib.ts procCpuUs). */
const nginxCpuUs = (pid: number): number => [pid, ...childPids(pid)].reduce((sum, p) => sum + procCpuUs(p), 0);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const range = (xs: number[], d = 2): string => `${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)}`;

export default async function bench(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-tls-nginx-'));
  const app = await spawnChild('--tls-bench-app');
  const agent = await spawnChild('--tls-bench-agent');
  let nginx: { port: number; proc: ChildProcess; pid: number } | undefined;
  try {
    const { port: appPort } = await askChild<{ port: number }>(app, { cmd: 'start' });
    const { port: agentPort, socketPath } = await askChild<{ port: number; socketPath: string }>(agent, { cmd: 'start', appPort });
    nginx = await startNginx(dir, appPort);
    const direct: Target = { name: 'direct keep-alive HTTP → app', origin: `http://127.0.0.1:${appPort}`, tls: false };
    const agentTcp: Target = { name: 'agent TLS ingress, TCP socket → app', origin: `https://127.0.0.1:${agentPort}`, tls: true };
    // What `run` serves: TLS over the addon's stream (vsock in an enclave; AF_UNIX here, the same code path).
    const agentNative: Target = { name: "agent TLS ingress, the addon's stream (vsock path) → app", origin: 'https://localhost', tls: true, socketPath };
    const ngx: Target = { name: 'nginx TLS (1 worker) → app', origin: `https://127.0.0.1:${nginx.port}`, tls: true };
    const targets = [direct, agentTcp, agentNative, ngx];
    const agents = [agentTcp, agentNative];
    const pools = new Map<string, Pool>();
    for (const t of targets) for (const c of [1, 64]) pools.set(`${t.name}/${c}`, await openPool(t, c));
    const rps: Record<string, number[]> = {};
    const cpuPerReq: Record<string, number[]> = {};
    const p50: Record<string, number[]> = {};
    const hs: Record<string, number[]> = {};
    /** Per agent target, per round: req/s / nginx's, added p50, handshakes / nginx's. */
    const vsNginx: Record<string, number[]> = {};
    const added: Record<string, number[]> = {};
    const hsRatio: Record<string, number[]> = {};
    const agentCpu = async (): Promise<number> => (await askChild<{ cpuUs: number }>(agent, { cmd: 'cpu' })).cpuUs;
    for (let round = 0; round < ROUNDS; round++) {
      const r64: Record<string, number> = {};
      const l1: Record<string, number> = {};
      for (const t of targets) {
        const cpu = agents.includes(t) ? agentCpu : t === ngx ? () => Promise.resolve(nginxCpuUs(nginx!.pid)) : null;
        const row = await measureRow(pools.get(`${t.name}/64`)!, 64, cpu);
        if (row.cpuPerReq !== undefined) (cpuPerReq[t.name] ??= []).push(row.cpuPerReq);
        r64[t.name] = row.rps;
        l1[t.name] = (await measureRow(pools.get(`${t.name}/1`)!, 1)).p50;
        (rps[t.name] ??= []).push(r64[t.name]!);
        (p50[t.name] ??= []).push(l1[t.name]!);
      }
      for (const t of [...agents, ngx]) {
        (added[t.name] ??= []).push(l1[t.name]! - l1[direct.name]!);
        (hs[t.name] ??= []).push(await handshakesPerSec(t.socketPath === undefined ? { port: Number(new URL(t.origin).port) } : { path: t.socketPath }, ROW_MS));
      }
      for (const t of agents) {
        (vsNginx[t.name] ??= []).push(r64[t.name]! / r64[ngx.name]!);
        (hsRatio[t.name] ??= []).push(hs[t.name]!.at(-1)! / hs[ngx.name]!.at(-1)!);
      }
    }
    for (const p of pools.values()) await p.close();
    const directRps = median(rps[direct.name]!);
    printTable(`TLS ingress: small GET, ${ROUNDS} interleaved rounds × ${ROW_MS} ms per row (medians) — ${machine()}`, [
      ['path', 'req/s c=64', 'vs direct', 'p50 c=1 (ms)', 'added p50 c=1 (ms)'],
      ...targets.map((t) => [t.name, median(rps[t.name]!), ratio(median(rps[t.name]!), directRps), median(p50[t.name]!).toFixed(3), t === direct ? '—' : median(added[t.name]!).toFixed(3)]),
    ]);
    printTable('TLS ingress vs nginx (median of per-round ratios, with range)', [
      ['measure', 'agent', 'nginx', 'agent / nginx', 'range', 'target'],
      ...agents.flatMap((t) => {
        const which = t === agentTcp ? 'TCP' : 'addon stream';
        return [
          [`req/s at c=64, ${which}`, median(rps[t.name]!), median(rps[ngx.name]!), ratio(median(vsNginx[t.name]!), 1, 0.8), range(vsNginx[t.name]!), '≥ 0.8×'],
          [`full TLS 1.3 handshakes/s (c=${HS_CONCURRENCY}), ${which}`, median(hs[t.name]!), median(hs[ngx.name]!), ratio(median(hsRatio[t.name]!), 1, 0.5), range(hsRatio[t.name]!), '≥ 0.5×'],
          [`server CPU µs per request at c=64, ${which} (lower is better)`, median(cpuPerReq[t.name]!), median(cpuPerReq[ngx.name]!), ratio(median(cpuPerReq[t.name]!), median(cpuPerReq[ngx.name]!)), '', '—'],
        ];
      }),
    ]);
  } finally {
    nginx?.proc.kill('SIGQUIT');
    if (nginx !== undefined && nginx.proc.exitCode === null) await new Promise((r) => nginx!.proc.once('exit', r));
    app.send({ cmd: 'stop' });
    agent.send({ cmd: 'stop' });
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--tls-bench-app')) appChild();
else if (process.argv.includes('--tls-bench-agent')) agentChild();
else if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === SELF) void bench();

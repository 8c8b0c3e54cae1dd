// HTTP mode end to end: small GET requests/s and p50/p99 latency through the agent (HTTP forwarder) versus
// direct keep-alive HTTP to the same app, at concurrency 1 and 64, all measured in one run.
//
// Process layout (as in production, each side has its own event loop):
//   this process   the clients: undici keep-alive Pool (baseline), a lean raw Noise client, the SDK
//   app child      a node:http app answering GET /small with an 11-byte JSON body (keep-alive)
//   agent child    startAgent + createHttpForwarder → app, on TCP loopback, configured as the runtime does
//                  (ev: decrypt stage on); one agent with transaction logging on (the default; records
//                  built, serialized and written to /dev/null through the sink `enclave-agent run` uses for
//                  [log] sink = "file": src/runtime/logs.ts, synchronous writes) and one with it off
//   bridge child   the host WebSocket bridge in front of the trx-on agent (for the SDK rows)
// Rows:
//   direct keep-alive (undici Pool → app)                          the baseline, `connections` = concurrency
//   raw client → agent, Data                                       one session, `c` Data requests in flight
//   raw client → agent, Data, trx log off                          the same against the trx-off agent
//   raw client → agent, stream per request                         OpenStream(request) … StreamClose, then Both
//   SDK → bridge → agent, transport 'data' / 'stream'              client.fetch(), one Client, maxInFlight 64
// The request is the same on every path (GET /small, Host, User-Agent); the agent paths add `Connection: close`
// as the SDK does (each Data/stream is its own connection; a Data request this simple takes the agent's fast
// path, src/http/fast-path.ts, and a stream the in-process http.Server).
// Rows run in interleaved rounds (the machine may be shared); each ratio is the median of the per-round ratios,
// with its range. "agent CPU µs/req" (user+system of the agent process over the row / requests) is far less
// sensitive to other load than wall-clock throughput.
// Targets (issue acceptance): raw Data at c=64 ≥ 0.5× direct; added p50 (agent p50 − direct p50) at c=1 ≤ 0.5 ms.
//
// Env: BENCH_HTTP_MS (per row, default 700), BENCH_HTTP_ROUNDS (default 7), BENCH_HTTP_ROWS (comma-separated
// row keys: direct,data,data-notrx,stream,sdk-data,sdk-stream,base-data,base-data-notrx,data-metrics — the last only
// when named: the ops metrics on, in a third agent process, for the metrics-cost A/B), BENCH_HTTP_AGENT_FLAGS
// (extra node flags for the agent process), BENCH_HTTP_BASELINE_SRC=<dir>
// (a second agent process from another revision's src/, measured in the same interleaved rounds: the base-* rows;
// its packages resolve only with node_modules beside it: `mkdir /tmp/x && git archive <rev> src | tar -x -C /tmp/x
// && ln -s "$PWD/node_modules" "$PWD/native" /tmp/x/`, then BENCH_HTTP_BASELINE_SRC=/tmp/x/src), BENCH_HTTP_PROFILE=<dir> (CPU profile of the
// agent process), BENCH_HTTP_SECONDS_ONLY=<key> with BENCH_HTTP_LOAD_MS (drive one row at c=64 for that long:
// for profiling).
// Run: npx tsx scripts/bench/run.ts http
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Pool } from 'undici';
import type { PcrPins } from '../../src/attestation/verify.ts';
import type * as Sim from '../../src/attestation/simulator.ts';
import type * as Server from '../../src/responder/server.ts';
import type * as Fwd from '../../src/http/forwarder.ts';
import type * as RuntimeLogsMod from '../../src/runtime/logs.ts';
import type * as DecryptEv from '../../src/http/stages/decrypt-ev.ts';
import type * as KeyringMod from '../../src/crypto/keyring.ts';
import type * as OpsMetrics from '../../src/ops/metrics.ts';
import type { ClientMessage, ServerMessage } from '../../src/wire/messages.ts';
import { askChild, closedLoop, percentile, printTable, ratio, serveChild, startSmallJsonApp } from './lib.ts';
import { NoiseClient } from './noise-client.ts';

const SELF = fileURLToPath(import.meta.url);
const ROW_MS = Number(process.env.BENCH_HTTP_MS ?? 700);
const WARMUP_MS = 200;
const ROUNDS = Number(process.env.BENCH_HTTP_ROUNDS ?? 7);
const CONCURRENCY = [1, 64];

// ---------------------------------------------------------------------------------------------------------------
// Children




type StartMsg = { appPort?: number; agentPort?: number; src?: string; metrics?: boolean };
type ChildMsg = ({ cmd: 'start' } & StartMsg) | { cmd: 'cpu' } | { cmd: 'stop' };

function appChild(): void {
  serveChild(startSmallJsonApp);
}

interface AgentPorts {
  trx: number;
  noTrx: number;
  pins: PcrPins;
  rootPem: string;
}

function agentChild(): void {
  serveChild<StartMsg>(async ({ appPort, src, metrics: withMetrics }) => {
    const pino = (await import('pino')).default;
    // `src`: another checkout's src/ (BENCH_HTTP_BASELINE_SRC), to compare two versions of the agent in one run.
    const root = src ?? path.resolve(path.dirname(SELF), '../../src');
    const load = <T>(rel: string): Promise<T> => import(pathToFileURL(path.join(root, rel)).href) as Promise<T>;
    const { createNsmSimulator } = await load<typeof Sim>('attestation/simulator.ts');
    const { startAgent } = await load<typeof Server>('responder/server.ts');
    const { createHttpForwarder } = await load<typeof Fwd>('http/forwarder.ts');
    const { createRuntimeLogs } = await load<typeof RuntimeLogsMod>('runtime/logs.ts');
    const { createDecryptStage } = await load<typeof DecryptEv>('http/stages/decrypt-ev.ts');
    const { devKeySource, loadKeyring } = await load<typeof KeyringMod>('crypto/keyring.ts');
    const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bench-http-nsm-'));
    // As the runtime configures HTTP mode: ev: decryption on (nothing to decrypt in these requests).
    const keyring = await loadKeyring(devKeySource(stateDir));
    const sim = await createNsmSimulator({
      stateDir,
      identity: { agentVersion: 'bench', app: 'bench', config: 'bench' },
    });
    const silent = pino({ level: 'silent' });
    // `metrics` (the data-metrics row, its own process): the ops metrics wired as the runtime wires them, Node's
    // process metrics included (src/runtime/agent.ts: the forwarder's observe hook, the responder's onSessionClosed).
    const metrics = withMetrics === true ? new (await load<typeof OpsMetrics>('ops/metrics.ts')).AgentMetrics({ mode: 'http', version: 'bench' }) : undefined;
    const start = async (trxLogging: boolean): Promise<number> => {
      const forwarder = createHttpForwarder({
        appPort: appPort!,
        logger: silent,
        trxLogging,
        decrypt: createDecryptStage(keyring),
        // The records are built, serialized and written (the real cost) as the runtime does for a file sink, to /dev/null.
        ...(trxLogging ? { logSink: createRuntimeLogs({ level: 'info', sink: 'file', path: '/dev/null', vsock_port: 5008 }).trxSink } : {}),
        ...(metrics === undefined ? {} : { observe: metrics.observeExchange }),
      });
      const agent = await startAgent({
        nsm: sim,
        forwarder,
        listen: { host: '127.0.0.1', port: 0 },
        limits: { maxSessions: 4096, idleTimeoutMs: 600_000 },
        ...(metrics === undefined ? {} : { onSessionClosed: metrics.sessionClosed }),
      });
      return agent.public.listener.port!;
    };
    const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
    const ports: AgentPorts = {
      trx: await start(true),
      noTrx: await start(false),
      pins: { PCR0: hex(sim.pcrs[0]!), PCR1: hex(sim.pcrs[1]!), PCR2: hex(sim.pcrs[2]!) },
      rootPem: sim.rootPem,
    };
    return ports;
  });
}

function bridgeChild(): void {
  serveChild<StartMsg>(async ({ agentPort }) => {
    const pino = (await import('pino')).default;
    const { startBridge } = await import('../../src/host/bridge.ts');
    const bridge = await startBridge({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: agentPort! }, logger: pino({ level: 'silent' }) });
    return { url: bridge.url };
  });
}

function spawn(flag: string, execArgv: string[] = []): Promise<ChildProcess> {
  const child = fork(SELF, [flag], { execArgv: ['--import', 'tsx', ...execArgv], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve) => child.once('message', () => resolve(child)));
}

const ask = <T>(child: ChildProcess, msg: ChildMsg): Promise<T> => askChild<T>(child, msg);

// ---------------------------------------------------------------------------------------------------------------
// A lean raw client on NoiseClient (./noise-client.ts): many requests in flight on one session by id.

class RawClient {
  readonly #client: NoiseClient;
  #nextId = 1;
  readonly #pending = new Map<number, (m: ServerMessage) => void>();

  private constructor(client: NoiseClient) {
    this.#client = client;
    client.onMessage = (m) => {
      if (m.type === 'Attestation' || m.type === 'ControlNonce' || m.type === 'ControlResult') return;
      this.#pending.get(m.id)?.(m);
    };
  }

  static async connect(port: number): Promise<RawClient> {
    return new RawClient(await NoiseClient.connect(port));
  }

  #write(m: ClientMessage): void {
    this.#client.send(m, 'bstr');
  }

  /** One Data request; resolves with the raw response. */
  data(payload: Uint8Array): Promise<Uint8Array> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, (m) => {
        this.#pending.delete(id);
        if (m.type === 'Data') resolve(m.payload);
        else reject(new Error(`Data ${id}: ${m.type === 'Error' ? m.message : m.type}`));
      });
      this.#write({ type: 'Data', id, payload });
    });
  }

  /** OpenStream with the request, collect StreamData until the agent's StreamClose, then release (Both). */
  stream(payload: Uint8Array): Promise<Uint8Array> {
    const id = this.#nextId++;
    const chunks: Uint8Array[] = [];
    return new Promise((resolve, reject) => {
      this.#pending.set(id, (m) => {
        if (m.type === 'StreamData') {
          chunks.push(m.payload.slice());
          return;
        }
        this.#pending.delete(id);
        if (m.type === 'StreamClose') {
          this.#write({ type: 'StreamClose', id, half: 'Both' });
          resolve(Buffer.concat(chunks));
        } else reject(new Error(`stream ${id}: ${m.type === 'Error' ? m.message : m.type}`));
      });
      this.#write({ type: 'OpenStream', id, payload });
    });
  }

  close(): void {
    this.#client.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Rows

interface Env {
  appPort: number;
  agent: AgentPorts;
  /** The agent built from BENCH_HTTP_BASELINE_SRC, if given. */
  base?: AgentPorts;
  /** The same agent with the ops metrics on, in its own process (the data-metrics row). */
  metrics?: AgentPorts;
  bridgeUrl: string;
}

interface BenchClient {
  request(): Promise<void>;
  close(): Promise<void>;
}

interface Row {
  key: string;
  name: string;
  open(env: Env, concurrency: number): Promise<BenchClient>;
}

const AGENT_REQUEST = new TextEncoder().encode('GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nConnection: close\r\n\r\n');

function checkOk(res: Uint8Array): void {
  if (Buffer.from(res.subarray(0, 12)).toString('latin1') !== 'HTTP/1.1 200') throw new Error(`unexpected response: ${Buffer.from(res.subarray(0, 60)).toString('latin1')}`);
}

const rawRow = (key: string, name: string, port: (e: Env) => number, kind: 'data' | 'stream'): Row => ({
  key,
  name,
  async open(env) {
    const c = await RawClient.connect(port(env));
    return {
      async request() {
        checkOk(kind === 'data' ? await c.data(AGENT_REQUEST) : await c.stream(AGENT_REQUEST));
      },
      close: () => Promise.resolve(c.close()),
    };
  },
});

const sdkRow = (key: string, name: string, transport: 'data' | 'stream'): Row => ({
  key,
  name,
  async open(env) {
    const { connect } = await import('../../src/client/node.ts');
    const client = await connect(env.bridgeUrl, { pcrs: env.agent.pins, roots: [env.agent.rootPem], maxInFlight: 64, transport });
    return {
      async request() {
        const res = await client.fetch('/small', { headers: { 'user-agent': 'bench' } });
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`status ${res.status}`);
      },
      close: () => client.close(),
    };
  },
});

const ROWS: Row[] = [
  {
    key: 'direct',
    name: 'direct keep-alive (undici Pool → app)',
    open(env, concurrency) {
      const pool = new Pool(`http://127.0.0.1:${env.appPort}`, { connections: concurrency, pipelining: 1 });
      return Promise.resolve({
        async request() {
          const res = await pool.request({ path: '/small', method: 'GET', headers: { host: 'bench', 'user-agent': 'bench' } });
          await res.body.arrayBuffer();
          if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
        },
        close: () => pool.close(),
      });
    },
  },
  rawRow('data', 'raw client → agent (TCP), Data', (e) => e.agent.trx, 'data'),
  rawRow('data-notrx', 'raw client → agent (TCP), Data, trx log off', (e) => e.agent.noTrx, 'data'),
  rawRow('stream', 'raw client → agent (TCP), stream per request', (e) => e.agent.trx, 'stream'),
  rawRow('data-metrics', 'raw client → agent (TCP), Data, ops metrics on (own process)', (e) => e.metrics!.trx, 'data'),
  rawRow('base-data', 'raw client → BASELINE agent (TCP), Data', (e) => e.base!.trx, 'data'),
  rawRow('base-data-notrx', 'raw client → BASELINE agent (TCP), Data, trx log off', (e) => e.base!.noTrx, 'data'),
  sdkRow('sdk-data', "SDK fetch → bridge → agent, transport 'data'", 'data'),
  sdkRow('sdk-stream', "SDK fetch → bridge → agent, transport 'stream'", 'stream'),
];

// ---------------------------------------------------------------------------------------------------------------
// Driving

interface Result {
  rps: number;
  p50: number;
  p99: number;
  /** Agent / app CPU (user + system) per request, µs. */
  agentUs: number;
  appUs: number;
  /** This process (the client side) per request, µs. */
  clientUs: number;
}

const drive = (client: BenchClient, concurrency: number, ms: number, latencies: number[] | null): Promise<number> =>
  closedLoop(ms, concurrency, () => client.request(), latencies);

const cpuOf = async (child: ChildProcess): Promise<number> => (await ask<{ cpuUs: number }>(child, { cmd: 'cpu' })).cpuUs;

async function measureRow(row: Row, env: Env, concurrency: number, agent: ChildProcess, app: ChildProcess): Promise<Result> {
  const client = await row.open(env, concurrency);
  try {
    await drive(client, concurrency, WARMUP_MS, null);
    const latencies: number[] = [];
    const [c0, a0] = await Promise.all([cpuOf(agent), cpuOf(app)]);
    const self0 = process.cpuUsage();
    const started = performance.now();
    const count = await drive(client, concurrency, ROW_MS, latencies);
    const elapsed = performance.now() - started;
    const self1 = process.cpuUsage(self0);
    const [c1, a1] = await Promise.all([cpuOf(agent), cpuOf(app)]);
    latencies.sort((a, b) => a - b);
    return { rps: (count * 1000) / elapsed, p50: percentile(latencies, 50), p99: percentile(latencies, 99), agentUs: (c1 - c0) / count, appUs: (a1 - a0) / count, clientUs: (self1.user + self1.system) / count };
  } finally {
    await client.close();
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const range = (xs: number[], digits = 2): string => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;

export default async function bench(): Promise<void> {
  const wanted = process.env.BENCH_HTTP_ROWS?.split(',');
  const baseSrc = process.env.BENCH_HTTP_BASELINE_SRC;
  // data-metrics (a third agent process) runs only when BENCH_HTTP_ROWS names it: the same-run A/B of the ops metrics'
  // cost is `BENCH_HTTP_ROWS=direct,data,data-metrics` (compare the two "vs direct" ratios at c=64).
  const rows = ROWS.filter(
    (r) => (baseSrc !== undefined || !r.key.startsWith('base-')) && (r.key !== 'data-metrics' || wanted?.includes(r.key) === true) && (r.key === 'direct' || wanted === undefined || wanted.includes(r.key)),
  );
  const profile = process.env.BENCH_HTTP_PROFILE;
  const children: ChildProcess[] = [];
  try {
    const app = await spawn('--http-bench-app');
    children.push(app);
    const appPort = (await ask<{ port: number }>(app, { cmd: 'start' })).port;
    // BENCH_HTTP_AGENT_FLAGS: extra node flags for the agent process (e.g. V8 heap tuning, for an A/B).
    const agentFlags = (process.env.BENCH_HTTP_AGENT_FLAGS ?? '').split(' ').filter(Boolean);
    const agent = await spawn('--http-bench-agent', [...agentFlags, ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [])]);
    children.push(agent);
    const agentPorts = await ask<AgentPorts>(agent, { cmd: 'start', appPort });
    let base: AgentPorts | undefined;
    let baseAgent: ChildProcess | undefined;
    let metricsAgent: ChildProcess | undefined;
    let metricsPorts: AgentPorts | undefined;
    if (rows.some((r) => r.key === 'data-metrics')) {
      metricsAgent = await spawn('--http-bench-agent', agentFlags);
      children.push(metricsAgent);
      metricsPorts = await ask<AgentPorts>(metricsAgent, { cmd: 'start', appPort, metrics: true });
    }
    if (baseSrc !== undefined) {
      baseAgent = await spawn('--http-bench-agent');
      children.push(baseAgent);
      base = await ask<AgentPorts>(baseAgent, { cmd: 'start', appPort, src: path.resolve(baseSrc) });
    }
    const bridge = await spawn('--http-bench-bridge');
    children.push(bridge);
    const bridgeUrl = (await ask<{ url: string }>(bridge, { cmd: 'start', agentPort: agentPorts.trx })).url;
    const env: Env = { appPort, agent: agentPorts, bridgeUrl, ...(base === undefined ? {} : { base }), ...(metricsPorts === undefined ? {} : { metrics: metricsPorts }) };

    const only = process.env.BENCH_HTTP_SECONDS_ONLY;
    if (only !== undefined) {
      // Profiling aid: one row at concurrency BENCH_HTTP_LOAD_C (default 64) for BENCH_HTTP_LOAD_MS.
      const row = ROWS.find((r) => r.key === only);
      if (row === undefined) throw new Error(`unknown row ${only}`);
      const c = Number(process.env.BENCH_HTTP_LOAD_C ?? 64);
      const client = await row.open(env, c);
      await drive(client, c, 1000, null);
      const u0 = await ask<{ cpuUs: number; sysUs: number }>(agent, { cmd: 'cpu' });
      const t0 = performance.now();
      const n = await drive(client, c, Number(process.env.BENCH_HTTP_LOAD_MS ?? 5000), null);
      const secs = (performance.now() - t0) / 1000;
      const u1 = await ask<{ cpuUs: number; sysUs: number }>(agent, { cmd: 'cpu' });
      console.log(`${Math.round(n / secs)} req/s; agent CPU ${((u1.cpuUs - u0.cpuUs) / n).toFixed(1)} µs/request (system ${((u1.sysUs - u0.sysUs) / n).toFixed(1)})`);
      await client.close();
      console.log(`${row.name}: ${n} requests`);
      return;
    }

    // Warm every path (JIT in all four processes, pools, sessions) before anything is measured.
    for (const r of rows) {
      const client = await r.open(env, 64);
      await drive(client, 64, WARMUP_MS * 3, null);
      await client.close();
    }

    for (const c of CONCURRENCY) {
      const results = new Map<Row, Result[]>(rows.map((r) => [r, []]));
      for (let round = 0; round < ROUNDS; round++) for (const r of rows) results.get(r)!.push(await measureRow(r, env, c, r.key.startsWith('base-') ? baseAgent! : r.key === 'data-metrics' ? metricsAgent! : agent, app));
      const base = results.get(rows[0]!)!;
      const table: (string | number)[][] = [['path', 'req/s', 'vs direct (range)', 'p50 ms', 'p99 ms', ...(c === 1 ? ['added p50 ms (range)'] : []), 'agent CPU µs/req', 'app CPU µs/req', 'client CPU µs/req']];
      for (const r of rows) {
        const rs = results.get(r)!;
        const ratios = rs.map((x, i) => x.rps / base[i]!.rps);
        const added = rs.map((x, i) => x.p50 - base[i]!.p50);
        const isBase = r === rows[0];
        const target = c === 64 && r.key === 'data' ? 0.5 : undefined;
        const ratioCell = isBase ? '1.00×' : `${ratio(median(ratios), 1, target)} (${range(ratios)})`;
        const addedCell = isBase ? '' : `${median(added).toFixed(3)}${r.key === 'data' ? (median(added) <= 0.5 ? ' (≤ 0.5 ✓)' : ' (> 0.5 ✗)') : ''} (${range(added, 3)})`;
        const cpu = isBase ? '' : median(rs.map((x) => x.agentUs));
        const appCpu = median(rs.map((x) => x.appUs));
        const clientCpu = median(rs.map((x) => x.clientUs));
        table.push([r.name, median(rs.map((x) => x.rps)), ratioCell, median(rs.map((x) => x.p50)), median(rs.map((x) => x.p99)), ...(c === 1 ? [addedCell] : []), cpu, appCpu, clientCpu]);
      }
      printTable(`HTTP mode: small GET, concurrency ${c} (app, agent, bridge each in its own process; median of ${ROUNDS} interleaved rounds of ${ROW_MS} ms)`, table);
    }
  } finally {
    for (const child of children) child.send({ cmd: 'stop' });
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
  }
}

if (process.argv.includes('--http-bench-app')) appChild();
else if (process.argv.includes('--http-bench-agent')) agentChild();
else if (process.argv.includes('--http-bench-bridge')) bridgeChild();
else if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === SELF) void bench();

// Anchors: the agent next to what a team would otherwise deploy — nginx terminating TLS 1.3 (./nginx.ts, one
// worker, keep-alive upstream) — and next to a plain TCP relay (no crypto), with the same app and the same load
// generator, in interleaved rounds. Each proxy runs in its own process and its CPU is read from /proc (lib.ts
// procCpuUs: every thread's schedstat on-CPU time, or stat utime+stime; nginx: master + worker), so CPU per request
// and per MiB compare across them.
//
// Processes:  this one        the load generator (undici Pool for HTTP/HTTPS, node:tls/net, the bench Noise client)
//             app             node:http GET /small → 11-byte JSON (keep-alive), and a TCP echo server
//             relay           plain TCP relay (net pipe): one listener to the HTTP app, one to the echo server
//             nginx           TLS 1.3 → keep-alive HTTP upstream (http), TLS 1.3 → TCP (stream) to the echo server
//             agent (HTTP)    http.ts's agent child: startAgent + HTTP forwarder as the runtime configures it (trx log
//                             on, to /dev/null) — the Data requests
//             agent (stream)  responder.ts's agent child: raw forwarder to the echo server — the byte streams
// Rows, per round (each ROW_MS of closed-loop load after its own warm-up):
//   requests  small GET at concurrency 64 and 1: direct keep-alive to the app (baseline), through the relay,
//             through nginx (HTTPS keep-alive, one connection per concurrent client), through the agent (one Noise
//             session, Data requests with `c` in flight — as the SDK sends them)
//   bytes     echo of BENCH_ANCHORS_MIB MiB in 64,000-byte client writes: relay (baseline), nginx TLS stream,
//             agent stream (bstr)
// Figures are medians over BENCH_ANCHORS_ROUNDS (≥ 7) interleaved rounds; ratios are medians of per-round ratios,
// with their spread (min–max). The load average is printed with every table: the machine may be shared, and CPU
// per request moves far less with other load than throughput does.
// Run: npm run bench -- anchors [--json]. Env: BENCH_ANCHORS_MS (per row, default 700), BENCH_ANCHORS_ROUNDS
// (default 7), BENCH_ANCHORS_MIB (default 32).
import { fork, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { Pool } from 'undici';
import { chunkBudget } from '../../src/client/session.ts';
import { askChild, closedLoop, formatSpread, loadAverage, percentile, printTable, procCpuSource, procCpuUs, spreadOf, type BenchRow } from './lib.ts';
import { SERVER_NAME, startNginx, type Nginx } from './nginx.ts';
import { NoiseClient } from './noise-client.ts';

const SELF = fileURLToPath(import.meta.url);
const HERE = path.dirname(SELF);
const ROW_MS = Number(process.env.BENCH_ANCHORS_MS ?? 700);
const ROUNDS = Math.max(7, Number(process.env.BENCH_ANCHORS_ROUNDS ?? 7));
const MIB = Number(process.env.BENCH_ANCHORS_MIB ?? 32);
const WARMUP_MS = 200;
const BODY = Buffer.from('{"ok":true}');

// ---------------------------------------------------------------------------------------------------------------
// Children of this file: the app and the relay.

function appChild(): void {
  const app = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
    res.end(BODY);
  });
  app.keepAliveTimeout = 60_000;
  const echo = net.createServer({ allowHalfOpen: true }, (s) => {
    s.setNoDelay(true);
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  void Promise.all([new Promise<void>((r) => app.listen(0, '127.0.0.1', r)), new Promise<void>((r) => echo.listen(0, '127.0.0.1', r))]).then(() =>
    process.send!({ httpPort: (app.address() as net.AddressInfo).port, echoPort: (echo.address() as net.AddressInfo).port }),
  );
  process.on('disconnect', () => process.exit(0));
}

function relayChild(): void {
  const relayTo = (port: number): Promise<number> => {
    const server = net.createServer({ allowHalfOpen: true }, (c) => {
      const up = net.connect({ host: '127.0.0.1', port, noDelay: true, allowHalfOpen: true });
      c.setNoDelay(true);
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
      c.pipe(up).pipe(c);
    });
    return new Promise((r) => server.listen(0, '127.0.0.1', () => r((server.address() as net.AddressInfo).port)));
  };
  process.once('message', (m: { httpPort: number; echoPort: number }) => {
    void Promise.all([relayTo(m.httpPort), relayTo(m.echoPort)]).then(([httpPort, echoPort]) => process.send!({ httpPort, echoPort }));
  });
  process.on('disconnect', () => process.exit(0));
}

function forkChild(file: string, args: string[]): ChildProcess {
  return fork(file, args, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

const firstMessage = <T>(child: ChildProcess): Promise<T> => new Promise((r) => child.once('message', (m) => r(m as T)));

// ---------------------------------------------------------------------------------------------------------------
// Load generators

interface Client {
  request(): Promise<void>;
  close(): Promise<void>;
}

function poolClient(url: string, concurrency: number, ca?: string): Client {
  const pool = new Pool(url, { connections: concurrency, pipelining: 1, ...(ca === undefined ? {} : { connect: { ca, servername: SERVER_NAME } }) });
  return {
    async request() {
      const res = await pool.request({ path: '/small', method: 'GET', headers: { host: 'bench', 'user-agent': 'bench' } });
      await res.body.arrayBuffer();
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
    },
    close: () => pool.close(),
  };
}

/** The request the SDK sends for the same GET (each Data request is its own exchange: Connection: close). */
const AGENT_REQUEST = new TextEncoder().encode('GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nConnection: close\r\n\r\n');

export async function agentClient(port: number): Promise<Client> {
  const c = await NoiseClient.connect(port);
  let nextId = 1;
  const pending = new Map<number, (ok: boolean) => void>();
  c.onMessage = (m) => {
    if (m.type === 'Data') pending.get(m.id)?.(Buffer.from(m.payload.subarray(0, 12)).toString('latin1') === 'HTTP/1.1 200');
    else if ('id' in m && typeof m.id === 'number') pending.get(m.id)?.(false);
  };
  return {
    request() {
      const id = nextId++;
      return new Promise<void>((resolve, reject) => {
        pending.set(id, (ok) => {
          pending.delete(id);
          if (ok) resolve();
          else reject(new Error(`Data request ${id} failed`));
        });
        c.send({ type: 'Data', id, payload: AGENT_REQUEST }, 'bstr');
      });
    },
    close: () => Promise.resolve(c.close()),
  };
}

const drive = (client: Client, concurrency: number, ms: number, latencies: number[] | null): Promise<number> =>
  closedLoop(ms, concurrency, () => client.request(), latencies);

const BLOCK = Buffer.from(new Uint8Array(chunkBudget('bstr')).map((_, i) => (i * 13) & 0xff));

/** Echo `total` bytes through a plain or TLS socket; resolves when all came back. */
async function socketEcho(s: net.Socket, total: number): Promise<void> {
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    s.on('data', (c: Buffer) => {
      received += c.length;
      if (received >= total) resolve();
    });
    s.on('error', reject);
  });
  for (let sent = 0; sent < total; sent += BLOCK.length) {
    if (!s.write(total - sent < BLOCK.length ? BLOCK.subarray(0, total - sent) : BLOCK)) await new Promise((r) => s.once('drain', r));
  }
  await done;
  s.destroy();
}

async function agentEcho(port: number, total: number): Promise<void> {
  const c = await NoiseClient.connect(port);
  let received = 0;
  const done = new Promise<void>((resolve) => {
    c.onMessage = (m) => {
      if (m.type === 'StreamData') received += m.payload.length;
      else if (m.type === 'StreamClose') resolve();
    };
  });
  c.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, 'bstr');
  for (let sent = 0; sent < total; sent += BLOCK.length) {
    const payload = total - sent < BLOCK.length ? BLOCK.subarray(0, total - sent) : BLOCK;
    if (!c.send({ type: 'StreamData', id: 1, payload }, 'bstr')) await new Promise((r) => c.socket.once('drain', r));
  }
  c.send({ type: 'StreamClose', id: 1, half: 'Write' });
  await done;
  c.close();
  if (received !== total) throw new Error(`agent stream echoed ${received} of ${total} bytes`);
}

// ---------------------------------------------------------------------------------------------------------------

interface Setup {
  appPid: number;
  app: { httpPort: number; echoPort: number };
  relay: { pid: number; httpPort: number; echoPort: number };
  nginx: Nginx;
  httpAgent: { pid: number; port: number };
  streamAgent: { pid: number; port: number };
}

interface Path {
  key: string;
  name: string;
  /** Pids whose CPU is the proxy's (none for the direct baseline). */
  pids(s: Setup): number[];
}

interface ReqPath extends Path {
  open(s: Setup, c: number): Promise<Client>;
}
interface BytePath extends Path {
  echo(s: Setup, bytes: number): Promise<void>;
}

const REQ_PATHS: ReqPath[] = [
  { key: 'direct', name: 'direct keep-alive → app (baseline)', pids: () => [], open: (s, c) => Promise.resolve(poolClient(`http://127.0.0.1:${s.app.httpPort}`, c)) },
  { key: 'relay', name: 'plain TCP relay (keep-alive) → app', pids: (s) => [s.relay.pid], open: (s, c) => Promise.resolve(poolClient(`http://127.0.0.1:${s.relay.httpPort}`, c)) },
  { key: 'nginx', name: 'nginx TLS 1.3 (keep-alive both sides) → app', pids: (s) => s.nginx.pids(), open: (s, c) => Promise.resolve(poolClient(`https://127.0.0.1:${s.nginx.httpsPort}`, c, s.nginx.certPem)) },
  { key: 'agent', name: 'agent (one Noise session, Data) → app', pids: (s) => [s.httpAgent.pid], open: (s) => agentClient(s.httpAgent.port) },
];

const BYTE_PATHS: BytePath[] = [
  {
    key: 'relay',
    name: 'plain TCP relay (baseline)',
    pids: (s) => [s.relay.pid],
    async echo(s, bytes) {
      const sock = net.connect({ host: '127.0.0.1', port: s.relay.echoPort, noDelay: true });
      await new Promise<void>((r) => sock.once('connect', r));
      await socketEcho(sock, bytes);
    },
  },
  {
    key: 'nginx',
    name: 'nginx TLS 1.3 stream relay',
    pids: (s) => s.nginx.pids(),
    async echo(s, bytes) {
      const sock = tls.connect({ host: '127.0.0.1', port: s.nginx.streamPort, ca: s.nginx.certPem, servername: SERVER_NAME });
      await new Promise<void>((r, j) => sock.once('secureConnect', r).once('error', j));
      sock.setNoDelay(true);
      await socketEcho(sock, bytes);
    },
  },
  { key: 'agent', name: 'agent stream, bstr', pids: (s) => [s.streamAgent.pid], echo: (s, bytes) => agentEcho(s.streamAgent.port, bytes) },
];

const cpuOf = (pids: number[]): number => pids.reduce((sum, p) => sum + procCpuUs(p), 0);
const selfCpu = (): number => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

interface ReqResult {
  rps: number;
  p50: number;
  proxyUs: number;
  appUs: number;
  clientUs: number;
}

async function measureRequests(p: ReqPath, s: Setup, c: number): Promise<ReqResult> {
  const client = await p.open(s, c);
  try {
    await drive(client, c, WARMUP_MS, null);
    const lat: number[] = [];
    const pids = p.pids(s);
    const [x0, a0, s0] = [cpuOf(pids), procCpuUs(s.appPid), selfCpu()];
    const t0 = performance.now();
    const n = await drive(client, c, ROW_MS, lat);
    const ms = performance.now() - t0;
    const [x1, a1, s1] = [cpuOf(pids), procCpuUs(s.appPid), selfCpu()];
    lat.sort((a, b) => a - b);
    return { rps: (n * 1000) / ms, p50: percentile(lat, 50), proxyUs: (x1 - x0) / n, appUs: (a1 - a0) / n, clientUs: (s1 - s0) / n };
  } finally {
    await client.close();
  }
}

interface ByteResult {
  mibs: number;
  proxyMsPerMib: number;
  appMsPerMib: number;
}

async function measureBytes(p: BytePath, s: Setup): Promise<ByteResult> {
  const bytes = MIB * 2 ** 20;
  const pids = p.pids(s);
  const [x0, a0] = [cpuOf(pids), procCpuUs(s.appPid)];
  const t0 = performance.now();
  await p.echo(s, bytes);
  const ms = performance.now() - t0;
  const [x1, a1] = [cpuOf(pids), procCpuUs(s.appPid)];
  return { mibs: MIB / (ms / 1000), proxyMsPerMib: (x1 - x0) / 1000 / MIB, appMsPerMib: (a1 - a0) / 1000 / MIB };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const perRound = <T>(a: T[], b: T[], f: (x: T) => number): number[] => a.map((x, i) => f(x) / f(b[i]!));

async function setup(children: ChildProcess[], stops: (() => Promise<void>)[]): Promise<Setup> {
  const appProc = forkChild(SELF, ['--anchors-app']);
  children.push(appProc);
  const app = await firstMessage<{ httpPort: number; echoPort: number }>(appProc);
  const relayProc = forkChild(SELF, ['--anchors-relay']);
  children.push(relayProc);
  const relay = await askChild<{ httpPort: number; echoPort: number }>(relayProc, app);
  const nginx = await startNginx({ appPort: app.httpPort, echoPort: app.echoPort, upstreamKeepalive: 64 });
  stops.push(nginx.stop);
  // The agents: the same child modes the http and responder benches use.
  const httpAgentProc = forkChild(path.join(HERE, 'http.ts'), ['--http-bench-agent']);
  children.push(httpAgentProc);
  await firstMessage(httpAgentProc);
  const httpAgentPorts = await askChild<{ trx: number }>(httpAgentProc, { cmd: 'start', appPort: app.httpPort });
  const streamAgentProc = forkChild(path.join(HERE, 'responder.ts'), ['--agent-child']);
  children.push(streamAgentProc);
  await firstMessage(streamAgentProc);
  const streamAgentPorts = await askChild<{ streamAgent: number }>(streamAgentProc, { cmd: 'start', echoPort: app.echoPort, httpPort: app.httpPort });
  return {
    appPid: appProc.pid!,
    app,
    relay: { pid: relayProc.pid!, ...relay },
    nginx,
    httpAgent: { pid: httpAgentProc.pid!, port: httpAgentPorts.trx },
    streamAgent: { pid: streamAgentProc.pid!, port: streamAgentPorts.streamAgent },
  };
}

export default async function bench(): Promise<void> {
  const children: ChildProcess[] = [];
  const stops: (() => Promise<void>)[] = [];
  try {
    const s = await setup(children, stops);
    // Warm every path (JIT, TLS sessions, upstream keep-alive pools) before anything is measured.
    for (const p of REQ_PATHS) {
      const client = await p.open(s, 64);
      await drive(client, 64, WARMUP_MS * 3, null);
      await client.close();
    }
    for (const p of BYTE_PATHS) await p.echo(s, 4 * 2 ** 20);

    for (const c of [64, 1]) {
      const load0 = loadAverage();
      const res = new Map<ReqPath, ReqResult[]>(REQ_PATHS.map((p) => [p, []]));
      for (let r = 0; r < ROUNDS; r++) for (const p of REQ_PATHS) res.get(p)!.push(await measureRequests(p, s, c));
      const direct = res.get(REQ_PATHS[0]!)!;
      const nginx = res.get(REQ_PATHS.find((p) => p.key === 'nginx')!)!;
      const title = `anchors: small GET, concurrency ${c}, median of ${ROUNDS} interleaved rounds of ${ROW_MS} ms; CPU from ${procCpuSource}; load average ${load0} → ${loadAverage()} on ${os.cpus().length} cores`;
      const table: (string | number)[][] = [['path', 'req/s', 'vs direct (spread)', 'p50 ms', 'added p50 ms', 'proxy CPU µs/req (spread)', 'vs nginx CPU/req (spread)', 'app CPU µs/req', 'client CPU µs/req']];
      const json: BenchRow[] = [];
      for (const p of REQ_PATHS) {
        const rs = res.get(p)!;
        const vsDirect = perRound(rs, direct, (x) => x.rps);
        const added = rs.map((x, i) => x.p50 - direct[i]!.p50);
        const proxy = rs.map((x) => x.proxyUs);
        const vsNginx = p.key === 'direct' ? [] : perRound(rs, nginx, (x) => x.proxyUs);
        table.push([
          p.name,
          median(rs.map((x) => x.rps)),
          p.key === 'direct' ? '1.00×' : `${median(vsDirect).toFixed(2)}× (${formatSpread(spreadOf(vsDirect))})`,
          median(rs.map((x) => x.p50)),
          p.key === 'direct' ? '' : median(added),
          p.key === 'direct' ? '' : `${median(proxy).toFixed(1)} (${formatSpread(spreadOf(proxy), 1)})`,
          vsNginx.length === 0 ? '' : `${median(vsNginx).toFixed(2)}× (${formatSpread(spreadOf(vsNginx))})`,
          median(rs.map((x) => x.appUs)),
          median(rs.map((x) => x.clientUs)),
        ]);
        const at = `c=${c}, ${p.key}`;
        json.push({ name: `${at}: throughput`, figure: median(rs.map((x) => x.rps)), unit: 'req/s', baseline: median(direct.map((x) => x.rps)), ratio: median(vsDirect), rounds: ROUNDS, spread: spreadOf(vsDirect) });
        json.push({ name: `${at}: p50`, figure: median(rs.map((x) => x.p50)), unit: 'ms', baseline: median(direct.map((x) => x.p50)), rounds: ROUNDS, spread: spreadOf(rs.map((x) => x.p50)) });
        if (p.key !== 'direct') {
          json.push({ name: `${at}: added p50`, figure: median(added), unit: 'ms', rounds: ROUNDS, spread: spreadOf(added) });
          json.push({ name: `${at}: proxy CPU per request`, figure: median(proxy), unit: 'µs', baseline: median(nginx.map((x) => x.proxyUs)), ratio: median(vsNginx), rounds: ROUNDS, spread: spreadOf(vsNginx) });
        }
      }
      const agent = res.get(REQ_PATHS.find((p) => p.key === 'agent')!)!;
      const tput = perRound(agent, nginx, (x) => x.rps);
      table.push(['agent ÷ nginx, throughput (per-round ratio)', median(tput), `(${formatSpread(spreadOf(tput))})`, '', '', '', '', '', '']);
      json.push({ name: `c=${c}: agent ÷ nginx throughput`, figure: median(tput), unit: '×', baseline: median(nginx.map((x) => x.rps)), ratio: median(tput), rounds: ROUNDS, spread: spreadOf(tput) });
      printTable(title, table, json);
    }

    const load0 = loadAverage();
    const res = new Map<BytePath, ByteResult[]>(BYTE_PATHS.map((p) => [p, []]));
    for (let r = 0; r < ROUNDS; r++) for (const p of BYTE_PATHS) res.get(p)!.push(await measureBytes(p, s));
    const relay = res.get(BYTE_PATHS[0]!)!;
    const nginx = res.get(BYTE_PATHS.find((p) => p.key === 'nginx')!)!;
    const table: (string | number)[][] = [['path', 'MiB/s', 'vs relay (spread)', 'vs nginx (spread)', 'proxy CPU ms/MiB (spread)', 'app CPU ms/MiB']];
    const json: BenchRow[] = [];
    for (const p of BYTE_PATHS) {
      const rs = res.get(p)!;
      const vsRelay = perRound(rs, relay, (x) => x.mibs);
      const vsNginx = perRound(rs, nginx, (x) => x.mibs);
      const cpu = rs.map((x) => x.proxyMsPerMib);
      table.push([
        p.name,
        median(rs.map((x) => x.mibs)),
        p.key === 'relay' ? '1.00×' : `${median(vsRelay).toFixed(2)}× (${formatSpread(spreadOf(vsRelay))})`,
        p.key === 'nginx' ? '1.00×' : `${median(vsNginx).toFixed(2)}× (${formatSpread(spreadOf(vsNginx))})`,
        `${median(cpu).toFixed(2)} (${formatSpread(spreadOf(cpu))})`,
        median(rs.map((x) => x.appMsPerMib)),
      ]);
      json.push({ name: `bytes, ${p.key}: throughput`, figure: median(rs.map((x) => x.mibs)), unit: 'MiB/s', baseline: median(relay.map((x) => x.mibs)), ratio: median(vsRelay), rounds: ROUNDS, spread: spreadOf(vsRelay) });
      json.push({ name: `bytes, ${p.key}: throughput vs nginx`, figure: median(rs.map((x) => x.mibs)), unit: 'MiB/s', baseline: median(nginx.map((x) => x.mibs)), ratio: median(vsNginx), rounds: ROUNDS, spread: spreadOf(vsNginx) });
      json.push({ name: `bytes, ${p.key}: proxy CPU per MiB`, figure: median(cpu), unit: 'ms', rounds: ROUNDS, spread: spreadOf(cpu) });
    }
    printTable(`anchors: echo of ${MIB} MiB in 64,000-byte writes, median of ${ROUNDS} interleaved rounds; CPU from ${procCpuSource}; load average ${load0} → ${loadAverage()} on ${os.cpus().length} cores`, table, json);
  } finally {
    for (const stop of stops) await stop();
    for (const c of children) if (c.connected) c.send({ cmd: 'stop' });
    for (const c of children) c.disconnect?.();
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
  }
}

if (process.argv.includes('--anchors-app')) appChild();
else if (process.argv.includes('--anchors-relay')) relayChild();

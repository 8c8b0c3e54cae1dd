// The responder end to end, with the agent in its own process (as in an enclave) and the client and the
// apps in this one:
//   streams  client → agent → echo app → agent → client, bstr and int-array encodings, vs a plain TCP relay
//            (same process layout, no crypto) between the same endpoints            targets ≥ 0.5× / ≥ 0.25×
//   requests small Data requests (HTTP, Connection: close; 64 in flight on one session) vs direct HTTP to the
//            same app with a new connection per request (64 concurrent)            target ≥ 0.5×
//   sessions attested sessions/s (connect + handshake + RequestAttestation), vs TCP connect + one echo round trip
//   memory   from a fresh agent process (compiled, plain node with the launcher's flags: agent-bundle.ts): RSS
//            added by the first 1,000 idle attested sessions, returned when they close, added by a second 1,000
//            (the steady state), returned again — as on this machine, then inside a memory cgroup of an
//            enclave's size (RESPONDER_BENCH_CGROUP_MEMORY, default 4G; off skips)   target ≤ 16 KiB/session;
//            each reading right after the change and again once settled (RESPONDER_BENCH_SETTLE_MS idle, default
//            20,000: V8's memory reducer and the agent's malloc trim, src/runtime/memory-trim.ts, have run);
//            and the base RSS of the Docker layer's bundled `enclave-agent run` at rest  target ≤ 60 MiB
// RESPONDER_BENCH_ONLY=streams|memory runs only those rows; =base-rss only the base RSS of the bundled agent.
// Run: npx tsx scripts/bench/run.ts responder. The agent child is this same file with --agent-child.
import { fork } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { chunkBudget } from '../../src/client/session.ts';
import type { ByteEncoding } from '../../src/wire/messages.ts';
import { bundledAgentIdleRss, bundleFile, shippedLaunch } from './agent-bundle.ts';
import { askChild, closedLoopPerSec, loadAverage, printTable, ratio } from './lib.ts';
import { type MemoryCgroup, memoryCgroup, parseMemorySize } from './memory-cgroup.ts';
import { NoiseClient } from './noise-client.ts';

const SELF = fileURLToPath(import.meta.url);

// ---------------------------------------------------------------------------------------------------------------
// The agent process

interface StartCmd {
  cmd: 'start';
  echoPort: number;
  httpPort: number;
}
interface Ports {
  streamAgent: number;
  dataAgent: number;
  relay: number;
}

async function agentChild(): Promise<void> {
  const { createNsmSimulator } = await import('../../src/attestation/simulator.ts');
  const { createResponder } = await import('../../src/responder/server.ts');
  const { createRawForwarder } = await import('../../src/responder/raw-forwarder.ts');
  const { listenTcp } = await import('../../src/transport/tcp.ts');
  const { startMemoryTrim } = await import('../../src/runtime/memory-trim.ts');
  startMemoryTrim(); // as startAgentRuntime does
  const send = (m: unknown): void => void process.send!(m);
  const responders: { sessionCount: number }[] = [];
  process.on('message', (m: StartCmd | { cmd: 'cpu' | 'rss' | 'stop' }) => {
    void (async () => {
      if (m.cmd === 'start') {
        const nsm = await createNsmSimulator({
          stateDir: await mkdtemp(path.join(os.tmpdir(), 'bench-nsm-')),
          identity: { agentVersion: 'bench', app: 'bench', config: 'bench' },
        });
        const limits = { maxSessions: 4096, idleTimeoutMs: 600_000 };
        const listen = async (appPort: number): Promise<number> => {
          const r = createResponder({ nsm, channel: 'public', forwarder: createRawForwarder({ appPort }), limits });
          responders.push(r);
          const l = await listenTcp({ port: 0 }, { onConnection: (s, info) => r.handle(s, info) });
          return l.port!;
        };
        const relay = net.createServer((c) => {
          const up = net.connect({ host: '127.0.0.1', port: m.echoPort, noDelay: true });
          c.setNoDelay(true);
          c.on('error', () => up.destroy());
          up.on('error', () => c.destroy());
          c.pipe(up).pipe(c);
        });
        await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
        const ports: Ports = { streamAgent: await listen(m.echoPort), dataAgent: await listen(m.httpPort), relay: (relay.address() as net.AddressInfo).port };
        send(ports);
      } else if (m.cmd === 'cpu') {
        const u = process.cpuUsage();
        send({ cpuUs: u.user + u.system });
      } else if (m.cmd === 'rss') {
        for (let i = 0; i < 3; i++) (globalThis as { gc?: () => void }).gc?.();
        await new Promise((r) => setTimeout(r, 100));
        const mu = process.memoryUsage();
        const sessions = responders.reduce((n, r) => n + r.sessionCount, 0);
        // RESPONDER_BENCH_HEAPSNAPSHOT=<dir>: a heap snapshot at each reading (to see where a session's bytes go).
        const snapDir = process.env.RESPONDER_BENCH_HEAPSNAPSHOT;
        if (snapDir !== undefined) v8.writeHeapSnapshot(path.join(snapDir, `agent-${Date.now()}-${sessions}.heapsnapshot`));
        // The young generation's committed pages (both semi-spaces), and the memory V8 sized its heap from.
        const ns = v8.getHeapSpaceStatistics().find((sp) => sp.space_name === 'new_space');
        const [newSpace, newSpaceResident] = [ns?.space_size ?? 0, ns?.physical_space_size ?? 0];
        const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
        send({ rss: mu.rss, heapUsed: mu.heapUsed, external: mu.external, sessions, newSpace, newSpaceResident, heapLimit: v8.getHeapStatistics().heap_size_limit, constrained });
      } else {
        process.exitCode = 0;
        setImmediate(() => process.exit(0));
      }
    })();
  });
  send({ ready: true });
}

const drain = (s: net.Socket): Promise<void> => new Promise((r) => s.once('drain', r));

// ---------------------------------------------------------------------------------------------------------------
// Measurements

/**
 * Application bytes per client write: on the agent path what our client SDK puts in one StreamData (its chunk
 * budget: 64,000 B bstr, 32,000 B int-array); the relay gets 64,000-byte writes.
 */
const RELAY_BLOCK = chunkBudget('bstr');

async function streamThroughput(port: number, totalBytes: number, enc: ByteEncoding): Promise<number> {
  const c = await NoiseClient.connect(port);
  const block = new Uint8Array(chunkBudget(enc)).map((_, i) => (i * 13) & 0xff);
  let received = 0;
  const t0 = performance.now();
  const done = new Promise<void>((resolve) => {
    c.onMessage = (m) => {
      if (m.type === 'StreamData') received += m.payload.length;
      else if (m.type === 'StreamClose') resolve();
    };
  });
  c.send({ type: 'OpenStream', id: 1, payload: new Uint8Array(0) }, enc);
  for (let sent = 0; sent < totalBytes; sent += block.length) {
    const payload = totalBytes - sent < block.length ? block.subarray(0, totalBytes - sent) : block;
    if (!c.send({ type: 'StreamData', id: 1, payload }, enc)) await drain(c.socket);
  }
  c.send({ type: 'StreamClose', id: 1, half: 'Write' });
  await done;
  const ms = performance.now() - t0;
  c.close();
  if (received !== totalBytes) throw new Error(`stream echoed ${received} of ${totalBytes} bytes`);
  return totalBytes / 2 ** 20 / (ms / 1000);
}

async function relayThroughput(port: number, totalBytes: number): Promise<number> {
  const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((r) => s.once('connect', r));
  const block = Buffer.from(new Uint8Array(RELAY_BLOCK).map((_, i) => (i * 13) & 0xff));
  let received = 0;
  const t0 = performance.now();
  const done = new Promise<void>((resolve) => {
    s.on('data', (c: Buffer) => {
      received += c.length;
      if (received >= totalBytes) resolve();
    });
  });
  for (let sent = 0; sent < totalBytes; sent += block.length) {
    if (!s.write(totalBytes - sent < block.length ? block.subarray(0, totalBytes - sent) : block)) await drain(s);
  }
  await done;
  const ms = performance.now() - t0;
  s.destroy();
  return totalBytes / 2 ** 20 / (ms / 1000);
}

const HTTP_REQ = new TextEncoder().encode('GET /ping HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n');

async function dataRequestsPerSec(port: number, ms: number, inFlight: number): Promise<number> {
  const c = await NoiseClient.connect(port);
  let nextId = 1;
  let completed = 0;
  let failures = 0;
  const end = performance.now() + ms;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));
  let outstanding = 0;
  const launch = (): void => {
    outstanding++;
    c.send({ type: 'Data', id: nextId++, payload: HTTP_REQ }, 'bstr');
  };
  c.onMessage = (m) => {
    outstanding--;
    if (m.type === 'Data') completed++;
    else failures++;
    if (performance.now() < end) launch();
    else if (outstanding === 0) resolveDone();
  };
  const t0 = performance.now();
  for (let i = 0; i < inFlight; i++) launch();
  await done;
  const elapsed = performance.now() - t0;
  c.close();
  if (failures > 0) throw new Error(`${failures} Data requests failed`);
  return (completed * 1000) / elapsed;
}

function directHttpPerSec(port: number, ms: number, concurrency: number): Promise<number> {
  return closedLoopPerSec(
    ms,
    concurrency,
    () =>
      new Promise((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path: '/ping', agent: false, headers: { connection: 'close' } }, (res) => {
          res.resume();
          res.on('end', () => resolve());
        });
        req.on('error', reject);
        req.end();
      }),
  );
}

export function attestedSessionsPerSec(port: number, ms: number, concurrency: number): Promise<number> {
  return closedLoopPerSec(ms, concurrency, async () => {
    const c = await NoiseClient.connect(port);
    const reply = c.next();
    c.send({ type: 'RequestAttestation' });
    const m = await reply;
    if (m.type !== 'Attestation') throw new Error(`expected Attestation, got ${m.type}`);
    c.close();
  });
}

function tcpRoundTripsPerSec(port: number, ms: number, concurrency: number): Promise<number> {
  return closedLoopPerSec(ms, concurrency, async () => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    await new Promise<void>((r) => s.once('connect', r));
    const echoed = new Promise<void>((r) => s.once('data', () => r()));
    s.write('ping');
    await echoed;
    s.destroy();
  });
}

// ---------------------------------------------------------------------------------------------------------------

export default async function bench(): Promise<void> {
  // The apps live in this process: an echo server and a tiny HTTP server.
  const echo = net.createServer({ allowHalfOpen: true }, (s) => {
    s.setNoDelay(true);
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const httpApp = http.createServer((_req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('pong');
  });
  await new Promise<void>((r) => httpApp.listen(0, '127.0.0.1', r));
  const echoPort = (echo.address() as net.AddressInfo).port;
  const httpPort = (httpApp.address() as net.AddressInfo).port;

  // RESPONDER_BENCH_PROFILE=<dir>: write a CPU profile of the agent process there.
  const profile = process.env.RESPONDER_BENCH_PROFILE;
  const execArgv = ['--import', 'tsx', '--expose-gc', ...(process.env.AGENT_NODE_FLAGS ?? '').split(' ').filter(Boolean), ...(profile ? ['--cpu-prof', `--cpu-prof-dir=${profile}`] : [])];
  const only = process.env.RESPONDER_BENCH_ONLY;
  try {
    if (only === 'base-rss') await baseRssRow();
    else {
      if (only !== 'memory') await throughputRows(execArgv, echoPort, httpPort);
      if (only === undefined || only === 'memory') await memoryRows(echoPort, httpPort);
    }
  } finally {
    echo.close();
    httpApp.close();
    echo.unref();
  }
}

/** Streams, small requests and new sessions, against one agent child. */
async function throughputRows(execArgv: string[], echoPort: number, httpPort: number): Promise<void> {
  const child = fork(SELF, ['--agent-child'], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  try {
    await new Promise<void>((r) => child.once('message', () => r()));
    const ports = await askChild<Ports>(child, { cmd: 'start', echoPort, httpPort });

    // Streams. Both paths move the same bytes in client writes of the SDK's chunk size through the same process layout
    // (client + echo app here, relay or agent in the child). The machine may be shared: the three paths run in
    // interleaved rounds and each ratio is the median of the per-round ratios. CPU ms per MiB (both processes,
    // user + system) is printed too: it is far less sensitive to other load than wall-clock throughput.
    const MB = 2 ** 20;
    await relayThroughput(ports.relay, 8 * MB);
    await streamThroughput(ports.streamAgent, 4 * MB, 'bstr');
    await streamThroughput(ports.streamAgent, 4 * MB, 'array');
    const rounds = Number(process.env.RESPONDER_BENCH_ROUNDS ?? 5);
    const total = { relay: 64 * MB, bstr: 64 * MB, array: 32 * MB };
    type PathName = keyof typeof total;
    const runs: Record<PathName, { mibs: number; childMs: number; selfMs: number }[]> = { relay: [], bstr: [], array: [] };
    const run = async (name: PathName): Promise<void> => {
      const c0 = (await askChild<{ cpuUs: number }>(child, { cmd: 'cpu' })).cpuUs;
      const s0 = process.cpuUsage();
      const mibs = name === 'relay' ? await relayThroughput(ports.relay, total.relay) : await streamThroughput(ports.streamAgent, total[name], name === 'bstr' ? 'bstr' : 'array');
      const s = process.cpuUsage(s0);
      const c1 = (await askChild<{ cpuUs: number }>(child, { cmd: 'cpu' })).cpuUs;
      const mib = total[name] / MB;
      runs[name].push({ mibs, childMs: (c1 - c0) / 1000 / mib, selfMs: (s.user + s.system) / 1000 / mib });
    };
    // RESPONDER_BENCH_PATHS=bstr: run only those agent paths, and the relay (e.g. to profile one encoding).
    const paths = ['relay', ...(process.env.RESPONDER_BENCH_PATHS ?? 'bstr,array').split(',').filter((p) => p !== 'relay')] as PathName[];
    for (let r = 0; r < rounds; r++) for (const name of paths) await run(name);
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const ratios = (name: PathName): number[] => runs[name].map((x, i) => x.mibs / runs.relay[i]!.mibs);
    const range = (xs: number[]): string => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;
    const row = (label: string, name: PathName, target?: number): (string | number)[] => [
      label,
      median(runs[name].map((x) => x.mibs)),
      name === 'relay' ? '1.00×' : ratio(median(ratios(name)), 1, target),
      name === 'relay' ? '' : range(ratios(name)),
      median(runs[name].map((x) => x.childMs)),
      median(runs[name].map((x) => x.selfMs)),
    ];
    const rows = [
      ['path', 'MiB/s', 'vs plain TCP relay', 'per-round range', 'relay/agent CPU ms/MiB', 'client+app CPU ms/MiB'],
      row('plain TCP relay (baseline)', 'relay'),
      // Issue 20's per-byte targets: byte strings ≥ 0.7× a plain relay, int arrays (compat) ≥ 0.4×.
      ...(paths.includes('bstr') ? [row('agent stream, bstr', 'bstr', 0.7)] : []),
      ...(paths.includes('array') ? [row('agent stream, int-array', 'array', 0.4)] : []),
    ];
    printTable(`responder: stream echo throughput (MiB/s of payload, agent in its own process, median of ${rounds} interleaved rounds)`, rows);
    if (process.env.RESPONDER_BENCH_ONLY === 'streams') return;

    // Small requests.
    await dataRequestsPerSec(ports.dataAgent, 300, 64);
    await directHttpPerSec(httpPort, 300, 64);
    const direct = await directHttpPerSec(httpPort, 3000, 64);
    const viaAgent = await dataRequestsPerSec(ports.dataAgent, 3000, 64);
    printTable('responder: small HTTP requests/s', [
      ['path', 'req/s', 'vs direct'],
      ['direct HTTP, new connection per request, 64 concurrent (baseline)', direct, '1.00×'],
      ['Data via agent, one session, 64 in flight', viaAgent, ratio(viaAgent, direct, 0.5)],
    ]);

    // Sessions.
    const rtt = await tcpRoundTripsPerSec(ports.relay, 2000, 8);
    const attested = await attestedSessionsPerSec(ports.streamAgent, 3000, 8);
    printTable('responder: new sessions/s (8 concurrent)', [
      ['what', 'per s', 'vs baseline'],
      ['TCP connect + one echo round trip via relay (baseline)', rtt, '1.00×'],
      ['connect + Noise handshake + attestation (NSM simulator)', attested, ratio(attested, rtt)],
    ]);
  } finally {
    child.send({ cmd: 'stop' });
  }
}

/** Opens `n` idle attested sessions (connect + Noise handshake + RequestAttestation), 100 at a time. */
async function openIdleSessions(port: number, n: number): Promise<NoiseClient[]> {
  const out: NoiseClient[] = [];
  while (out.length < n) {
    out.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(100, n - out.length) }, async () => {
          const c = await NoiseClient.connect(port);
          const reply = c.next();
          c.send({ type: 'RequestAttestation' });
          const m = await reply;
          if (m.type !== 'Attestation') throw new Error(`expected Attestation, got ${m.type}`);
          return c;
        }),
      )),
    );
  }
  return out;
}

interface RssReply {
  rss: number;
  heapUsed: number;
  external: number;
  sessions: number;
  /** V8's new space (both semi-spaces): committed, and of that the pages touched (resident). */
  newSpace: number;
  newSpaceResident: number;
  heapLimit: number;
  /** process.constrainedMemory(): the cgroup limit node sized V8's heap from (2^64 or undefined: none). */
  constrained: number | undefined;
}

/**
 * Memory, from a fresh agent process (nothing else has run in it, so nothing earlier has grown its heap): RSS
 * after start, with the first 1,000 idle attested sessions, after they close (what came back), with a second
 * 1,000, and after those close. Each reading follows three forced GCs and 100 ms (--expose-gc in the child).
 * Twice: as the process runs on this machine, then inside a memory cgroup of an enclave's size
 * (RESPONDER_BENCH_CGROUP_MEMORY, default 4G; a comma list runs each; `off` skips), because node sizes V8's heap
 * from the cgroup's limit — the figure a deployed enclave of that size would show.
 */
async function memoryRows(echoPort: number, httpPort: number): Promise<void> {
  // The agent child runs compiled (this file bundled, as the Docker layer's build bundles the CLI) under plain node
  // with the launcher's flags, not through tsx (agent-bundle.ts says why).
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-responder-memory-'));
  try {
    const childFile = path.join(dir, 'agent-child.mjs');
    await bundleFile(SELF, childFile);
    await idleSessionsRow(childFile, echoPort, httpPort, undefined);
    const sizes = (process.env.RESPONDER_BENCH_CGROUP_MEMORY ?? '4G').split(',').map((t) => t.trim()).filter(Boolean);
    for (const size of sizes) {
      if (size === 'off') continue;
      const cg = await memoryCgroup(parseMemorySize(size));
      if ('skipped' in cg) {
        console.log(`\nresponder: agent memory inside a ${size} memory cgroup: skipped, ${cg.skipped}`);
        continue;
      }
      try {
        await idleSessionsRow(childFile, echoPort, httpPort, cg);
      } finally {
        await cg.remove();
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  await baseRssRow();
}

const SETTLE_MS = Number(process.env.RESPONDER_BENCH_SETTLE_MS ?? 20_000);

async function idleSessionsRow(childFile: string, echoPort: number, httpPort: number, cgroup: MemoryCgroup | undefined): Promise<void> {
  const MB = 2 ** 20;
  const N = 1000;
  const launch = await shippedLaunch();
  const flags = [...launch.flags, ...(process.env.AGENT_NODE_FLAGS ?? '').split(' ').filter(Boolean)];
  const nodeArgs = ['--expose-gc', ...flags];
  const via = cgroup === undefined ? { execArgv: nodeArgs } : cgroup.forkVia(nodeArgs);
  const child = fork(childFile, ['--agent-child'], { ...via, env: launch.env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    await new Promise<void>((r) => child.once('message', () => r()));
    const ports = await askChild<Ports>(child, { cmd: 'start', echoPort, httpPort });
    const rss = (): Promise<RssReply> => askChild<RssReply>(child, { cmd: 'rss' });
    const closeAll = async (cs: NoiseClient[]): Promise<void> => {
      for (const c of cs) c.close();
      // Wait until the agent has seen every close.
      for (let i = 0; i < 100; i++) {
        if ((await rss()).sessions === 0) return;
        await new Promise((res) => setTimeout(res, 50));
      }
      throw new Error('sessions did not close');
    };
    const fresh = await rss();
    if (cgroup !== undefined && fresh.constrained !== cgroup.limitBytes) {
      throw new Error(`the agent child does not see the cgroup's limit (constrainedMemory() = ${fresh.constrained}, limit ${cgroup.limitBytes})`);
    }
    // Each reading twice: right after the change, and settled (idle SETTLE_MS: V8's memory reducer shrinks the
    // young generation the burst grew, the agent's malloc trim returns freed native pages).
    const settled = async (): Promise<[RssReply, RssReply]> => {
      const now = await rss();
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      return [now, await rss()];
    };
    const first = await openIdleSessions(ports.streamAgent, N);
    const withFirst = await settled();
    await closeAll(first);
    const afterFirst = await settled();
    const second = await openIdleSessions(ports.streamAgent, N);
    const withSecond = await settled();
    await closeAll(second);
    const afterSecond = await settled();
    const kib = (bytes: number): number => bytes / 1024 / N;
    const load = loadAverage();
    const v = (r: RssReply): (number | string)[] => [r.rss / MB, r.heapUsed / MB, r.external / MB, `${(r.newSpace / MB).toFixed(1)} / ${(r.newSpaceResident / MB).toFixed(1)}`];
    const perSession = (bytes: number): string => `${kib(bytes).toFixed(1)} ${kib(bytes) <= 16 ? '≤ 16 ✓' : '> 16 ✗'}`;
    const where =
      cgroup === undefined
        ? `no memory limit (${(os.totalmem() / 2 ** 30).toFixed(1)} GiB machine)`
        : `inside a ${(cgroup.limitBytes / 2 ** 30).toFixed(1)} GiB memory cgroup (v${cgroup.version}), as an enclave of that size`;
    const when = ['right after', `settled, ${SETTLE_MS / 1000} s idle`];
    const added = (name: string, r: [RssReply, RssReply], from: [RssReply, RssReply]): (number | string)[][] =>
      r.map((x, i) => [`${name}: ${when[i]}`, String(x.sessions), ...v(x), (x.rss - from[i]!.rss) / MB, perSession(x.rss - from[i]!.rss), kib(x.heapUsed - from[i]!.heapUsed), '']);
    const returned = (name: string, r: [RssReply, RssReply], open: [RssReply, RssReply]): (number | string)[][] =>
      r.map((x, i) => [`${name}: ${when[i]}`, String(x.sessions), ...v(x), '', '', '', (open[i]!.rss - x.rss) / MB]);
    printTable(`responder: agent memory, fresh process, ${where}; V8 heap limit ${(fresh.heapLimit / MB).toFixed(0)} MiB; ${N.toLocaleString('en-US')} idle attested sessions at a time (each reading after 3 forced GCs); load average ${load}`, [
      ['state', 'sessions', 'RSS MiB', 'JS heap MiB', 'external MiB', 'new space MiB committed / resident', 'RSS added MiB', 'RSS per session KiB (target ≤ 16)', 'heap per session KiB', 'RSS returned on close MiB'],
      ['fresh agent process (listening, nothing run)', String(fresh.sessions), ...v(fresh), '', '', '', ''],
      ...added(`first ${N.toLocaleString('en-US')} idle attested sessions`, withFirst, [fresh, fresh]),
      ...returned('after closing them', afterFirst, withFirst),
      ...added(`second ${N.toLocaleString('en-US')} (from the level after closing the first)`, withSecond, afterFirst),
      ...returned('after closing them', afterSecond, withSecond),
    ]);
  } finally {
    if (child.connected) child.send({ cmd: 'stop' });
    const force = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(force);
  }
}

/** The Docker layer's bundled `enclave-agent run`, fresh, at rest (agent-bundle.ts), beside a bare node. */
async function baseRssRow(): Promise<void> {
  const MB = 2 ** 20;
  const base = await bundledAgentIdleRss();
  printTable(`responder: base RSS of the bundled agent at rest (enclave-agent run from the Docker layer's bundle, node ${base.flags.join(' ') || '(no flags)'}${base.arenas === undefined ? '' : `, MALLOC_ARENA_MAX=${base.arenas}`}; TCP listeners, NSM simulator, default config; idle 20 s after "runtime started", V8's idle GCs done); load average ${loadAverage()}`, [
    ['process', 'RSS MiB', 'anonymous MiB', 'target'],
    ['bare node, same flags (the floor)', base.bareRss / MB, '', ''],
    ['bundled agent, idle, before any session', base.rss / MB, base.anon / MB, base.rss / MB <= 60 ? '≤ 60 MiB ✓' : '> 60 MiB ✗'],
    [`the same after ${base.threads} sessions at once (every session thread started) closed, idle`, base.afterSessions.rss / MB, base.afterSessions.anon / MB, ''],
  ]);
}

if (process.argv.includes('--agent-child')) {
  void agentChild();
} else if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === SELF) {
  void bench();
}

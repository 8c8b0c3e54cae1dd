// Egress: bulk throughput through the egress path vs a direct TCP connection to the same server, and the
// connect time it adds. Three processes, as deployed: this one (the app, and the servers on 127.0.0.2), an
// "enclave" child (the explicit proxy of src/egress), a "host" child (the host dialer and a DNS server), the
// two children linked by a UNIX socket standing in for vsock (one stream per flow, ≤ 32 KiB writes).
// Targets (issue 15): throughput ≥ 0.5× direct; added connect time ≤ 1 ms on loopback. The connect table also
// splits the added time: a CONNECT the policy refuses (the enclave side alone: no host round trip), and a
// second enclave child without pre-opened dialer streams (each flow connects to the host itself), and a floor:
// two more children with the same topology and nothing but the bytes (what the hops cost on this machine).
//   npx tsx scripts/bench/egress.ts            (or: npm run bench -- egress)
//   CONNECTS=N ROUNDS=N change the sample counts; SETTLE_MS=N pauses before each connect
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { askChild, loadAverage, printTable, procCpuSource, procCpuUs, ratio, serveChild } from './lib.ts';

const SELF = fileURLToPath(import.meta.url);
const SERVER_IP = '127.0.0.2';
const BULK_BYTES = 64 * 1024 * 1024;
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const CONNECTS = Number(process.env.CONNECTS ?? 300);
/** A pause before each connect, so the previous flow's teardown (through three processes) is not measured with it. */
const SETTLE_MS = Number(process.env.SETTLE_MS ?? 0);

// ---- children ------------------------------------------------------------------------------------------------

/** What a child is started with: the host dialer's socket, and for an enclave child the servers' ports. */
interface ChildStart {
  sock: string;
  ports?: number[];
  pool?: boolean;
}

function hostChild(): void {
  serveChild<ChildStart>(async (msg) => {
    const { startEgressDialer } = await import('../../src/host/egress-dialer.ts');
    const dgram = await import('node:dgram');
    // The parent's resolver: answers ok.test → 127.0.0.2 (A, TTL 60).
    const dns = dgram.createSocket('udp4');
    dns.on('message', (q, from) => {
      const end = q.indexOf(0, 12) + 5;
      const head = Buffer.from(q.subarray(0, 12));
      head.writeUInt16BE(0x8180, 2);
      head.writeUInt16BE(1, 6);
      const rr = Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 2]);
      dns.send(Buffer.concat([head, q.subarray(12, end), rr]), from.port, from.address);
    });
    await new Promise<void>((r) => dns.bind({ address: '127.0.0.1', port: 0 }, () => r()));
    await startEgressDialer({ listen: { kind: 'unix', path: msg.sock }, resolvers: [{ host: '127.0.0.1', port: dns.address().port }], allowNonGlobal: [`${SERVER_IP}/32`] });
    return { ok: true };
  });
}

function enclaveChild(): void {
  serveChild<ChildStart>(async (msg) => {
    const { startEgress } = await import('../../src/egress/service.ts');
    const { configFromObject } = await import('../../src/config.ts');
    const { connectStream } = await import('../../src/transport/connect.ts');
    const ports = msg.ports!;
    const destinations = [...ports.map((p) => `ok.test:${p}`), ...ports.map((p) => `${SERVER_IP}:${p}`)];
    const config = configFromObject({ egress: { enabled: true, destinations } });
    const egress = await startEgress({
      egress: config.egress,
      proxyPort: 0,
      dialer: () => connectStream({ kind: 'unix', path: msg.sock }),
      ...(msg.pool === false ? { dialerPoolSize: 0 } : {}),
    });
    return { port: Number(new URL(egress.proxyUrl).port) };
  });
}

// The floor: the same topology (client → proxy process → host process over a UNIX socket, two streams opened
// ahead of need → the server) with nothing but the bytes: no policy, framing, timers, logs or byte counts. What
// the three processes and their hops cost on this machine, whatever the code; the egress rows sit on top of it.
function floorHostChild(): void {
  serveChild<ChildStart>(async (msg) => {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.once('data', (d: Buffer) => {
        const [ip, port] = d.toString('latin1').split(':');
        const up = net.connect({ host: ip, port: Number(port), noDelay: true, allowHalfOpen: true }, () => {
          s.write('K');
          s.pipe(up);
          up.pipe(s);
        });
        up.on('error', () => s.destroy());
        s.on('close', () => up.destroy());
      });
    });
    await new Promise<void>((r) => server.listen(msg.sock, () => r()));
    return { ok: true };
  });
}

function floorProxyChild(): void {
  serveChild<ChildStart>(async (msg) => {
    const idle: net.Socket[] = [];
    const dial = (): net.Socket => net.connect({ path: msg.sock }).on('error', () => {});
    const refill = (): void => {
      while (idle.length < 2) idle.push(dial());
    };
    refill();
    const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.once('data', (d: Buffer) => {
        const target = d.toString('latin1').split(' ')[1]!;
        const h = idle.shift() ?? dial(); // as the agent's pool: none ready, connect for this flow
        h.write(target);
        h.once('data', () => {
          s.write('HTTP/1.1 200 Connection Established\r\n\r\n');
          s.pipe(h);
          h.pipe(s);
        });
        s.on('close', () => h.destroy());
        h.on('close', () => {
          s.destroy();
          setImmediate(refill);
        });
      });
    });
    await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    return { port: (server.address() as net.AddressInfo).port };
  });
}

function spawnChild(flag: string): Promise<ChildProcess> {
  const child = fork(SELF, [flag], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve) => child.once('message', () => resolve(child)));
}

// ---- servers and clients (this process) --------------------------------------------------------------------------

async function listen(onConn: (s: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    s.on('error', () => {});
    onConn(s);
  });
  await new Promise<void>((r) => server.listen({ host: SERVER_IP, port: 0 }, () => r()));
  return server;
}
const portOf = (s: net.Server): number => (s.address() as net.AddressInfo).port;

/** A connected socket to `port` on SERVER_IP, directly or through CONNECT on the proxy (`host` = name or IP). */
function open(port: number, via: { proxy: number; host: string; status?: number } | null): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: via ? '127.0.0.1' : SERVER_IP, port: via ? via.proxy : port, noDelay: true, allowHalfOpen: true });
    s.once('error', reject);
    if (!via) {
      s.once('connect', () => resolve(s));
      return;
    }
    s.once('connect', () => s.write(`CONNECT ${via.host}:${port} HTTP/1.1\r\nhost: ${via.host}:${port}\r\n\r\n`));
    let head = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      head = Buffer.concat([head, c]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      if (!head.subarray(0, 12).toString().includes(` ${via.status ?? 200}`)) reject(new Error(head.toString()));
      else {
        s.pause();
        if (end + 4 < head.length) s.unshift(head.subarray(end + 4));
        resolve(s);
      }
    };
    s.on('data', onData);
  });
}

const CHUNK = Buffer.alloc(64 * 1024, 0x5a);

/** Writes BULK_BYTES to `s`, honouring backpressure, then ends it. */
function sendBulk(s: net.Socket): void {
  let sent = 0;
  const pump = (): void => {
    while (sent < BULK_BYTES) {
      sent += CHUNK.length;
      if (!s.write(CHUNK)) return void s.once('drain', pump);
    }
    s.end();
  };
  pump();
}

/** Upload: write BULK_BYTES, half-close, wait for the server's byte count. MB/s. */
async function upload(port: number, via: { proxy: number; host: string } | null): Promise<number> {
  const s = await open(port, via);
  const t = performance.now();
  await new Promise<void>((resolve, reject) => {
    s.on('error', reject);
    s.on('data', () => {});
    s.on('end', () => resolve());
    s.resume();
    sendBulk(s);
  });
  s.destroy();
  return BULK_BYTES / 1e6 / ((performance.now() - t) / 1000);
}

/** Download: read BULK_BYTES until the server's FIN. MB/s. */
async function download(port: number, via: { proxy: number; host: string } | null): Promise<number> {
  const s = await open(port, via);
  const t = performance.now();
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    s.on('error', reject);
    s.on('data', (c: Buffer) => (got += c.length));
    s.on('end', () => resolve());
    s.resume();
    s.end('go');
  });
  s.destroy();
  if (got !== BULK_BYTES) throw new Error(`download got ${got} bytes`);
  return BULK_BYTES / 1e6 / ((performance.now() - t) / 1000);
}

/** One connection: ms until usable (direct: connected; egress: the proxy's 200 after the host dialed), and ms for a 1-byte round trip on it. */
async function connectOnce(port: number, via: { proxy: number; host: string; status?: number } | null): Promise<[number, number]> {
  const t0 = performance.now();
  const s = await open(port, via);
  const t1 = performance.now();
  if (via?.status !== undefined) {
    s.destroy();
    return [t1 - t0, NaN];
  }
  await new Promise<void>((resolve, reject) => {
    s.once('data', () => resolve());
    s.once('error', reject);
    s.resume();
    s.write('x');
  });
  const t2 = performance.now();
  s.destroy();
  return [t1 - t0, t2 - t1];
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export default async function bench(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'egress-bench-'));
  const sock = path.join(dir, 'host.sock');
  const sink = await listen((s) => {
    let n = 0;
    s.on('data', (c: Buffer) => (n += c.length));
    s.on('end', () => s.end(String(n)));
  });
  const source = await listen((s) => {
    s.once('data', () => {
      sendBulk(s);
    });
    s.on('end', () => {});
  });
  const echo = await listen((s) => {
    s.on('data', (c: Buffer) => s.write(c));
    s.on('end', () => s.end()); // else every flow stays half-open on the host (and counts against its flow cap)
  });
  const host = await spawnChild('--egress-bench-host');
  const enclave = await spawnChild('--egress-bench-enclave');
  const enclaveNoPool = await spawnChild('--egress-bench-enclave');
  const floorHost = await spawnChild('--egress-bench-floor-host');
  const floorProxy = await spawnChild('--egress-bench-floor-proxy');
  try {
    await askChild(host, { cmd: 'start', sock });
    const ports = [portOf(sink), portOf(source), portOf(echo)];
    const { port: proxy } = await askChild<{ port: number }>(enclave, { cmd: 'start', sock, ports });
    const { port: proxyNoPool } = await askChild<{ port: number }>(enclaveNoPool, { cmd: 'start', sock, ports, pool: false });
    await askChild(floorHost, { cmd: 'start', sock: path.join(dir, 'floor.sock') });
    const { port: proxyFloor } = await askChild<{ port: number }>(floorProxy, { cmd: 'start', sock: path.join(dir, 'floor.sock') });
    const byName = { proxy, host: 'ok.test' };
    const byIp = { proxy, host: SERVER_IP };

    const up = { direct: [] as number[], egress: [] as number[] };
    const down = { direct: [] as number[], egress: [] as number[] };
    // On-CPU time of the three processes per MB moved: it holds on a shared machine better than MB/s does.
    const cpu = { upDirect: [] as number[], upEgress: [] as number[], downDirect: [] as number[], downEgress: [] as number[] };
    // process.cpuUsage (getrusage), not schedstat: a relay thread that ended with its flow still counts.
    const cpuNow = async (): Promise<number> => {
      const u = process.cpuUsage();
      const children = await Promise.all([enclave, host].map((c) => askChild<{ cpuUs: number }>(c, { cmd: 'cpu' })));
      return u.user + u.system + children.reduce((t, c) => t + c.cpuUs, 0);
    };
    const measured = async (mbps: number[], usPerMb: number[], run: () => Promise<number>): Promise<void> => {
      const before = await cpuNow();
      mbps.push(await run());
      usPerMb.push(((await cpuNow()) - before) / (BULK_BYTES / 1e6));
    };
    await upload(portOf(sink), byName); // warm-up
    for (let r = 0; r < ROUNDS; r++) {
      await measured(up.direct, cpu.upDirect, () => upload(portOf(sink), null));
      await measured(up.egress, cpu.upEgress, () => upload(portOf(sink), byName));
      await measured(down.direct, cpu.downDirect, () => download(portOf(source), null));
      await measured(down.egress, cpu.downEgress, () => download(portOf(source), byName));
    }
    const mb = (x: number): string => `${x.toFixed(0)} MB/s`;
    if (ROUNDS > 0) printTable(`egress bulk throughput (${BULK_BYTES / 2 ** 20} MiB per transfer, median of ${ROUNDS} interleaved rounds)`, [
      ['direction', 'direct TCP', 'through egress', 'ratio (target ≥ 0.5×)'],
      ['app → server (upload)', mb(median(up.direct)), mb(median(up.egress)), ratio(median(up.egress), median(up.direct), 0.5)],
      ['server → app (download)', mb(median(down.direct)), mb(median(down.egress)), ratio(median(down.egress), median(down.direct), 0.5)],
    ]);
    const us = (x: number): string => `${x.toFixed(0)} µs`;
    if (ROUNDS > 0) printTable(`egress CPU per MB moved (app + servers, enclave side, host dialer together; getrusage; load average ${loadAverage()})`, [
      ['direction', 'direct TCP', 'through egress', 'egress / direct'],
      ['app → server (upload)', us(median(cpu.upDirect)), us(median(cpu.upEgress)), `${(median(cpu.upEgress) / median(cpu.upDirect)).toFixed(2)}×`],
      ['server → app (download)', us(median(cpu.downDirect)), us(median(cpu.downEgress)), `${(median(cpu.downEgress) / median(cpu.downDirect)).toFixed(2)}×`],
    ]);

    // Interleaved, so load on the machine falls on all paths alike. The name is resolved once, then cached (TTL).
    const paths = {
      direct: null,
      ip: byIp,
      name: byName,
      refused: { proxy, host: SERVER_IP, status: 403 }, // port 1: no entry
      noPool: { proxy: proxyNoPool, host: SERVER_IP },
      floor: { proxy: proxyFloor, host: SERVER_IP },
    } as const;
    const times = Object.fromEntries(Object.keys(paths).map((k) => [k, [[], []]])) as unknown as Record<keyof typeof paths, [number[], number[]]>;
    const portFor = (k: keyof typeof paths): number => (k === 'refused' ? 1 : portOf(echo));
    // The order rotates each round: the path measured right after direct TCP came out ~0.3 ms slower on a busy
    // machine, whichever it was.
    const keys = Object.keys(paths) as (keyof typeof paths)[];
    for (let i = 0; i < CONNECTS + 20; i++) {
      for (const k of [...keys.slice(i % keys.length), ...keys.slice(0, i % keys.length)]) {
        if (SETTLE_MS > 0) await new Promise((r) => setTimeout(r, SETTLE_MS));
        const [c, rt] = await connectOnce(portFor(k), paths[k]);
        if (i >= 20) {
          times[k][0].push(c);
          times[k][1].push(rt);
        }
      }
    }
    const m = (k: keyof typeof paths, j: 0 | 1): number => median(times[k][j]);
    const added = (k: keyof typeof paths, target = true): string => {
      const d = m(k, 0) - m('direct', 0);
      return `+${d.toFixed(3)} ms${target ? (d <= 1 ? ' (≤ 1 ✓)' : ' (> 1 ✗)') : ''}`;
    };
    const rt = (k: keyof typeof paths): string => (Number.isNaN(m(k, 1)) ? '' : `${m(k, 1).toFixed(3)} ms`);
    printTable(`egress connect time (median of ${CONNECTS}, interleaved, order rotated; load average ${loadAverage()})`, [
      ['path', 'connect (until usable)', 'added (target ≤ 1 ms)', '1-byte round trip after'],
      ['direct TCP', `${m('direct', 0).toFixed(3)} ms`, '', rt('direct')],
      ['egress, IP entry (CONNECT 127.0.0.2:p)', `${m('ip', 0).toFixed(3)} ms`, added('ip'), rt('ip')],
      ['egress, name entry (cached after the first DNS)', `${m('name', 0).toFixed(3)} ms`, added('name'), rt('name')],
      ['  of which the enclave side: CONNECT refused by policy (403, no host round trip)', `${m('refused', 0).toFixed(3)} ms`, added('refused', false), ''],
      ['  IP entry without pre-opened dialer streams (connect per flow)', `${m('noPool', 0).toFixed(3)} ms`, added('noPool', false), rt('noPool')],
      ['floor: the same three processes and hops with nothing but the bytes (20 lines, no checks)', `${m('floor', 0).toFixed(3)} ms`, added('floor', false), rt('floor')],
    ]);

    // CPU time each process spends per connect (on-CPU, so it holds on a loaded machine better than latency does).
    const cpuRows: string[][] = [];
    for (const [label, via, enclaveChild, hostChild] of [
      ['direct TCP', null, null, null],
      ['IP entry, pre-opened dialer streams', byIp, enclave, host],
      ['IP entry, connect per flow', { proxy: proxyNoPool, host: SERVER_IP }, enclaveNoPool, host],
      ['floor (only the bytes)', { proxy: proxyFloor, host: SERVER_IP }, floorProxy, floorHost],
    ] as const) {
      const pids = enclaveChild === null ? [process.pid] : [process.pid, enclaveChild.pid!, hostChild.pid!];
      const before = pids.map(procCpuUs);
      for (let i = 0; i < CONNECTS; i++) (await open(portOf(echo), via)).destroy();
      await new Promise((r) => setTimeout(r, 200)); // the teardown of the last flows
      const per = pids.map((p, i) => (procCpuUs(p) - before[i]!) / CONNECTS);
      cpuRows.push([label, ...per.map((us) => `${us.toFixed(0)} µs`), ...(enclaveChild === null ? ['', ''] : [])]);
    }
    printTable(`egress CPU per connect (${CONNECTS} sequential connects, ${procCpuSource})`, [['path', 'app + servers', 'enclave side (proxy)', 'host dialer'], ...cpuRows]);
  } finally {
    host.kill();
    enclave.kill();
    enclaveNoPool.kill();
    floorHost.kill();
    floorProxy.kill();
    sink.close();
    source.close();
    echo.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv.includes('--egress-bench-floor-host')) floorHostChild();
else if (process.argv.includes('--egress-bench-floor-proxy')) floorProxyChild();
else if (process.argv.includes('--egress-bench-host')) hostChild();
else if (process.argv.includes('--egress-bench-enclave')) enclaveChild();
else if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === SELF) void bench().then(() => process.exit(0));

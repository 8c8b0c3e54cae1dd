// HTTP mode: small GET requests per second and p50/p99 latency through the agent's HTTP pipeline versus
// direct keep-alive HTTP (undici) to the same app, at concurrency 1 and 64, all measured in one run.
//
// Rows are `BenchPath`s: each opens its own client and returns a `request()` that performs one GET and
// resolves when the complete response is in. The integrator adds the full-session row ("through the
// session": Noise + wire framing + responder in front of the same forwarder) by pushing another BenchPath
// onto `paths` (or calling `runHttpBench` with extra paths); the baseline stays the first row.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Pool } from 'undici';
import pino from 'pino';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import type { ForwardContext } from '../../src/responder/forwarder.ts';
import { percentile, printTable, ratio } from './lib.ts';

const DURATION_MS = Number(process.env.BENCH_HTTP_MS ?? 1500);
const WARMUP_MS = 300;
const CONCURRENCY = [1, 64];

export interface BenchEnv {
  appPort: number;
  /** One shared HTTP-mode forwarder pointed at the app (trx logging to a no-op sink). */
  forwarder: HttpForwarder;
}

export interface BenchClient {
  request(): Promise<void>;
  close(): Promise<void>;
}

export interface BenchPath {
  name: string;
  /** Opens a client able to run `concurrency` requests at once. */
  open(env: BenchEnv, concurrency: number): Promise<BenchClient>;
}

const REQUEST = 'GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n';

function ctx(kind: 'data' | 'stream'): ForwardContext {
  return { sessionId: 'bench', kind, handshakeHash: new Uint8Array(32), attest: async () => new Uint8Array(0) };
}

/** Resolves with the bytes of a stream once it ends. */
function readToEnd(d: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    d.on('data', (c: Buffer) => chunks.push(c));
    d.once('end', () => resolve(Buffer.concat(chunks)));
    d.once('error', reject);
  });
}

/** Sequential responses (Content-Length framed) from one keep-alive stream. */
class StreamClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiting: (() => void) | null = null;

  constructor(readonly d: Duplex) {
    d.on('data', (c: Buffer) => {
      this.buf = this.buf.length === 0 ? c : Buffer.concat([this.buf, c]);
      const w = this.waiting;
      this.waiting = null;
      w?.();
    });
  }

  async request(): Promise<void> {
    this.d.write(REQUEST + '\r\n');
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end >= 0) {
        const head = this.buf.subarray(0, end).toString('latin1');
        const m = /\r\ncontent-length: (\d+)/i.exec(head);
        if (!head.startsWith('HTTP/1.1 200') || m === null) throw new Error(`unexpected response: ${head.slice(0, 80)}`);
        const total = end + 4 + Number(m[1]);
        if (this.buf.length >= total) {
          this.buf = this.buf.subarray(total);
          return;
        }
      }
      await new Promise<void>((r) => (this.waiting = r));
    }
  }
}

export const paths: BenchPath[] = [
  {
    name: 'direct keep-alive (undici → app)',
    async open(env, concurrency) {
      const pool = new Pool(`http://127.0.0.1:${env.appPort}`, { connections: concurrency, pipelining: 1 });
      return {
        async request() {
          const res = await pool.request({ path: '/small', method: 'GET', headers: { 'user-agent': 'bench' } });
          await res.body.text();
          if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
        },
        close: () => pool.close(),
      };
    },
  },
  {
    name: 'agent HTTP mode, Data (Duplex per request, Connection: close)',
    async open(env) {
      return {
        async request() {
          const d = await env.forwarder.connect(ctx('data'));
          const done = readToEnd(d);
          d.end(REQUEST + 'Connection: close\r\n\r\n');
          const res = await done;
          if (res.subarray(0, 12).toString('latin1') !== 'HTTP/1.1 200') throw new Error('unexpected response');
        },
        close: async () => {},
      };
    },
  },
  {
    name: 'agent HTTP mode, keep-alive stream per worker',
    async open(env, concurrency) {
      const streams: StreamClient[] = [];
      for (let i = 0; i < concurrency; i++) streams.push(new StreamClient(await env.forwarder.connect(ctx('stream'))));
      const idle = [...streams];
      return {
        async request() {
          const s = idle.pop();
          if (s === undefined) throw new Error('more concurrent requests than streams');
          try {
            await s.request();
          } finally {
            idle.push(s);
          }
        },
        close: async () => {
          for (const s of streams) s.d.destroy();
        },
      };
    },
  },
];

interface Result {
  rps: number;
  p50: number;
  p99: number;
}

async function drive(client: BenchClient, concurrency: number, ms: number, latencies: number[] | null): Promise<number> {
  let count = 0;
  const end = performance.now() + ms;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const t = performance.now();
      await client.request();
      latencies?.push(performance.now() - t);
      count++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return count;
}

async function measurePath(path: BenchPath, env: BenchEnv, concurrency: number): Promise<Result> {
  const client = await path.open(env, concurrency);
  try {
    await drive(client, concurrency, WARMUP_MS, null);
    const latencies: number[] = [];
    const started = performance.now();
    const count = await drive(client, concurrency, DURATION_MS, latencies);
    const elapsed = performance.now() - started;
    latencies.sort((a, b) => a - b);
    return { rps: (count * 1000) / elapsed, p50: percentile(latencies, 50), p99: percentile(latencies, 99) };
  } finally {
    await client.close();
  }
}

export async function runHttpBench(extra: BenchPath[] = []): Promise<void> {
  const body = Buffer.from('{"ok":true}');
  const app = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
  app.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as AddressInfo).port;
  const forwarder = createHttpForwarder({
    appPort,
    logger: pino({ level: 'silent' }),
    // Records are built and serialized (the real cost) but go nowhere.
    logSink: { write: (r) => void JSON.stringify(r), close: async () => {} },
  });
  const env: BenchEnv = { appPort, forwarder };
  const all = [...paths, ...extra];
  try {
    for (const c of CONCURRENCY) {
      const rows: (string | number)[][] = [['path', 'req/s', 'vs direct', 'p50 ms', 'p99 ms']];
      let baseline = NaN;
      for (const p of all) {
        const r = await measurePath(p, env, c);
        if (Number.isNaN(baseline)) baseline = r.rps;
        rows.push([p.name, r.rps, ratio(r.rps, baseline), r.p50, r.p99]);
      }
      printTable(`HTTP mode: small GET, concurrency ${c} (${DURATION_MS} ms per row, app in the same process)`, rows);
    }
  } finally {
    await forwarder.close();
    app.closeAllConnections();
    await new Promise<void>((r) => app.close(() => r()));
  }
}

export default async function bench(): Promise<void> {
  await runHttpBench();
}

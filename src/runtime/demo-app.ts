// The built-in demo app of `enclave-agent start`: what the agent forwards to when nothing listens on the app
// port, so the first run shows something. A plain node:http server on 127.0.0.1:
//   GET  /        a short JSON greeting
//   ANY  /echo    {"method", "path", "headers", "body"}: exactly what the app received (after the agent)
//   GET  /health  200 {"status": "ok"}
//   GET  /fetch?url=URL  fetches URL through the egress proxy (what an app does with HTTPS_PROXY) and answers
//                 {"url", "status", "bytes", "body" (the first 2 KiB as text)}, or 502 {"error"} when egress
//                 refused or failed
// Every response carries `x-enclave-agent-demo: 1`, so `start` and `pcrs` can tell the demo from a real app.
import http from 'node:http';
import type net from 'node:net';
import { fetch as undiciFetch, ProxyAgent } from 'undici';
import { toBase64 } from '../util/bytes.ts';
import { RuntimeError } from './errors.ts';

export const DEMO_HEADER = 'x-enclave-agent-demo';

export interface DemoAppOptions {
  /** 0 picks a free port. */
  port: number;
  /** Shown in the greeting (enclave.toml `name`). */
  name?: string;
  /** Bodies above this get 413. Default 16 MiB. */
  maxBodyBytes?: number;
  /** The egress proxy URL for GET /fetch (read per request: the stack starts it after the app). */
  egressProxy?: () => string | null;
}

export interface DemoApp {
  readonly port: number;
  /** Stops listening and closes every connection. Idempotent. */
  close(): Promise<void>;
}

/** What POST /echo answers. `body` is the UTF-8 text, or null with `bodyBase64` when the bytes are not UTF-8. */
export interface EchoReply {
  method: string;
  path: string;
  /** Lower-case names; a header received several times is an array, in order. */
  headers: Record<string, string | string[]>;
  body: string | null;
  bodyBase64?: string;
}

const utf8Strict = new TextDecoder('utf-8', { fatal: true });

function headersOf(raw: string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [prev, value];
  }
  return out;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), [DEMO_HEADER]: '1' });
  res.end(text);
}

const FETCH_PREVIEW_BYTES = 2048;
const FETCH_TIMEOUT_MS = 15_000;

/** GET /fetch?url=: the URL fetched through the egress proxy, as an app in the enclave would. */
async function fetchThroughEgress(path: string, proxy: string | null): Promise<[number, unknown]> {
  const url = new URL(path, 'http://demo').searchParams.get('url');
  if (url === null || !/^https?:\/\//i.test(url)) return [400, { error: 'give ?url=http://… or https://…' }];
  if (proxy === null) return [503, { error: 'no egress proxy in this stack' }];
  const dispatcher = new ProxyAgent(proxy);
  try {
    const res = await undiciFetch(url, { dispatcher, redirect: 'manual', signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    const bytes = Buffer.from(await res.arrayBuffer());
    return [200, { url, via: proxy, status: res.status, bytes: bytes.length, body: bytes.subarray(0, FETCH_PREVIEW_BYTES).toString('utf8') }];
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message;
    return [502, { url, via: proxy, error: `egress refused or failed: ${cause ?? (err as Error).message}` }];
  } finally {
    void dispatcher.close().catch(() => {});
  }
}

export async function startDemoApp(opts: DemoAppOptions): Promise<DemoApp> {
  const name = opts.name ?? 'enclave';
  const maxBody = opts.maxBodyBytes ?? 16 * 1024 * 1024;
  const sockets = new Set<net.Socket>();

  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    const pathname = path.split('?')[0];
    if (pathname === '/echo') {
      const chunks: Buffer[] = [];
      let size = 0;
      let tooLarge = false;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBody) tooLarge = true;
        else chunks.push(c);
      });
      req.on('end', () => {
        if (tooLarge) {
          send(res, 413, { error: `body larger than ${maxBody} bytes` });
          return;
        }
        const bytes = Buffer.concat(chunks);
        const reply: EchoReply = { method: req.method ?? '', path, headers: headersOf(req.rawHeaders), body: null };
        try {
          reply.body = utf8Strict.decode(bytes);
        } catch {
          reply.bodyBase64 = toBase64(bytes);
        }
        send(res, 200, reply);
      });
      req.on('error', () => res.destroy());
      return;
    }
    req.resume();
    if (req.method === 'GET' && pathname === '/fetch') {
      void fetchThroughEgress(path, opts.egressProxy?.() ?? null).then(([status, body]) => send(res, status, body));
      return;
    }
    if (req.method === 'GET' && pathname === '/') {
      send(res, 200, { message: `Hello from ${name}, running behind enclave-agent (demo app)`, try: 'POST /echo shows exactly what the app received' });
    } else if ((req.method === 'GET' || req.method === 'HEAD') && pathname === '/health') {
      send(res, 200, { status: 'ok' });
    } else {
      send(res, 404, { error: `no route ${req.method ?? ''} ${pathname ?? ''}`, routes: ['GET /', 'POST /echo', 'GET /fetch?url=', 'GET /health'] });
    }
  });
  server.keepAliveTimeout = 65_000;
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void =>
      reject(new RuntimeError('RUNTIME_BAD_OPTIONS', `demo app: cannot listen on 127.0.0.1:${opts.port}: ${err.code ?? err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen({ host: '127.0.0.1', port: opts.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;

  let closed: Promise<void> | undefined;
  return {
    port,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        for (const s of sockets) s.destroy();
      });
      return closed;
    },
  };
}

/** True when 127.0.0.1:`port` answers HTTP as the demo app does (another `start` already runs it there). */
export function isDemoApp(port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/health', timeout: timeoutMs, agent: false }, (res) => {
      resolve(res.headers[DEMO_HEADER] === '1');
      req.destroy(); // a probe: never keep the connection (an app that answers early would hold it open)
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/**
 * The bridge's ops port on the parent instance: re-serves the agent's GET /metrics and GET /health (read from
 * the agent's ops port over vsock, or tcp/unix locally) to a load balancer and Prometheus, and keeps the clock
 * channel open so the agent can ask the host for the time (src/ops/clock-channel.ts). When the agent cannot be
 * reached, /health answers 503 {"status":"unhealthy","reason":"agent-unreachable"} and /metrics 503.
 */
import http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import pino, { type Logger } from 'pino';
import { CLOCK_PATH, CLOCK_UPGRADE, serveClockChannel } from '../ops/clock-channel.ts';
import { connectStream, describeTarget, type StreamTarget } from '../transport/connect.ts';
import { BridgeError } from './errors.ts';
import { listenOrFail } from './listen.ts';

export interface OpsProxyOptions {
  /** Where the load balancer and Prometheus connect (port 0 picks one). */
  listen: { host: string; port: number };
  /** The agent's ops port. */
  target: StreamTarget;
  /** Connect + answer from the agent (default 5 000 ms). */
  timeoutMs?: number;
  /** The host's clock for the clock channel (default Date.now; tests give a fake). */
  now?: () => number;
  /** Reconnect delay of the clock channel: from here, doubling up to 30 s (default 1 000 ms). */
  clockRetryMs?: number;
  logger?: Logger;
}

export interface OpsProxy {
  /** "http://127.0.0.1:9090" */
  readonly url: string;
  readonly port: number;
  /** True while the clock channel to the agent is open. */
  readonly clockConnected: boolean;
  close(): Promise<void>;
}

const MAX_BODY = 8 * 1024 * 1024;

interface AgentAnswer {
  status: number;
  type: string;
  body: Buffer;
}

/**
 * One GET over a fresh stream to the agent's ops port. It always settles, within `timeoutMs` of the connection:
 * concurrent requests share it (startOpsProxy), so one that stayed pending would hang every later request for
 * its path. The socket's idle timeout alone let a body trickled a byte at a time run on, and an answer Node
 * hands to no one (a 101 with no 'upgrade' listener: the socket is dropped, nothing emitted) never settled.
 */
async function fetchFromAgent(target: StreamTarget, path: string, timeoutMs: number): Promise<AgentAnswer> {
  const stream = await connectStream(target, { timeoutMs });
  let deadline: NodeJS.Timeout | undefined;
  return new Promise<AgentAnswer>((resolve, reject) => {
    const req = http.request({ method: 'GET', path, headers: { host: 'enclave-agent', connection: 'close' }, createConnection: () => stream as net.Socket });
    const fail = (err: BridgeError): void => {
      reject(err);
      req.destroy();
    };
    // One deadline for the whole answer (an idle timeout would let a trickled body run on).
    deadline = setTimeout(() => fail(new BridgeError('BRIDGE_OPS_TIMEOUT', `the agent did not answer ${path} within ${timeoutMs} ms`)), timeoutMs);
    req.once('error', reject);
    let answered = false;
    // Without a 'response' (an upgrade answer, a connection closed early) this is the only event left.
    req.once('close', () => {
      if (!answered) reject(new BridgeError('BRIDGE_OPS_FAILED', `the agent gave no answer to ${path} it could re-serve`));
    });
    req.once('response', (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) fail(new BridgeError('BRIDGE_OPS_TOO_LARGE', `the agent's ${path} answer is over ${MAX_BODY} bytes`));
        else chunks.push(c);
      });
      res.once('end', () => {
        // Re-served with writeHead, which throws on a status outside 100..999: only a final status is passed on.
        const status = res.statusCode ?? 0;
        if (status < 200 || status > 599) reject(new BridgeError('BRIDGE_OPS_FAILED', `the agent answered ${path} with HTTP ${status}`));
        else resolve({ status, type: String(res.headers['content-type'] ?? 'text/plain'), body: Buffer.concat(chunks) });
      });
      res.once('error', reject);
      // After 'end' (already settled) or when the answer was cut short.
      res.once('close', () => reject(new BridgeError('BRIDGE_OPS_FAILED', `the agent's ${path} answer was cut short`)));
    });
    req.end();
  }).finally(() => {
    clearTimeout(deadline);
    stream.destroy();
  });
}

/** Opens the clock channel (HTTP Upgrade on the ops port); resolves with the upgraded stream. */
async function openClockChannel(target: StreamTarget, timeoutMs: number): Promise<Duplex> {
  const stream = await connectStream(target, { timeoutMs });
  return new Promise((resolve, reject) => {
    const req = http.request({
      method: 'GET',
      path: CLOCK_PATH,
      headers: { host: 'enclave-agent', connection: 'Upgrade', upgrade: CLOCK_UPGRADE },
      createConnection: () => stream as net.Socket,
      timeout: timeoutMs,
    });
    req.once('timeout', () => req.destroy(new BridgeError('BRIDGE_OPS_TIMEOUT', `the agent did not open the clock channel within ${timeoutMs} ms`)));
    req.once('upgrade', (_res, socket: Duplex, head: Buffer) => {
      req.setTimeout(0);
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    req.once('response', (res) => {
      // Closed here: a peer that keeps a refusal alive would otherwise hold one more stream per retry.
      stream.destroy();
      reject(new BridgeError('BRIDGE_OPS_FAILED', `the agent refused the clock channel (HTTP ${res.statusCode ?? 0})`));
    });
    req.once('error', (err) => {
      stream.destroy();
      reject(err);
    });
    req.end();
  });
}

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

export async function startOpsProxy(opts: OpsProxyOptions): Promise<OpsProxy> {
  const log = (opts.logger ?? pino({ level: 'silent' })).child({ component: 'ops-proxy' });
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const agent = describeTarget(opts.target);

  // One fetch per path at a time, shared by every request that arrives meanwhile: the port's clients (a load
  // balancer, Prometheus, or anyone who reaches it) never open more than two streams to the agent, nor make it
  // probe the app once per request however many they send at once.
  const inflight = new Map<string, Promise<AgentAnswer>>();
  const fromAgent = (path: string): Promise<AgentAnswer> => {
    let p = inflight.get(path);
    if (p === undefined) {
      p = fetchFromAgent(opts.target, path, timeoutMs).finally(() => inflight.delete(path));
      inflight.set(path, p);
    }
    return p;
  };

  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    res.on('error', () => {});
    const path = (req.url ?? '/').split('?')[0]!;
    if (path !== '/metrics' && path !== '/health') {
      send(res, 404, 'application/json', JSON.stringify({ error: 'OPS_NOT_FOUND', message: 'this port serves GET /metrics and GET /health' }));
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'application/json', JSON.stringify({ error: 'OPS_METHOD_NOT_ALLOWED', message: 'expected GET or HEAD' }));
      return;
    }
    fromAgent(path)
      .then(
        (r) => send(res, r.status, r.type, r.body),
        (err: unknown) => {
          const code = (err as { code?: string }).code ?? 'error';
          log.warn({ agent, path, code }, 'ops: agent unreachable');
          if (path === '/health') send(res, 503, 'application/json', JSON.stringify({ status: 'unhealthy', reason: 'agent-unreachable', error: code }));
          else send(res, 503, 'text/plain', `agent unreachable (${code})\n`);
        },
      )
      // An answer writeHead refuses (a header value it rejects) drops this exchange, never the bridge process.
      .catch(() => res.destroy());
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await listenOrFail(server, opts.listen, 'ops');
  const port = (server.address() as net.AddressInfo).port;
  const host = opts.listen.host.includes(':') ? `[${opts.listen.host}]` : opts.listen.host;

  // The clock channel: kept open, reopened with backoff while the proxy runs.
  let closing = false;
  let channel: Duplex | null = null;
  let retryTimer: NodeJS.Timeout | null = null;
  const baseRetry = opts.clockRetryMs ?? 1_000;
  let retry = baseRetry;
  const connectClock = (): void => {
    if (closing) return;
    openClockChannel(opts.target, timeoutMs).then(
      (sock) => {
        if (closing) {
          sock.destroy();
          return;
        }
        channel = sock;
        retry = baseRetry;
        log.info({ agent }, 'ops: clock channel open');
        serveClockChannel(sock, opts.now);
        sock.once('close', () => {
          channel = null;
          scheduleClock();
        });
      },
      (err: unknown) => {
        log.debug({ agent, code: (err as { code?: string }).code ?? String(err) }, 'ops: clock channel not open; retrying');
        scheduleClock();
      },
    );
  };
  const scheduleClock = (): void => {
    if (closing) return;
    retryTimer = setTimeout(connectClock, retry);
    retryTimer.unref();
    retry = Math.min(retry * 2, 30_000);
  };
  connectClock();
  log.info({ url: `http://${host}:${port}`, agent }, 'ops port listening');

  let closed: Promise<void> | null = null;
  return {
    url: `http://${host}:${port}`,
    port,
    get clockConnected() {
      return channel !== null;
    },
    close() {
      closed ??= (async () => {
        closing = true;
        if (retryTimer !== null) clearTimeout(retryTimer);
        channel?.destroy();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
      return closed;
    },
  };
}

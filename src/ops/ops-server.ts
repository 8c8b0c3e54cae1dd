// The ops port (host-only: vsock [listen] ops_port inside an enclave, TCP on loopback in the local stack):
//   GET /metrics  Prometheus text (metrics.ts)
//   GET /health   200/503 + JSON (health.ts)
//   GET /clock    Upgrade: enclave-clock → the clock channel the agent asks the host's time over (clock-channel.ts)
// Nothing else (404). It carries no secrets: counters, states and the agent's own probe of the app. The ops
// port is only reachable from the parent instance; the bridge re-serves /metrics and /health there
// (src/host/ops-proxy.ts).
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Listener, ListenOptions } from '../transport/types.ts';
import { CLOCK_PATH, CLOCK_UPGRADE, type ClockChannelHub } from './clock-channel.ts';
import { healthReport, type HealthSources } from './health.ts';
import type { AgentMetrics } from './metrics.ts';

export interface OpsServerOptions {
  listen: (opts: ListenOptions) => Promise<Listener>;
  metrics: AgentMetrics;
  health: HealthSources;
  clock: ClockChannelHub;
  logger: Logger;
}

export interface OpsServer {
  readonly address: string;
  readonly port: number | undefined;
  close(): Promise<void>;
}

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

export async function startOpsServer(opts: OpsServerOptions): Promise<OpsServer> {
  const { metrics, logger } = opts;
  const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000 }, (req, res) => {
    res.on('error', () => {});
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'application/json', JSON.stringify({ error: 'OPS_METHOD_NOT_ALLOWED', message: `expected GET or HEAD, found ${String(req.method).slice(0, 16)}` }));
      return;
    }
    if (path === '/metrics') {
      metrics.metrics().then(
        (text) => send(res, 200, metrics.contentType, text),
        (err: unknown) => {
          logger.error({ err: String(err) }, 'ops: metrics collection failed');
          send(res, 500, 'text/plain', 'metrics collection failed\n');
        },
      );
    } else if (path === '/health') {
      healthReport(opts.health).then(
        (r) => send(res, r.status, 'application/json', JSON.stringify(r.body)),
        (err: unknown) => send(res, 503, 'application/json', JSON.stringify({ status: 'unhealthy', reason: 'health-check-failed', error: String((err as { code?: string }).code ?? 'error') })),
      );
    } else {
      send(res, 404, 'application/json', JSON.stringify({ error: 'OPS_NOT_FOUND', message: 'the ops port serves GET /metrics, GET /health and the clock channel' }));
    }
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    if (req.url !== CLOCK_PATH || String(req.headers.upgrade).toLowerCase() !== CLOCK_UPGRADE) {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: ${CLOCK_UPGRADE}\r\nconnection: Upgrade\r\n\r\n`);
    if (head.length > 0) socket.unshift(head);
    opts.clock.attach(socket);
    logger.debug('ops: clock channel attached');
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  // Node's headers-timeout tracking starts on 'listening'; this server never listens itself.
  server.emit('listening');
  const listener = await opts.listen({
    onConnection: (stream) => server.emit('connection', stream),
    onError: (err) => logger.warn({ err: (err as NodeJS.ErrnoException).code ?? err.message }, 'ops: accept failed'),
  });
  return {
    address: listener.address,
    port: listener.port,
    async close() {
      opts.clock.close();
      await listener.close();
      server.closeAllConnections();
      server.close();
    },
  };
}

/**
 * The host-side WebSocket bridge (runs on the parent instance, outside the enclave): each WebSocket from a
 * client becomes one byte stream to the agent (vsock in production; tcp/unix in development). The bridge never
 * parses or sees plaintext: it copies ciphertext, enforces limits and timeouts, and logs byte counts only.
 */
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import pino, { type Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { describeTarget, type StreamTarget } from '../transport/connect.ts';
import { clientKey } from '../util/ip-bytes.ts';
import { RateLimitedLog } from '../util/rate-limited-log.ts';
import { BridgeConnection } from './bridge-connection.ts';
import { CloseCode } from './close-codes.ts';
import { BridgeError } from './errors.ts';
import { listenOrFail } from './listen.ts';
import { startOpsProxy, type OpsProxy, type OpsProxyOptions } from './ops-proxy.ts';

export interface BridgeOptions {
  /** Where clients connect. Port 0 picks a free port (read it back from the result). */
  listen: { host: string; port: number };
  /** The agent's stream endpoint. */
  target: StreamTarget;
  /** PEM certificate chain and key: serve wss:// instead of ws://. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Write a PROXY protocol v2 header (the client's address) at the start of each agent stream. Default false. */
  proxyProtocol?: boolean;
  /** Concurrent WebSockets; more are answered HTTP 503 before the upgrade. Default 1024. */
  maxConnections?: number;
  /**
   * Connections not upgraded yet (TLS handshake, upgrade request on its way), each held up to the handshake
   * timeout; more are refused as they arrive: HTTP 503 (ws://), closed before the TLS handshake (wss://).
   * Default 1024.
   */
  maxPendingUpgrades?: number;
  /**
   * Of those, per client address (an IPv6 /64 counting as one): more from it are refused the same way. Default 64.
   * Upgraded WebSockets are not counted per client here: the agent does that with `--proxy-protocol`
   * (max_sessions_per_client), and a load balancer that hides client addresses would look like one client.
   */
  maxPendingUpgradesPerClient?: number;
  /**
   * Connecting to the agent plus its 48-byte handshake reply must fit in this. Default 10 000 ms. So must, before
   * it, the client's TLS handshake (wss) and its upgrade request.
   */
  handshakeTimeoutMs?: number;
  /** Close a connection with no bytes either way for this long; 0 disables. Default 600 000 ms. */
  idleTimeoutMs?: number;
  /**
   * Cut a connection whose client takes none of the bytes waiting for it for this long (it may still send:
   * one byte a minute defeats the idle timeout, not this). Default 30 000 ms.
   */
  writeStallTimeoutMs?: number;
  /** Largest WS message accepted from a client (larger → close 1009). Default 1 MiB. */
  maxPayload?: number;
  /**
   * Per direction and connection: bytes queued before the producer is paused. Default 1 MiB. The agent is read
   * again as soon as its client has taken what waits back to this (the agent's write-stall timeout counts while
   * it is not read); the WebSocket once the agent has taken it down to a quarter.
   */
  highWaterMark?: number;
  logger?: Logger;
  /** Also re-serve the agent's GET /metrics and GET /health here, read from its ops port (src/host/ops-proxy.ts). */
  ops?: Pick<OpsProxyOptions, 'listen' | 'target' | 'now' | 'clockRetryMs' | 'timeoutMs'>;
}

export interface Bridge {
  /** "ws://127.0.0.1:8443/" or "wss://…". */
  readonly url: string;
  readonly port: number;
  /** WebSockets currently open (and upgrades in progress). */
  readonly connections: number;
  /** Connections open that have not upgraded yet. */
  readonly pendingUpgrades: number;
  /** The ops port's base URL ("http://127.0.0.1:9090"), when `ops` was given. */
  readonly opsUrl: string | null;
  /** Stops accepting, closes every connection (1001), and resolves when all sockets are gone. */
  close(): Promise<void>;
}

const DEFAULTS = {
  maxConnections: 1024,
  maxPendingUpgrades: 1024,
  maxPendingUpgradesPerClient: 64,
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 600_000,
  writeStallTimeoutMs: 30_000,
  maxPayload: 1 << 20,
  highWaterMark: 1 << 20,
};

const SERVICE_UNAVAILABLE = 'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n';

/** How long shutdown waits for clients to answer the close handshake before cutting them off. */
const SHUTDOWN_GRACE_MS = 2000;

export async function startBridge(opts: BridgeOptions): Promise<Bridge> {
  const cfg = { ...DEFAULTS, ...definedOnly(opts) };
  checkPositiveInt('maxConnections', cfg.maxConnections, 1);
  checkPositiveInt('maxPendingUpgrades', cfg.maxPendingUpgrades, 1);
  checkPositiveInt('maxPendingUpgradesPerClient', cfg.maxPendingUpgradesPerClient, 1);
  checkPositiveInt('handshakeTimeoutMs', cfg.handshakeTimeoutMs, 1);
  checkPositiveInt('idleTimeoutMs', cfg.idleTimeoutMs, 0);
  checkPositiveInt('writeStallTimeoutMs', cfg.writeStallTimeoutMs, 1);
  checkPositiveInt('maxPayload', cfg.maxPayload, 1);
  checkPositiveInt('highWaterMark', cfg.highWaterMark, 1);
  const log = (opts.logger ?? pino({ level: 'silent' })).child({ component: 'bridge' });

  // A connection that has not upgraded holds a socket no connection limit counts: with Node's defaults (TLS
  // handshake 120 s, request head 60 s) a client opening connections and sending nothing kept each for a minute
  // or two. A client that means it sends its upgrade at once.
  const early = cfg.handshakeTimeoutMs;
  const timeouts = { headersTimeout: early, requestTimeout: early, connectionsCheckingInterval: Math.min(30_000, Math.max(10, Math.floor(early / 4))) };
  const server = opts.tls ? https.createServer({ cert: opts.tls.cert, key: opts.tls.key, handshakeTimeout: early, ...timeouts }) : http.createServer(timeouts);
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    maxPayload: cfg.maxPayload,
    // ws keeps every read of a frame not yet complete, and every fragment of a message, as its own Buffer
    // (~200 B of heap, ~600 B of RSS each): its defaults (262,144 reads, 16,384 fragments) let one client
    // trickling a byte per TCP segment hold ~160 MB (63 MB measured at 100,000). Pieces of 256 bytes on average keep that to ~2.5× the
    // payload; a client's message arrives in a few reads of a segment or more each, and browsers never fragment.
    maxBufferedChunks: maxPieces(cfg.maxPayload),
    maxFragments: maxPieces(cfg.maxPayload),
    perMessageDeflate: false, // ciphertext does not compress; and no compression oracle across the bridge
    skipUTF8Validation: true, // text frames are refused anyway
  });
  const live = new Set<BridgeConnection>();
  const sockets = new Set<Duplex>();
  let active = 0;
  // TCP connections open, upgraded or not: those not upgraded are `open - active`.
  let open = 0;
  // Their TCP sockets: over TLS, one still in its handshake is in no list of the HTTP server's, and server.close()
  // would wait for it until the handshake timeout.
  const accepted = new Set<net.Socket>();
  const refusedEarly = new WeakSet<Duplex>();
  // The same two counts per client address: without them one address could hold every pending slot (connections
  // that send nothing, renewed each handshake timeout) and the bridge answered everyone else 503. Counted, like
  // `open` and `active`, by address and not by socket: over TLS the upgrade comes on the TLSSocket, not the TCP one.
  const openBy = new Map<string, number>();
  const activeBy = new Map<string, number>();
  const add = (m: Map<string, number>, key: string, n: number): void => {
    const v = (m.get(key) ?? 0) + n;
    if (v > 0) m.set(key, v);
    else m.delete(key);
  };
  let closing = false;
  // One line per interval with counts, never one per refused connection (a flood must not flood the log).
  const refusals = new RateLimitedLog(log, 'connections refused');

  // The timeouts above bound how long a connection may stay not upgraded; this bounds how many may, in all and
  // per client. Checked as the TCP connection arrives, before any TLS or HTTP work on it.
  server.on('connection', (socket: net.Socket) => {
    socket.on('error', () => {});
    const client = clientKey(socket.remoteAddress ?? '');
    const pendingFull = open - active >= cfg.maxPendingUpgrades;
    if (!pendingFull && (openBy.get(client) ?? 0) - (activeBy.get(client) ?? 0) < cfg.maxPendingUpgradesPerClient) {
      open++;
      add(openBy, client, 1);
      accepted.add(socket);
      socket.once('close', () => {
        open--;
        add(openBy, client, -1);
        accepted.delete(socket);
      });
      return;
    }
    refusals.note(pendingFull ? 'pending-upgrade-limit' : 'pending-upgrade-per-client-limit');
    refusedEarly.add(socket);
    // Over TLS nothing the client could read can be sent before the handshake: it is closed.
    if (opts.tls) socket.destroy();
    else socket.end(SERVICE_UNAVAILABLE, () => socket.destroy());
  });

  server.on('request', (_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket', connection: 'close' });
    res.end('this endpoint speaks WebSocket only\n');
  });

  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    if (refusedEarly.has(socket)) return void socket.destroy(); // answered 503 already, its upgrade came anyway
    if (closing || active >= cfg.maxConnections) {
      refusals.note(closing ? 'shutting-down' : 'connection-limit');
      socket.end(SERVICE_UNAVAILABLE);
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    // The slot is held from the upgrade until the socket is gone, whether the handshake succeeds or not.
    const client = clientKey(req.socket.remoteAddress ?? '');
    active++;
    add(activeBy, client, 1);
    sockets.add(socket);
    socket.once('close', () => {
      active--;
      add(activeBy, client, -1);
      sockets.delete(socket);
    });
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (closing) {
        ws.close(CloseCode.GOING_AWAY, 'bridge shutting down');
        return;
      }
      const conn = new BridgeConnection(ws, req, {
        target: opts.target,
        proxyProtocol: opts.proxyProtocol ?? false,
        handshakeTimeoutMs: cfg.handshakeTimeoutMs,
        idleTimeoutMs: cfg.idleTimeoutMs,
        writeStallTimeoutMs: cfg.writeStallTimeoutMs,
        highWaterMark: cfg.highWaterMark,
        logger: log,
      });
      live.add(conn);
      ws.once('close', () => live.delete(conn));
      conn.start();
    });
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  await listenOrFail(server, opts.listen);
  server.on('error', (err) => log.error({ err: err.message }, 'server error'));

  let opsProxy: OpsProxy | null = null;
  if (opts.ops !== undefined) {
    try {
      opsProxy = await startOpsProxy({ ...opts.ops, logger: log });
    } catch (err) {
      server.close();
      throw err;
    }
  }
  const port = (server.address() as net.AddressInfo).port;
  const host = opts.listen.host.includes(':') ? `[${opts.listen.host}]` : opts.listen.host;
  const url = `${opts.tls ? 'wss' : 'ws'}://${host}:${port}/`;
  log.info({ event: 'listening', url, agent: describeTarget(opts.target), proxyProtocol: opts.proxyProtocol ?? false }, 'bridge listening');

  let closed: Promise<void> | null = null;
  return {
    url,
    port,
    get connections() {
      return active;
    },
    get pendingUpgrades() {
      return Math.max(0, open - active);
    },
    opsUrl: opsProxy?.url ?? null,
    close() {
      closed ??= (async () => {
        closing = true;
        await opsProxy?.close();
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        for (const conn of live) conn.finish(CloseCode.GOING_AWAY, 'bridge shutting down');
        const allGone = new Promise<void>((resolve) => {
          const check = (): void => {
            if (sockets.size === 0) resolve();
            else setTimeout(check, 20);
          };
          check();
        });
        const grace = new Promise<void>((resolve) => setTimeout(resolve, SHUTDOWN_GRACE_MS).unref());
        await Promise.race([allGone, grace]);
        for (const conn of live) conn.terminate();
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        for (const s of accepted) s.destroy(); // not upgraded (or not yet a TLS connection): nothing to say goodbye to
        await serverClosed;
        wss.close();
        refusals.flush();
        log.info({ event: 'stopped' }, 'bridge stopped');
      })();
      return closed;
    },
  };
}

/** Reads of one frame, or fragments of one message, ws may hold for a message of up to `maxPayload` bytes. */
function maxPieces(maxPayload: number): number {
  return Math.max(256, Math.ceil(maxPayload / 256));
}

function checkPositiveInt(name: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new BridgeError('BRIDGE_BAD_OPTIONS', `${name} must be an integer ≥ ${min}, found ${value}`);
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

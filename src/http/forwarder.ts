// HTTP mode: every `Data` and every stream becomes a connection into ONE in-process http.Server that never
// listens on a port. `connect(ctx)` builds a duplex pair, hands one end to the server as a connection
// (remembering the session's context for it) and returns the other end to the session. Requests then pass
// the stages in order —
//   /.well-known/attestation · /.well-known/health · request id + transaction log · client address ·
//   decrypt (slot) · forward (undici keep-alive pool)
// — and Upgrade requests take request id + log · client address · raw tunnel. Malformed requests get a
// 400 (431, 408) JSON answer and the connection is closed. Nothing a client or the app does throws past
// this module. Per server connection (server-connection.ts): pipelined requests run one at a time, a request
// body may pause no longer than the headers timeout (408), a parse error is answered after the answers still
// due; and a client that stops reading is cut after the upstream timeout (the pair's send timeout).
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import pino from 'pino';
import type { Logger } from 'pino';
import type { ForwardContext, Forwarder, OneShotData, ResponseBudget } from '../responder/forwarder.ts';
import { createDuplexPair } from './duplex-pair.ts';
import type { PairEnd } from './duplex-pair.ts';
import { Exchange, compose, errorBody, respond, respondError, statusText } from './exchange.ts';
import { DataConnection } from './data-connection.ts';
import { DataResponse } from './data-response.ts';
import type { AnswerTarget } from './data-response.ts';
import { OneShotAnswer } from './one-shot-answer.ts';
import { BufferBody, FastRequest, parseSimpleRequest } from './simple-request.ts';
import { KeepAliveConnection, KeepAliveSweep } from './keep-alive-connection.ts';
import type { AttachedConnection, KeepAliveHandlers, KeepAliveLimits } from './keep-alive-connection.ts';
import type { DataConnectionHandlers } from './data-connection.ts';
import { ServerConnection } from './server-connection.ts';
import type { Stage } from './exchange.ts';
import { endToEndHeaders } from './headers.ts';
import { HttpModeError } from './errors.ts';
import type { LogSink } from './log-sink.ts';
import { createStdoutLogSink } from './log-sink.ts';
import { attestationEndpointStage } from './stages/attestation-endpoint.ts';
import { AppHealthMonitor, healthEndpointStage } from './stages/health.ts';
import { DEFAULT_REQUEST_ID_HEADER, requestIdStage } from './stages/request-id.ts';
import { createHeaderMasker, logExchange, recordedOutcome, trxLogStage } from './stages/trx-log.ts';
import { abandonedAlone, type AbandonedSummary } from './abandoned-records.ts';
import type { TrxLogOptions } from './stages/trx-log.ts';
import { clientAddressStage } from './stages/client-address.ts';
import { bodyLimitStage, declaredBodyRefusal } from './stages/body-limit.ts';
import { apiKeyCheck, apiKeyStage } from './stages/api-key.ts';
import { BufferedBodies, decryptStage, type BufferedBodiesLike } from './stages/decrypt.ts';
import type { DecryptStage } from './stages/decrypt.ts';
import { Upstream, UPSTREAM_FAILURES_MESSAGE, forwardStage } from './stages/forward.ts';
import { RateLimitedLog } from '../util/rate-limited-log.ts';
import { upgradeStage } from './stages/upgrade.ts';
import { originFormStage, requestShapeRefusal, requestShapeStage } from './stages/request-shape.ts';
import { PARSER_MAX_HEADERS_COUNT, requestHeadRefusal, tooManyHeaders } from './request-head-checks.ts';
import { randomUUID } from 'node:crypto';

/**
 * Largest piece of a connection's bytes handed to the http.Server at once. Node's parser takes in every request
 * of what it is handed before the connection's hold (server-connection.ts) can stop it: a 64 KiB chunk of tiny
 * pipelined requests behind one still at the app became ~2,000 parsed requests (~8 MB) waiting their turn.
 * Slices bound that to ~160 (~0.6 MB); bodies on this path pay one more parser call per 4 KiB.
 */
export const SERVER_READ_SLICE_BYTES = 4096;

export interface HttpModeOptions {
  /** The app's port on the loopback interface. */
  appPort: number;
  appHost?: '127.0.0.1' | '::1' | 'localhost';
  /** One transaction-log record per request (default true). */
  trxLogging?: boolean;
  /** Header names logged in clear (trailing `*` = prefix); credentials stay masked regardless. */
  trustedHeaders?: string[];
  /** Keep client-supplied X-Forwarded-For/Forwarded and append to them (default false: replace). */
  trustForwardedFromClient?: boolean;
  /** Cap for stages that must buffer a body (default 16 MiB); over it → 413. */
  maxBufferedBodyBytes?: number;
  /**
   * Most bytes of request bodies buffered at once, all requests together (default 256 MiB, or
   * maxBufferedBodyBytes if larger); past it → 503
   * HTTP_DECRYPT_BUSY (stages/decrypt.ts BufferedBodies).
   */
  maxBufferedBodiesBytes?: number;
  /** Counts buffered bodies here instead (the process-wide budget of the session threads); maxBufferedBodiesBytes is then unused. */
  bufferedBodies?: BufferedBodiesLike;
  /** Largest request body forwarded, declared or chunked (default: no limit); over it → 413 (stages/body-limit.ts). */
  maxRequestBodyBytes?: number;
  /** App response-head timeout and longest body gap (default 60 s) → 504. */
  upstreamTimeoutMs?: number;
  /** Time a client has to send a complete request head (default 30 s) → 408. */
  headersTimeoutMs?: number;
  /** Idle time after which a keep-alive stream is closed (default 60 s). */
  keepAliveTimeoutMs?: number;
  /**
   * Lingering close of a TLS ingress connection after its last answer (src/transport/lingering-close.ts): closed
   * once no client byte came for `lingerTimeoutMs` (default 5 s), at most `lingerTimeMs` (default 30 s) after it.
   */
  lingerTimeoutMs?: number;
  lingerTimeMs?: number;
  /** Largest request head (default 16 KiB) → 431. */
  maxHeaderBytes?: number;
  /**
   * While the app has never answered, refused connections are retried this long (default 10 s; WIRE.md §5
   * start-up grace), so requests that arrive while the app boots wait instead of failing. 0 disables.
   */
  appStartupGraceMs?: number;
  /** Most concurrent keep-alive connections to the app (default 256; more requests wait in the pool). */
  maxAppConnections?: number;
  /** Access-Control-Allow-Origin of /.well-known/attestation (default '*'). */
  corsOrigin?: string;
  /** Header carrying the request id to the app and back (default x-request-id). */
  requestIdHeader?: string;
  /** Where transaction records go (default: stdout). */
  logSink?: LogSink;
  /** Operational log (default: pino to stdout). */
  logger?: Logger;
  /** The decrypt slot (next issue). */
  decrypt?: DecryptStage;
  /**
   * App health probe; without it /.well-known/health probes the app port by TCP. `periodic: false`: no probe
   * on a timer, /.well-known/health probes when asked, at most once per interval (a session worker: the main
   * thread's forwarder already probes, and logs the app's ups and downs, once per interval).
   */
  healthcheck?: { path: string; port?: number; intervalMs?: number; periodic?: boolean };
  /** api_key_auth: SHA-256 hex hashes of the accepted `api-key` header values (stages/api-key.ts); absent = off. */
  apiKeyHashes?: readonly string[];
  /** Called once per exchange when it is over (metrics: src/ops/metrics.ts); must not throw. */
  observe?: (ex: Exchange) => void;
}

export interface HttpForwarder extends Forwarder {
  connect(ctx: ForwardContext): Promise<Duplex>;
  close(): Promise<void>;
  /** The app health monitor behind /.well-known/health. */
  readonly health: AppHealthMonitor;
  /** Connections currently open into the server (Data connections included, fast path or not). */
  readonly connectionCount: number;
  /** Requests answered on the Data fast path (simple-request.ts, data-connection.ts, data-response.ts) so far; the rest went through the http.Server. */
  readonly fastPathRequests: number;
  /** Requests answered on the keep-alive fast path (keep-alive-connection.ts) so far. */
  readonly keepAliveFastPathRequests: number;
  /**
   * Serves an already-decrypted keep-alive connection (TLS ingress, src/ingress/) with `ctx`: on the keep-alive
   * fast path, handed to the http.Server from the first request the fast path does not take.
   */
  attach(socket: Duplex, ctx: ForwardContext): AttachedConnection;
}

export function createHttpForwarder(opts: HttpModeOptions): HttpForwarder {
  if (!Number.isInteger(opts.appPort) || opts.appPort < 1 || opts.appPort > 65535) {
    throw new HttpModeError('HTTP_BAD_OPTIONS', 500, `appPort: expected an integer in 1..65535, found ${String(opts.appPort)}`);
  }
  const host = opts.appHost ?? '127.0.0.1';
  const upstreamTimeoutMs = opts.upstreamTimeoutMs ?? 60_000;
  const headersTimeoutMs = opts.headersTimeoutMs ?? 30_000;
  const maxBufferedBodyBytes = opts.maxBufferedBodyBytes ?? 16 * 1024 * 1024;
  // At least one body of the per-request cap fits when nothing else is held.
  const maxBufferedBodiesBytes = opts.maxBufferedBodiesBytes ?? Math.max(256 * 1024 * 1024, maxBufferedBodyBytes);
  if (!Number.isSafeInteger(maxBufferedBodiesBytes) || maxBufferedBodiesBytes < 0) {
    throw new HttpModeError('HTTP_BAD_OPTIONS', 500, `maxBufferedBodiesBytes: expected a non-negative integer, found ${String(maxBufferedBodiesBytes)}`);
  }
  const logger = opts.logger ?? pino({ name: 'enclave-agent:http' });
  const ownSink = opts.logSink === undefined && opts.trxLogging !== false;
  const sink: LogSink = opts.logSink ?? (opts.trxLogging === false ? { write() {}, async close() {} } : createStdoutLogSink());
  const requestIdHeader = (opts.requestIdHeader ?? DEFAULT_REQUEST_ID_HEADER).toLowerCase();
  const agentHeaders = new Set([requestIdHeader]);
  const startedAt = Date.now();

  const upstream = new Upstream({
    host,
    port: opts.appPort,
    timeoutMs: upstreamTimeoutMs,
    keepAliveTimeoutMs: 30_000,
    connections: opts.maxAppConnections ?? 256,
    startupGraceMs: opts.appStartupGraceMs ?? 10_000,
  });
  const health = new AppHealthMonitor({
    host,
    port: opts.healthcheck?.port ?? opts.appPort,
    path: opts.healthcheck?.path,
    intervalMs: opts.healthcheck?.intervalMs,
    logger,
  });
  if (opts.healthcheck !== undefined && opts.healthcheck.periodic !== false) health.start();

  const trx: TrxLogOptions = {
    enabled: opts.trxLogging ?? true,
    sink,
    mask: createHeaderMasker(opts.trustedHeaders ?? [], [requestIdHeader]),
    onError: (err) => logger.warn({ err: String(err) }, 'transaction record not written'),
  };
  // Failed app requests, one line per interval (forward.ts); close() writes the last interval's counts.
  const upstreamFailures = new RateLimitedLog(logger, UPSTREAM_FAILURES_MESSAGE);
  const requestId = requestIdStage({ header: requestIdHeader });
  const trxLog = trxLogStage(trx);
  const clientAddress = clientAddressStage({ trustForwardedFromClient: opts.trustForwardedFromClient });
  // Before anything that touches the app (body limit, decrypt, forward, upgrade).
  const apiKey = opts.apiKeyHashes === undefined ? [] : [apiKeyStage({ hashes: opts.apiKeyHashes })];
  const apiKeyRefusal = opts.apiKeyHashes === undefined ? () => null : apiKeyCheck(opts.apiKeyHashes);
  const maxRequestBodyBytes = opts.maxRequestBodyBytes;
  /**
   * Why the stages will refuse a request on the http.Server path whatever its body: its head (header and Host
   * counts), its shape, its API key, a declared length over the body limit; else null. A request with
   * `Expect: 100-continue` gets its 100 only when this is null, so a refused client is not invited to send its body.
   */
  const refusedUnread = (req: IncomingMessage): HttpModeError | null =>
    requestHeadRefusal(req) ??
    requestShapeRefusal(req, req.headers['transfer-encoding'] !== undefined) ??
    apiKeyRefusal(req.headers) ??
    (maxRequestBodyBytes === undefined ? null : declaredBodyRefusal(req, maxRequestBodyBytes));
  const common: Stage[] = [requestId, trxLog, clientAddress, ...apiKey];
  // The http.Server path also puts its targets and transfer codings in shape (stages/request-shape.ts); the fast
  // paths' requests are plain already and pay nothing for it.
  const serverCommon: Stage[] = [requestId, trxLog, requestShapeStage(), clientAddress, ...apiKey];
  const observe = opts.observe;
  const observed: Stage[] = observe === undefined ? [] : [(ex, next) => (ex.onDone(() => observe(ex)), next())];
  const endpoints: Stage[] = [attestationEndpointStage({ corsOrigin: opts.corsOrigin, logger }), healthEndpointStage(health, { startedAt })];
  const toApp: Stage[] = [
    ...(opts.maxRequestBodyBytes === undefined ? [] : [bodyLimitStage({ maxBodyBytes: opts.maxRequestBodyBytes })]),
    decryptStage({ decrypt: opts.decrypt, maxBufferedBodyBytes, bodies: opts.bufferedBodies ?? new BufferedBodies(maxBufferedBodiesBytes) }),
    forwardStage(upstream, { failureLog: upstreamFailures, dropResponseHeaders: agentHeaders }),
  ];
  const httpPipeline = compose([...observed, ...endpoints, ...common, ...toApp]);
  // An absolute-form target reaches the endpoints in origin-form, as it reaches the app.
  const serverHttpPipeline = compose([...observed, originFormStage(), ...endpoints, ...serverCommon, ...toApp]);
  /** Runs a request through the stages; a failure becomes its error answer (or a destroyed response). */
  const runHttpPipeline = (ex: Exchange, res: { destroy(): unknown }, pipeline = httpPipeline): void => {
    pipeline(ex).catch((err: unknown) => {
      if (!(err instanceof HttpModeError)) logger.error({ err: String(err), requestId: ex.requestId }, 'HTTP stage failed');
      try {
        respondError(ex, err);
      } catch {
        res.destroy();
      }
    });
  };
  const upgradePipeline = compose([
    ...observed,
    ...serverCommon,
    upgradeStage({ host, port: opts.appPort, timeoutMs: upstreamTimeoutMs, dropResponseHeaders: agentHeaders }),
  ]);
  /**
   * A request taken in (parsed) that never ran: the connection closed while it waited its turn. It still gets
   * its record (and is observed): with nothing sent, status 0 and CLIENT_GONE (trx-log.ts), as a request whose
   * client left mid-exchange; one answered with a parse error while waiting keeps that status and code.
   * `summary`: the requests the record stands for, by outcome — this one, or this one and those abandoned after it
   * (abandoned-records.ts).
   */
  const recordPipeline = compose([...observed, requestId, trxLog]);
  const recordAbandoned = (ex: Exchange, summary: AbandonedSummary = abandonedAlone(recordedOutcome(ex))): void => {
    ex.abandoned = summary;
    recordPipeline(ex).catch((err: unknown) => logger.error({ err: String(err) }, 'abandoned request not recorded'));
    ex.finish();
  };

  const contexts = new WeakMap<object, ForwardContext>();
  /** Each server connection's limits (server-connection.ts), by the server's end of the pair. */
  const serverConns = new WeakMap<object, ServerConnection>();
  /** Everything a close() must end: server connections, Data connections, one-shot answers. */
  const open = new Set<{ destroy(): unknown }>();
  let closed = false;
  let fastPathRequests = 0;
  const maxHeaderBytes = opts.maxHeaderBytes ?? 16 * 1024;

  const server = http.createServer({
    maxHeaderSize: maxHeaderBytes,
    // A limit on the whole request would cut long uploads: body gaps are bounded per connection instead.
    requestTimeout: 0,
    headersTimeout: headersTimeoutMs,
    keepAliveTimeout: opts.keepAliveTimeoutMs ?? 60_000,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(headersTimeoutMs / 4))),
    // Checked by us, to answer in the same JSON shape as every other refusal.
    requireHostHeader: false,
  });
  // Explicit, one past MAX_REQUEST_HEADERS: a request over it is refused, never cut short (request-head-checks.ts).
  server.maxHeadersCount = PARSER_MAX_HEADERS_COUNT;
  // A client that ends its side after the request (every Data request does) still gets the response.
  (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  // The headers timeout is enforced by Node's connection tracking, which starts on 'listening'. The server
  // never listens on a port; this starts the tracking alone (server.close() stops it).
  server.emit('listening');

  const newExchange = (req: IncomingMessage, res: ServerResponse | null, type: 'HTTP' | 'WebSocket'): Exchange | null => {
    const socket = req.socket as unknown as PairEnd;
    const conn = contexts.get(socket);
    if (conn === undefined) return null;
    const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    const declared = req.headers['content-length'];
    const ex = new Exchange({
      req,
      res,
      socket,
      conn,
      type,
      upstreamHeaders: type === 'HTTP' ? endToEndHeaders(req.rawHeaders) : req.rawHeaders.slice(),
      body: type === 'HTTP' && hasBody ? req : null,
      bodyLength: hasBody && declared !== undefined && req.headers['transfer-encoding'] === undefined ? Number(declared) : null,
    });
    ex.remoteIp = conn.client?.address;
    if (type === 'HTTP' && hasBody) {
      // Count body bytes on whatever path consumes them, without starting the flow ourselves.
      req.pause();
      req.on('data', (c: Buffer) => {
        ex.bytesIn += c.length;
      });
    }
    return ex;
  };

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    res.on('error', () => {});
    // A keep-alive connection relayed from the fast path: its drain waits for this answer.
    const owner = relays.get(req.socket);
    if (owner !== undefined) {
      if (!owner.relayRequestStarted().keepAlive) res.shouldKeepAlive = false;
      res.once('close', () => owner.relayRequestDone());
    }
    const ex = newExchange(req, res, 'HTTP');
    const conn = serverConns.get(req.socket);
    if (ex === null || conn === undefined) {
      res.destroy();
      return;
    }
    res.once('close', () => {
      // A response finished before the request body was read (an early answer): drain the rest so the
      // next request on a keep-alive stream is parsed.
      if (!req.complete && !req.destroyed) {
        req.unpipe();
        req.resume();
      }
      ex.finish();
    });
    if (ex.body !== null && !req.complete) {
      conn.receiving(req, headersTimeoutMs, {
        upstreamBlocked: ex.conn.inputBlocked,
        stalled: () => bodyStalled(ex, res),
        malformed: (status, code, message) => {
          ex.errorCode ??= code;
          if (res.headersSent || res.destroyed) ex.socket?.destroy();
          else respond(ex, status, [], errorBody(code, message, ex.requestId), { close: true });
        },
      });
    }
    // A pipelined request waits here (parsed, not yet sent to the app) until the one before it is answered.
    conn.admit(
      res,
      () => serveRequest(ex, req, res),
      (summary) => recordAbandoned(ex, summary),
      () => recordedOutcome(ex),
    );
  });

  /**
   * No body byte for the headers timeout: 408 (the stages still running on the request end with the response,
   * and the connection closes after it), or, once the answer has begun, the connection is cut.
   */
  function bodyStalled(ex: Exchange, res: ServerResponse): void {
    if (res.headersSent || res.destroyed) {
      ex.errorCode ??= 'HTTP_REQUEST_TIMEOUT';
      ex.socket?.destroy();
      return;
    }
    respondError(ex, new HttpModeError('HTTP_REQUEST_TIMEOUT', 408, 'the request body stopped arriving'));
  }

  function serveRequest(ex: Exchange, req: IncomingMessage, res: ServerResponse): void {
    const refused = requestHeadRefusal(req);
    if (refused !== null) refuseBeforeStages(ex, refused);
    else runHttpPipeline(ex, res, serverHttpPipeline);
  }

  /** A request refused before the pipeline's stages: its request id and transaction record are given here. */
  function refuseBeforeStages(ex: Exchange, err: HttpModeError): void {
    ex.requestId = randomUUID();
    if (trx.enabled) ex.onDone(() => logExchange(ex, trx));
    respondError(ex, err);
  }

  // Expect: 100-continue. A stream's client may wait for the interim 100 before sending its body, so it gets
  // one at once (Node's default). A Data request carries its whole body already, and its reply is one
  // message read to EOF: an interim 100 would become the start of it (a compat client reads the 100 as the
  // answer), so it gets none. The app never sees Expect (a hop-by-hop field here, headers.ts). A request the stages
  // will refuse whatever its body (refusedUnread: no API key, a bad shape, a declared length over the limit...) gets
  // none either: they answer it (and close, its body unread) without having invited the body first.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (contexts.get(req.socket)?.kind !== 'data' && refusedUnread(req) === null) res.writeContinue();
    server.emit('request', req, res);
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {});
    serverConns.get(socket)?.upgraded();
    relays.get(socket)?.relayUpgraded();
    const ex = newExchange(req, null, 'WebSocket');
    if (ex === null) {
      socket.destroy();
      return;
    }
    ex.upgradeHead = head;
    const run = (): void => {
      const refused = tooManyHeaders(req);
      if (refused !== null) return refuseBeforeStages(ex, refused);
      upgradePipeline(ex).catch((err: unknown) => {
        if (!(err instanceof HttpModeError)) logger.error({ err: String(err), requestId: ex.requestId }, 'upgrade stage failed');
        try {
          respondError(ex, err);
        } catch {
          socket.destroy();
        }
      });
    };
    // Behind pipelined requests, after their answers (server-connection.ts).
    const conn = serverConns.get(socket);
    if (conn === undefined) run();
    else conn.admitUpgrade(run, () => recordAbandoned(ex));
  });

  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {});
    const method = req.method ?? 'CONNECT';
    const url = req.url ?? '';
    const gone = (): void => logRejected(contexts.get(socket), 0, 'CLIENT_GONE', method, url);
    const refuse = (): void => {
      if (writeRawError(socket as PairEnd, 405, 'HTTP_METHOD_NOT_ALLOWED', 'CONNECT is not supported')) {
        logRejected(contexts.get(socket), 405, 'HTTP_METHOD_NOT_ALLOWED', method, url);
      } else gone();
    };
    // In its turn, as an Upgrade: a 405 ahead of earlier answers would be read as theirs, and its close would
    // cut them. The client leaving first: nothing was answered, the record says so.
    const conn = serverConns.get(socket);
    if (conn === undefined) refuse();
    else conn.admitUpgrade(refuse, gone);
  });

  server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
    const sock = socket as PairEnd;
    const conn = serverConns.get(sock);
    if (err.code === 'ECONNRESET' || !sock.writable || conn === undefined) {
      sock.destroy();
      return;
    }
    // Bytes after a request with Connection: close: not read (as on the fast path), no answer of their own.
    if (err.code === 'HPE_CLOSED_CONNECTION') {
      conn.ignoreRest();
      return;
    }
    // A head that could not arrive because the connection was held (the pipelining limit) is not late.
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' && conn.heldWithin(headersTimeoutMs)) return;
    const [status, code] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'HTTP_HEADERS_TOO_LARGE']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'HTTP_REQUEST_TIMEOUT']
          : err.code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW'
            ? [413, 'HTTP_CHUNK_EXTENSIONS_TOO_LARGE']
            : [400, 'HTTP_BAD_REQUEST'];
    const message = status === 400 ? `malformed HTTP request (${err.code ?? 'parse error'})` : statusText(status);
    // After the answers still due on the connection (server-connection.ts), never ahead of them.
    // Recorded only when written: a client gone by its turn (a head cut short by a reset) was answered nothing,
    // and a head that never completed is no request of its own (as on the fast path).
    conn.parseError(status, code, message, () => {
      if (writeRawError(sock, status, code, message)) logRejected(contexts.get(sock), status, err.code ?? code, '', '');
    });
  });

  /**
   * An answer written straight onto the connection (no request object), then the connection closes. False: the
   * connection could no longer take it (nothing was written).
   */
  function writeRawError(sock: PairEnd, status: number, code: string, message: string): boolean {
    if (!sock.writable) {
      sock.destroy();
      return false;
    }
    const body = Buffer.from(errorBody(code, message, ''), 'utf8');
    sock.write(
      `HTTP/1.1 ${status} ${statusText(status)}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`,
      'latin1',
    );
    sock.write(body);
    sock.destroySoon();
    return true;
  }

  function logRejected(conn: ForwardContext | undefined, status: number, error: string, method: string, url: string): void {
    if (!trx.enabled) return;
    const fake = {
      requestId: randomUUID(),
      startedAt: Date.now(),
      started: performance.now(),
      conn: conn ?? { sessionId: '' },
      type: 'HTTP',
      req: { method, url, rawHeaders: [] },
      sentStatus: status,
      sentHeaders: [],
      bytesIn: 0,
      bytesOut: 0,
      remoteIp: conn?.client?.address,
      decryptedFields: 0,
      errorCode: error,
    } as unknown as Exchange;
    logExchange(fake, trx);
  }

  /** A connection on the http.Server for `ctx`; returns the session's end. */
  function serverConnection(ctx: ForwardContext, track: boolean): PairEnd {
    const [outer, inner] = createDuplexPair();
    if (ctx.client !== undefined) {
      inner.remoteAddress = ctx.client.address;
      inner.remotePort = ctx.client.port;
      inner.remoteFamily = ctx.client.family;
    }
    contexts.set(inner, ctx);
    inner.setReadSlice(SERVER_READ_SLICE_BYTES);
    serverConns.set(inner, new ServerConnection(inner));
    if (track) {
      open.add(inner);
      inner.once('close', () => open.delete(inner));
    }
    inner.on('error', () => {});
    // The session gave up on the connection: abort everything running on it (and its app requests).
    outer.once('close', () => inner.destroy());
    // The client stopped reading what the server sends (a response, a tunnel): after the upstream timeout
    // the connection is cut, which ends its app request and frees its app connection (as nginx's
    // send_timeout).
    inner.setSendTimeout(upstreamTimeoutMs, () => outer.destroy());
    server.emit('connection', inner);
    return outer;
  }

  /**
   * The fast path (simple-request.ts, data-response.ts): the same stages as the 'request' handler, on a
   * request parsed by parseSimpleRequest, answered into `target` (a DataConnection, or a OneShotAnswer).
   * False leaves the bytes to the http.Server.
   */
  function serveFast(target: AnswerTarget, ctx: ForwardContext, bytes: Buffer): boolean {
    if (closed) return false;
    const parsed = parseSimpleRequest(bytes, maxHeaderBytes);
    if (parsed === null) return false;
    fastPathRequests++;
    const res = new DataResponse(target, parsed.method, () => ex.finish());
    target.response = res;
    const ex: Exchange = new Exchange({
      req: new FastRequest(parsed),
      res,
      socket: null,
      conn: ctx,
      type: 'HTTP',
      upstreamHeaders: endToEndHeaders(parsed.rawHeaders),
      body: parsed.body === null ? null : new BufferBody(parsed.body, (n) => (ex.bytesIn += n)),
      bodyLength: parsed.body === null ? null : parsed.contentLength,
    });
    ex.remoteIp = ctx.client?.address;
    runHttpPipeline(ex, res);
    return true;
  }

  /** Connections relayed from the keep-alive fast path to the http.Server, by the server's end of the pair. */
  const relays = new WeakMap<object, KeepAliveConnection>();
  const keepAliveLimits: KeepAliveLimits = {
    maxHeaderBytes,
    headersTimeoutMs,
    keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? 60_000,
    sendTimeoutMs: upstreamTimeoutMs,
    lingerTimeoutMs: opts.lingerTimeoutMs,
    lingerTimeMs: opts.lingerTimeMs,
  };
  const sweep = new KeepAliveSweep(keepAliveLimits);
  let keepAliveFastPathRequests = 0;
  /** The keep-alive fast path (keep-alive-connection.ts): the same stages as the 'request' handler. */
  const keepAliveHandlers: KeepAliveHandlers = {
    serve(conn, head, body, res) {
      keepAliveFastPathRequests++;
      res.onClose = () => ex.finish();
      const ex: Exchange = new Exchange({
        req: new FastRequest(head),
        res,
        socket: null,
        conn: conn.ctx,
        type: 'HTTP',
        upstreamHeaders: endToEndHeaders(head.rawHeaders),
        body: body === null ? null : new BufferBody(body, (n) => (ex.bytesIn += n)),
        bodyLength: body === null ? null : body.length,
      });
      ex.remoteIp = conn.ctx.client?.address;
      runHttpPipeline(ex, res);
    },
    fallback(conn) {
      const outer = serverConnection(conn.ctx, false);
      relays.set(outer.peer, conn);
      return outer;
    },
    rejected(conn, status, code) {
      logRejected(conn.ctx, status, code, '', '');
    },
    abandoned(conn, head, code, summary) {
      const ex = new Exchange({ req: new FastRequest(head), res: null, socket: null, conn: conn.ctx, type: 'HTTP', upstreamHeaders: [], body: null, bodyLength: null });
      ex.remoteIp = conn.ctx.client?.address;
      ex.errorCode = code;
      recordAbandoned(ex, summary);
    },
  };

  const dataHandlers: DataConnectionHandlers = { fast: (conn, bytes) => serveFast(conn, conn.ctx, bytes), full: (conn) => serverConnection(conn.ctx, false) };
  const untrack = (a: OneShotAnswer): void => void open.delete(a);

  return {
    connect(ctx: ForwardContext): Promise<Duplex> {
      // Nothing here waits, but a refusal must be a rejection: the executor turns a throw into one.
      return new Promise<Duplex>((resolve) => {
        if (closed) throw new HttpModeError('HTTP_FORWARDER_CLOSED', 503, 'the HTTP forwarder is closed');
        if (ctx.kind === 'data') {
          // One-shot Data request: the fast path when it is a plainly simple request, else the http.Server.
          const conn = new DataConnection(ctx, dataHandlers);
          open.add(conn);
          conn.once('close', () => open.delete(conn));
          resolve(conn);
          return;
        }
        resolve(serverConnection(ctx, true));
      });
    },

    attach(socket: Duplex, ctx: ForwardContext): AttachedConnection {
      socket.on('error', () => {});
      if (closed) {
        socket.destroy();
        return { drain() {} };
      }
      const conn = new KeepAliveConnection(socket, ctx, keepAliveHandlers, keepAliveLimits, sweep);
      open.add(conn);
      socket.once('close', () => open.delete(conn));
      return conn;
    },

    exchangeData(ctx: ForwardContext, payload: Uint8Array, maxResponseBytes: number, budget?: ResponseBudget): OneShotData | null {
      if (closed) return null;
      const answer = new OneShotAnswer(maxResponseBytes, untrack, budget);
      open.add(answer);
      const bytes = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
      if (serveFast(answer, ctx, bytes)) return answer;
      open.delete(answer);
      return null;
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      for (const s of open) s.destroy();
      open.clear();
      server.close();
      await Promise.all([upstream.close(), health.close()]);
      // The counted logs (failed app requests, refused ev: values) write their last interval's counts.
      upstreamFailures.flush();
      opts.decrypt?.close?.();
      // Transaction records are written one setImmediate after their exchange: let the last batch out.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (ownSink) await sink.close();
    },

    health,

    get connectionCount() {
      return open.size;
    },

    get fastPathRequests() {
      return fastPathRequests;
    },

    get keepAliveFastPathRequests() {
      return keepAliveFastPathRequests;
    },
  };
}

// The in-enclave API on 127.0.0.1:9999 (ENCRYPTION.md §2; routes in routes.ts). node:http directly.
// It binds the IPv4 loopback address only: any other host is refused with API_BAD_HOST before anything
// listens. Statuses: 404 unknown route, 405 wrong method (with Allow), 400 bad JSON / bad input,
// 413 body over the cap, 422 a valid ev: value that does not decrypt, 500 NSM failure; before any route, 403 for
// a Host other than 127.0.0.1:<port>/localhost:<port> or any Origin header, and 415 for a POST whose Content-Type
// is not application/json (request-guards.ts: DNS rebinding and cross-site requests). Error bodies are
// {"error": CODE, "message": text}; messages never carry plaintext, keys or bodies, and nothing is logged
// but method, path, status, counts and error codes. Refused ev: values, failed requests and refused connections are
// logged as counts, one line per interval each (RateLimitedLog): the app may send them in a loop. At most
// maxConnections connections at once (connection-cap.ts); past them, 503 API_TOO_MANY_CONNECTIONS. close() zeroes the
// keyring's cached key agreements (ecdh-cache.ts).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import type { Logger } from 'pino';
import type { Nsm } from '../attestation/nsm.ts';
import { AgentError } from '../errors.ts';
import { EvDecryptError, EvFormatError } from '../crypto/errors.ts';
import { DEFAULT_MAX_DECRYPT_FIELDS, DecryptScheduler } from '../crypto/decrypt-scheduler.ts';
import type { Keyring } from '../crypto/keyring.ts';
import { wipeEcdhCache } from '../crypto/ecdh-cache.ts';
import { RateLimitedLog } from '../util/rate-limited-log.ts';
import { DEFAULT_LINGER_TIME_MS, DEFAULT_LINGER_TIMEOUT_MS } from '../transport/lingering-close.ts';
import { cappedFront, DEFAULT_MAX_API_CONNECTIONS, listenFront } from './connection-cap.ts';
import { ApiError } from './errors.ts';
import { checkHost, checkJsonContentType, checkNoOrigin } from './request-guards.ts';
import { ROUTES } from './routes.ts';
import type { RouteResponse } from './routes.ts';

export const API_HOST = '127.0.0.1';
export const API_PORT = 9999;
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

export interface ApiServerOptions {
  keyring: Keyring;
  nsm: Nsm;
  /** Only '127.0.0.1' is accepted. */
  host?: string;
  /** Default 9999; 0 picks a free port (tests). */
  port?: number;
  /** Request body cap in bytes (default 4 MiB); larger bodies get 413. */
  maxBodyBytes?: number;
  /** Most ev: values /decrypt decrypts per request (default 1024, [limits] max_decrypt_fields); more get 413. */
  maxDecryptFields?: number;
  /** Where /encrypt and /decrypt work runs; share the HTTP stage's (one global budget). Default: its own. */
  decryptScheduler?: DecryptScheduler;
  logger?: Logger;
  /** Most connections at once (default 256); past them a new one is answered 503 API_TOO_MANY_CONNECTIONS. */
  maxConnections?: number;
  /**
   * A refused connection, answered, lingers (lingering-close.ts) until no byte came for `lingerTimeoutMs`, or
   * `lingerTimeMs` after the answer at the latest ([limits] linger_timeout_ms / linger_time_ms; default 5 s / 30 s).
   */
  lingerTimeoutMs?: number;
  lingerTimeMs?: number;
  /** Interval of the counted log lines (default 10 s; tests). */
  refusalLogIntervalMs?: number;
  /** Called once per request with its path and status (metrics: src/ops/metrics.ts keeps known routes only). */
  onRequest?: (path: string, status: number) => void;
}

/** The operator-log lines that count, per interval: ev: values refused, requests failed (5xx), connections refused. */
export const API_EV_REFUSALS_MESSAGE = 'ev: values refused (local API; counts by reason)';
export const API_FAILURES_MESSAGE = 'local API requests failed (counts by code and cause)';
export const API_CONNECTIONS_REFUSED_MESSAGE = 'local API connections refused (counts by cause)';
/** Connections the listening socket could not accept (ENOBUFS…), counted by code: the API serves on. */
export const API_ACCEPT_ERRORS_MESSAGE = 'local API connections not accepted (counts by code)';

export interface ApiServer {
  port: number;
  close(): Promise<void>;
}

async function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) throw tooLarge(max);
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) throw tooLarge(max);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

function tooLarge(max: number): ApiError {
  return new ApiError('API_BODY_TOO_LARGE', 413, `request body larger than the ${max}-byte limit`);
}

/** What logs and metrics name a request whose target did not parse. */
const UNPARSED_PATH = '(unparsed)';

/** The request target as a URL; a target `new URL` refuses (`//x:99999/`, `http://x:99999/`, `//[`) → 400. */
function requestUrl(target: string | undefined): URL {
  try {
    return new URL(target ?? '/', 'http://localhost');
  } catch {
    throw new ApiError('API_BAD_INPUT', 400, 'the request target is not a valid path: expected /encrypt, /decrypt, /attestation-doc or /health');
  }
}

function toErrorResponse(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof ApiError) return { status: err.status, code: err.code, message: err.message };
  if (err instanceof EvDecryptError) return { status: 422, code: err.code, message: err.message };
  if (err instanceof EvFormatError) return { status: 400, code: err.code, message: err.message };
  if (err instanceof AgentError) return { status: 500, code: err.code, message: 'internal error' };
  return { status: 500, code: 'API_INTERNAL', message: 'internal error' };
}

export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const host = opts.host ?? API_HOST;
  if (host !== API_HOST) {
    throw new ApiError('API_BAD_HOST', 0, `the local API binds ${API_HOST} only, refused host ${JSON.stringify(host)}`);
  }
  const port = opts.port ?? API_PORT;
  const max = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const logger = opts.logger ?? pino({ name: 'enclave-agent:api' });
  const every = opts.refusalLogIntervalMs;
  const evRefusals = new RateLimitedLog(logger, API_EV_REFUSALS_MESSAGE, every);
  const failures = new RateLimitedLog(logger, API_FAILURES_MESSAGE, every, 'error');
  const connectionRefusals = new RateLimitedLog(logger, API_CONNECTIONS_REFUSED_MESSAGE, every);
  const acceptErrors = new RateLimitedLog(logger, API_ACCEPT_ERRORS_MESSAGE, every);
  const ctx = {
    keyring: opts.keyring,
    nsm: opts.nsm,
    ev: { maxDecryptFields: opts.maxDecryptFields ?? DEFAULT_MAX_DECRYPT_FIELDS, scheduler: opts.decryptScheduler ?? new DecryptScheduler() },
  };

  const send = (res: http.ServerResponse, r: RouteResponse, extra: Record<string, string> = {}): void => {
    const body = typeof r.body === 'string' ? Buffer.from(r.body, 'utf8') : r.body;
    res.writeHead(r.status, { 'content-type': r.contentType, 'content-length': String(body.length), 'cache-control': 'no-store', ...extra });
    res.end(body);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const started = performance.now();
    const method = req.method ?? 'GET';
    let status = 500;
    let count: number | undefined;
    // Until the target parses, logs and metrics name no path (a target such as `//x:99999/` does not parse).
    let url: URL | undefined;
    try {
      // Before routing: a rebinding page or a cross-site form learns nothing, not even which routes exist.
      checkHost(req);
      checkNoOrigin(req);
      url = requestUrl(req.url);
      const methods = ROUTES[url.pathname];
      if (!methods) throw new ApiError('API_NOT_FOUND', 404, `no route ${url.pathname.slice(0, 64)}: expected /encrypt, /decrypt, /attestation-doc or /health`);
      const route = methods[method];
      if (!route) {
        const allow = Object.keys(methods).join(', ');
        status = 405;
        send(res, { status, contentType: 'application/json', body: JSON.stringify({ error: 'API_METHOD_NOT_ALLOWED', message: `${url.pathname} accepts ${allow}, found ${method.slice(0, 16)}` }) }, { allow });
        return;
      }
      if (method !== 'GET') checkJsonContentType(req); // every POST route takes a JSON body
      const body = method === 'GET' ? Buffer.alloc(0) : await readBody(req, max);
      const r = await route(ctx, { body, headers: req.headers, query: url.searchParams });
      status = r.status;
      count = r.count;
      send(res, r);
    } catch (err) {
      const e = toErrorResponse(err);
      status = e.status;
      // The client gets one message for every refused ev: value; the operator gets the reason (never the value),
      // counted: reason and detail (version, curve, key id) are a bounded set.
      if (err instanceof EvDecryptError) evRefusals.note(`${err.reason} (${err.detail})`);
      if (status >= 500) failures.note(`${e.code} ${(err as { cause?: { code?: unknown } }).cause?.code ?? 'no code'}`);
      const extra: Record<string, string> = status === 413 ? { connection: 'close' } : {};
      if (!res.headersSent) send(res, { status, contentType: 'application/json', body: JSON.stringify({ error: e.code, message: e.message }) }, extra);
      else res.destroy();
    } finally {
      const path = url?.pathname ?? UNPARSED_PATH;
      logger.debug({ method, path, status, count, ms: Math.round((performance.now() - started) * 10) / 10 }, 'local API request');
      opts.onRequest?.(path, status);
    }
  };

  const server = http.createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => {
    // Nothing handle() throws may become an unhandled rejection (the process exits on those): drop the exchange.
    handle(req, res).catch((err: unknown) => {
      failures.note(`outside its handler ${(err as { code?: unknown }).code ?? 'API_INTERNAL'}`);
      res.destroy();
    });
  });
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });

  const front = cappedFront(
    server,
    opts.maxConnections ?? DEFAULT_MAX_API_CONNECTIONS,
    (why) => connectionRefusals.note(why),
    opts.lingerTimeoutMs ?? DEFAULT_LINGER_TIMEOUT_MS,
    opts.lingerTimeMs ?? DEFAULT_LINGER_TIME_MS,
  );
  await listenFront(
    front,
    server,
    { host, port, exclusive: true },
    (err) => new ApiError('API_LISTEN_FAILED', 0, `cannot listen on ${host}:${port}: ${err.code ?? err.message}`, { cause: err }),
    (code) => acceptErrors.note(code),
  );
  const bound = (front.address() as AddressInfo).port;
  logger.info({ host, port: bound }, 'local API listening');

  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve, reject) => {
        front.close((err) => {
          for (const log of [evRefusals, failures, connectionRefusals, acceptErrors]) log.flush();
          wipeEcdhCache(opts.keyring);
          if (err) reject(err);
          else resolve();
        });
        server.close(); // stops its header-timeout checks and closes its idle connections
      }),
  };
}

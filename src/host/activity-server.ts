// The activity page's HTTP server (host side): the single-page app (one HTML shell, one script, one
// stylesheet — no inline script or style, so the Content-Security-Policy can be `default-src 'self'`), and
// the JSON API it calls: the listing (keyset pages), a record's detail, traffic aggregates, the store's and
// sink's counters, the enclave, the agent's ops endpoint, and the live tail (SSE).
//
// Access: on a loopback address the page is open to the machine (and requests must name a loopback Host, so
// a web page elsewhere cannot reach it by DNS rebinding); on any other address a token is required: the page
// asks for it, POST /api/login compares it in constant time and sets an HttpOnly, SameSite=Strict session
// cookie that every API call (EventSource included) then carries. Sessions expire (activity-sessions.ts): an
// expired one is refused as an unknown one is, and a live tail opened with it is ended. A token read from a file
// follows the file (activity-token.ts): when it changes, every session ends.
//
// Connections are bounded (cappedFront, as the local API's): past `maxConnections` at once a new one is answered
// 503 ACTIVITY_TOO_MANY_CONNECTIONS and closed, counted in /api/status and logged once per interval.
import { timingSafeEqual } from 'node:crypto';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { cappedFront, listenFront, refusalAnswer } from '../api/connection-cap.ts';
import { AgentError, isAgentError } from '../errors.ts';
import { RateLimitedLog } from '../util/rate-limited-log.ts';
import type { EnclaveInfo } from './activity-enclave.ts';
import type { LiveRefusal, LiveTail } from './activity-live.ts';
import { fetchOps } from './activity-ops.ts';
import { MAX_PAGE, parseCursor, type ListQuery } from './activity-queries.ts';
import type { ActivityReader } from './activity-reader.ts';
import { DEFAULT_SESSION_IDLE_MS, DEFAULT_SESSION_LIFETIME_MS, PageSessions } from './activity-sessions.ts';
import type { ActivityStore } from './activity-store.ts';
import { fixedToken, MIN_TOKEN_CHARS, tokenDigest, watchedTokenFile, type PageToken } from './activity-token.ts';
import { loadUiAssets } from './activity-ui-assets.ts';
import { isLoopbackHost } from './listen.ts';

export type ActivityServerErrorCode = 'ACTIVITY_SERVER_TOKEN_REQUIRED' | 'ACTIVITY_SERVER_LISTEN_FAILED' | 'ACTIVITY_SERVER_BAD_OPTIONS';

export class ActivityServerError extends AgentError {
  declare readonly code: ActivityServerErrorCode;
  constructor(code: ActivityServerErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export interface ActivityServerOptions {
  host: string;
  port: number;
  /** Required (or `tokenFile`) unless `host` is a loopback address; at least 16 characters. */
  token?: string;
  /** The token's file, followed: re-read when it changes, which ends every session. Not with `token`. */
  tokenFile?: string;
  /** Connections at once (the live tails' included); past it a new one is refused 503. Default 256. */
  maxConnections?: number;
  store: ActivityStore;
  reader: ActivityReader;
  live: LiveTail;
  enclave: () => EnclaveInfo;
  /** The log sink's counters (lines, invalid, oversized, connections...), shown with the store's. */
  sinkStats?: () => object;
  /** Base URL of the agent's ops endpoint (/health, /metrics); null: not configured. */
  ops?: string | null | (() => string | null);
  /** A request (head and body) must have arrived within this; the answer, the live tail's included, may take longer. Default 30 000 ms. */
  requestTimeoutMs?: number;
  /** With a token: a session with no API call for this long ends. Default 30 minutes. */
  sessionIdleMs?: number;
  /** With a token: a session ends this long after its login, however used. Default 12 hours. */
  sessionLifetimeMs?: number;
  /** The sessions' clock (default Date.now; tests give a fake). */
  now?: () => number;
  /** How often expired sessions, their live tails and the token file are looked at without a request (default 30 s; tests). */
  sessionSweepMs?: number;
  logger?: Logger;
}

export interface ActivityServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export const CONTENT_SECURITY_POLICY =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** On every answer, the live tail's included: no sniffing, no framing, no loading by another origin. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'cache-control': 'no-store',
};

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>enclave-agent · activity</title>
<link rel="stylesheet" href="/app.css">
<script type="module" src="/app.js"></script>
</head>
<body></body>
</html>
`;

const COOKIE = 'ea_activity';
/** Connections the page's server holds at once: 64 live tails and a browser's 6 per page leave room. */
export const DEFAULT_MAX_PAGE_CONNECTIONS = 256;
/** How often live tails opened with a session that has since expired, or a rotated token, are looked for (also on every request). */
const SESSION_SWEEP_MS = 30_000;

/** A live tail refused at a bound: all connections (503, the server's) or this address's (429, the client's). */
const LIVE_REFUSALS: Record<LiveRefusal, { status: number; code: string; message: string }> = {
  'max-clients': { status: 503, code: 'LIVE_TAIL_FULL', message: 'too many live-tail connections to this page; try again later' },
  'max-per-client': { status: 429, code: 'LIVE_TAIL_CLIENT_FULL', message: 'too many live-tail connections from this address; close other tabs of this page' },
};

class BadRequest extends Error {}

function intParam(params: URLSearchParams, name: string, min: number, max: number): number | undefined {
  const v = params.get(name);
  if (v === null || v === '') return undefined;
  if (!/^-?\d{1,16}$/.test(v)) throw new BadRequest(`${name}: expected an integer, found "${v.slice(0, 40)}"`);
  const n = Number(v);
  if (n < min || n > max) throw new BadRequest(`${name}: expected ${min}..${max}, found ${n}`);
  return n;
}

const STATUS_CLASSES: Record<string, number> = { none: 0, '1xx': 1, '2xx': 2, '3xx': 3, '4xx': 4, '5xx': 5 };

/** The listing's query from the URL (validated: a bad parameter is a 400, not a slow or wrong query). */
export function listQuery(params: URLSearchParams): ListQuery {
  const q: ListQuery = {};
  const limit = intParam(params, 'limit', 1, MAX_PAGE);
  if (limit !== undefined) q.limit = limit;
  const before = params.get('before');
  if (before !== null && before !== '') {
    if (parseCursor(before) === null) throw new BadRequest('before: expected a cursor "<ts>.<id>"');
    q.before = before;
  }
  const txid = params.get('txid')?.trim();
  if (txid) q.txid = txid.slice(0, 256);
  const pathPrefix = params.get('path');
  if (pathPrefix) q.pathPrefix = pathPrefix.slice(0, 2048);
  const status = params.get('status');
  if (status) {
    const c = STATUS_CLASSES[status];
    if (c === undefined) throw new BadRequest(`status: expected none|1xx|2xx|3xx|4xx|5xx, found "${status.slice(0, 10)}"`);
    q.statusClass = c;
  }
  const method = params.get('method');
  if (method) {
    if (!/^[A-Z]{1,16}$/.test(method)) throw new BadRequest('method: expected an HTTP method in capitals');
    q.method = method;
  }
  const from = intParam(params, 'from', 0, 8.64e15);
  const to = intParam(params, 'to', 0, 8.64e15);
  if (from !== undefined) q.from = from;
  if (to !== undefined) q.to = to;
  return q;
}

/** The request target as a URL; one `new URL` refuses (`//x:99999/`, `//[`) is a 400, not a crash. */
function requestUrl(target: string | undefined): URL {
  try {
    return new URL(target ?? '/', 'http://activity');
  } catch {
    throw new BadRequest('the request target is not a valid path');
  }
}

/** A bound given to the page's server, its live tail or its sessions: a positive safe integer, else a typed error. */
export function checkBound(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw new ActivityServerError('ACTIVITY_SERVER_BAD_OPTIONS', `${name}: expected a positive integer, found ${String(v)}`);
}

function tooManyConnections(max: number): Buffer {
  const message = `the activity page serves at most ${max} connections at once: close other tabs or idle clients, then retry`;
  return refusalAnswer(JSON.stringify({ error: { code: 'ACTIVITY_TOO_MANY_CONNECTIONS', message, max } }), SECURITY_HEADERS);
}

function cookieValue(req: IncomingMessage, name: string): string | null {
  const header = req.headers.cookie;
  if (header === undefined) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

async function readSmallBody(req: IncomingMessage, max: number): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new BadRequest('body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function startActivityServer(opts: ActivityServerOptions): Promise<ActivityServer> {
  const loopback = isLoopbackHost(opts.host);
  const { token, tokenFile } = opts;
  if (token !== undefined && tokenFile !== undefined) throw new ActivityServerError('ACTIVITY_SERVER_BAD_OPTIONS', 'token or tokenFile, not both');
  if (!loopback && (token === undefined || token.length < MIN_TOKEN_CHARS) && tokenFile === undefined) {
    throw new ActivityServerError('ACTIVITY_SERVER_TOKEN_REQUIRED', `the activity page on ${opts.host} (not loopback) needs a token of at least ${MIN_TOKEN_CHARS} characters ($ENCLAVE_AGENT_UI_TOKEN, --ui-token-file or --ui-token)`);
  }
  if (token !== undefined && token.length < MIN_TOKEN_CHARS) throw new ActivityServerError('ACTIVITY_SERVER_TOKEN_REQUIRED', `the page's token: at least ${MIN_TOKEN_CHARS} characters`);
  checkBound('sessionIdleMs', opts.sessionIdleMs);
  checkBound('sessionLifetimeMs', opts.sessionLifetimeMs);
  checkBound('maxConnections', opts.maxConnections);
  const maxConnections = opts.maxConnections ?? DEFAULT_MAX_PAGE_CONNECTIONS;
  const logger = opts.logger ?? pino({ enabled: false });
  // A file that fails its first read is the caller's error (typed, PageTokenError); later changes are logged.
  const pageToken: PageToken | null =
    tokenFile !== undefined
      ? watchedTokenFile(tokenFile, (problem) => {
          if (problem === null) logger.info({ file: tokenFile }, 'activity page: the token file changed; every session ends');
          else logger.warn({ file: tokenFile, err: problem.code, reason: problem.message }, 'activity page: the token file changed and holds no valid token; nobody can sign in until it does');
        })
      : token !== undefined
        ? fixedToken(token)
        : null;
  let tokenGeneration = pageToken?.generation() ?? 0;
  const sessions = new PageSessions({ idleMs: opts.sessionIdleMs ?? DEFAULT_SESSION_IDLE_MS, lifetimeMs: opts.sessionLifetimeMs ?? DEFAULT_SESSION_LIFETIME_MS, ...(opts.now === undefined ? {} : { now: opts.now }) });
  /** Live tails opened with a session: ended once it expires. */
  const liveSessions = new Map<ServerResponse, string>();
  const endExpiredLive = (): void => {
    for (const [res, session] of liveSessions) {
      if (sessions.alive(session)) continue;
      liveSessions.delete(res);
      res.end();
    }
  };
  /** The token in force (looking at its file): when it changed since the last look, every session ends. */
  const currentDigest = (): Buffer | null => {
    const digest = pageToken!.digest();
    const generation = pageToken!.generation();
    if (generation !== tokenGeneration) {
      tokenGeneration = generation;
      sessions.clear();
      endExpiredLive();
    }
    return digest;
  };
  let boundPort = opts.port;
  // Queries refused while the reader is at its cap: counted in one line per interval, not one per request.
  const busy = new RateLimitedLog(logger, 'activity queries refused');
  // Wrong tokens likewise: whoever reaches a page served off loopback can post them as fast as the network goes.
  const wrongTokens = new RateLimitedLog(logger, 'activity page: wrong token');
  const liveRefused = new RateLimitedLog(logger, 'activity page: live-tail connections refused');
  const connectionsRefused = new RateLimitedLog(logger, 'activity page: connections refused');
  const acceptErrors = new RateLimitedLog(logger, 'activity page: connections not accepted');
  let refusedConnections = 0;

  const send = (res: ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}): void => {
    res.writeHead(status, {
      'content-type': type,
      'content-length': String(Buffer.byteLength(body)),
      ...SECURITY_HEADERS,
      ...extra,
    });
    res.end(body);
  };
  const json = (res: ServerResponse, status: number, value: unknown, extra?: Record<string, string>): void => send(res, status, 'application/json; charset=utf-8', JSON.stringify(value), extra);
  const fail = (res: ServerResponse, status: number, code: string, message: string): void => json(res, status, { error: { code, message } });

  /** The request's live session ('' without a token), or null: none, unknown or expired. Its idle time starts over. */
  const authorized = (req: IncomingMessage): string | null => {
    if (pageToken === null) return '';
    currentDigest();
    const s = cookieValue(req, COOKIE);
    return s !== null && sessions.use(s) ? s : null;
  };
  /** Loopback without a token: the Host must be a loopback name, or a rebinding page could read the API. */
  const hostAllowed = (req: IncomingMessage): boolean => {
    if (pageToken !== null) return true;
    const host = req.headers.host ?? '';
    const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d+$/, '');
    return isLoopbackHost(name);
  };

  const api = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const p = url.pathname;
    if (p === '/api/login') {
      if (req.method !== 'POST') return fail(res, 405, 'METHOD_NOT_ALLOWED', 'POST only');
      if (pageToken === null) return json(res, 200, { ok: true, token: false });
      let given = '';
      try {
        const body = JSON.parse(await readSmallBody(req, 4096)) as { token?: unknown };
        given = typeof body.token === 'string' ? body.token : '';
      } catch {
        return fail(res, 400, 'BAD_REQUEST', 'expected {"token": "..."}');
      }
      const expected = currentDigest();
      if (expected === null) return fail(res, 503, 'TOKEN_UNAVAILABLE', 'the page\'s token file holds no valid token: its operator must fix it (see the server\'s log)');
      // Digests of equal length: the comparison takes the same time whatever the token given.
      if (!timingSafeEqual(tokenDigest(given), expected)) {
        wrongTokens.note('wrong-token');
        return fail(res, 401, 'UNAUTHORIZED', 'wrong token');
      }
      const session = sessions.create();
      return json(res, 200, { ok: true }, { 'set-cookie': `${COOKIE}=${session}; HttpOnly; SameSite=Strict; Path=/` });
    }
    if (req.method !== 'GET') return fail(res, 405, 'METHOD_NOT_ALLOWED', 'GET only');
    const session = authorized(req);
    if (session === null) return fail(res, 401, 'UNAUTHORIZED', 'this page needs its token');
    if (p === '/api/status') {
      const s = opts.store.stats;
      return json(res, 200, {
        token: pageToken !== null,
        connections: { max: maxConnections, refused: refusedConnections },
        store: { rows: s.rows, inserted: s.inserted, dropped: s.dropped, rejected: s.rejected, expired: s.expired, pending: s.pending, retainDays: opts.store.retainDays, retainRows: opts.store.retainRows },
        sink: opts.sinkStats?.() ?? null,
        live: { clients: opts.live.clients, missedBatches: opts.live.missedBatches, refused: opts.live.refused },
      });
    }
    if (p === '/api/records') return json(res, 200, await opts.reader.list(listQuery(url.searchParams)));
    const detail = /^\/api\/records\/(\d{1,15})$/.exec(p);
    if (detail !== null) {
      const r = await opts.reader.get(Number(detail[1]));
      return r === null ? fail(res, 404, 'NOT_FOUND', 'no such record') : json(res, 200, r);
    }
    if (p === '/api/traffic') {
      const now = Date.now();
      const to = intParam(url.searchParams, 'to', 0, 8.64e15) ?? now;
      const from = intParam(url.searchParams, 'from', 0, 8.64e15) ?? to - 3_600_000;
      if (from >= to) throw new BadRequest('from must be before to');
      const buckets = intParam(url.searchParams, 'buckets', 1, 500) ?? 120;
      return json(res, 200, await opts.reader.traffic({ from, to, buckets }));
    }
    if (p === '/api/enclave') {
      const info = opts.enclave();
      return json(res, 200, { ...info, uptimeS: info.startedAt === null ? null : Math.round((Date.now() - info.startedAt) / 1000) });
    }
    if (p === '/api/ops') return json(res, 200, await fetchOps(typeof opts.ops === 'function' ? opts.ops() : (opts.ops ?? null)));
    if (p === '/api/live') {
      const refusal = opts.live.attach(res, SECURITY_HEADERS, req.socket.remoteAddress ?? '');
      if (refusal !== null) {
        liveRefused.note(refusal);
        const r = LIVE_REFUSALS[refusal];
        return json(res, r.status, { error: { code: r.code, message: r.message } }, { 'retry-after': '10' });
      }
      if (session !== '') {
        liveSessions.set(res, session);
        res.once('close', () => liveSessions.delete(res));
      }
      return;
    }
    return fail(res, 404, 'NOT_FOUND', 'no such endpoint');
  };

  // Node's requestTimeout bounds receiving the request only (it never cuts the live tail's long answer):
  // without it, a client that trickles a body (POST /api/login needs no session) holds its socket forever.
  const requestTimeout = opts.requestTimeoutMs ?? 30_000;
  const server = http.createServer({ requestTimeout, headersTimeout: Math.min(10_000, requestTimeout), connectionsCheckingInterval: Math.min(30_000, Math.max(10, requestTimeout / 4)) }, (req, res) => {
    let url: URL | undefined;
    // A session that expired since the last look no longer holds a live tail open.
    if (liveSessions.size > 0) endExpiredLive();
    (async () => {
      if (!hostAllowed(req)) return fail(res, 403, 'FORBIDDEN', 'Host must be a loopback name');
      try {
        url = requestUrl(req.url);
        if (url.pathname.startsWith('/api/')) return await api(req, res, url);
        if (req.method !== 'GET' && req.method !== 'HEAD') return fail(res, 405, 'METHOD_NOT_ALLOWED', 'GET only');
        if (url.pathname === '/' || url.pathname === '/index.html') return send(res, 200, 'text/html; charset=utf-8', PAGE);
        if (url.pathname === '/app.js') return send(res, 200, 'text/javascript; charset=utf-8', (await loadUiAssets()).js);
        if (url.pathname === '/favicon.ico') return send(res, 204, 'image/x-icon', '');
        if (url.pathname === '/app.css') return send(res, 200, 'text/css; charset=utf-8', (await loadUiAssets()).css);
        return send(res, 404, 'text/plain; charset=utf-8', 'not found');
      } catch (err) {
        if (err instanceof BadRequest) return fail(res, 400, 'BAD_REQUEST', err.message);
        if (isAgentError(err, 'ACTIVITY_READER_BUSY')) {
          busy.note('reader-busy');
          return json(res, 503, { error: { code: err.code, message: err.message } }, { 'retry-after': '1' });
        }
        logger.error({ err: (err as { code?: string }).code ?? (err as Error).message, path: url?.pathname }, 'activity page request failed');
        if (!res.headersSent) fail(res, 500, 'INTERNAL', (err as { code?: string }).code ?? 'internal error');
        else res.destroy();
      }
    })().catch((err: unknown) => {
      // Never an unhandled rejection (fatal for the process): log and drop this exchange only.
      logger.error({ err: (err as { code?: string }).code ?? 'internal', path: url?.pathname }, 'activity page request failed outside its handler');
      res.destroy();
    });
  });

  const front = cappedFront(
    server,
    maxConnections,
    (why) => {
      refusedConnections++;
      connectionsRefused.note(why);
    },
    undefined,
    undefined,
    tooManyConnections(maxConnections),
  );
  await listenFront(
    front,
    server,
    { port: opts.port, host: opts.host },
    (err) => new ActivityServerError('ACTIVITY_SERVER_LISTEN_FAILED', `activity page: cannot listen on ${opts.host}:${opts.port}: ${err.code ?? err.message}`, { cause: err }),
    (code) => acceptErrors.note(code),
  );
  boundPort = (front.address() as AddressInfo).port;
  const sweep = setInterval(() => {
    // The token file too: a live tail makes no request, and one opened under a rotated-out token must end.
    if (pageToken !== null) currentDigest();
    sessions.sweep();
    endExpiredLive();
  }, opts.sessionSweepMs ?? SESSION_SWEEP_MS);
  sweep.unref();
  const hostForUrl = opts.host.includes(':') && !opts.host.startsWith('[') ? `[${opts.host}]` : opts.host;

  return {
    url: `http://${hostForUrl}:${boundPort}/`,
    port: boundPort,
    async close() {
      clearInterval(sweep);
      opts.live.close();
      busy.flush();
      wrongTokens.flush();
      liveRefused.flush();
      connectionsRefused.flush();
      acceptErrors.flush();
      server.closeAllConnections();
      server.close();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    },
  };
}

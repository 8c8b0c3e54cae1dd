// `enclave-agent proxy`: a plain HTTP/1.1 door on 127.0.0.1 for any language (curl, Python, Go, a browser on the
// same machine) to an enclave reached through an attested client — the Noise channel over the host bridge
// (ws:// or wss://) or the attested TLS ingress (https://). The attestation is the client's (src/client): pinned
// PCRs and roots, checked before the first request and again on every reconnect.
//
// Guarantees:
// - Nothing is forwarded before the attestation passed. A request that arrives while the enclave cannot be
//   verified is answered here with 502 and `x-enclave-agent-error: <code>` (ATTESTATION_PCR_MISMATCH, ...,
//   CLIENT_CONNECT_FAILED); the enclave and the app see nothing of it.
// - When the bridge or the enclave restarts, the client reconnects and verifies again on the next request (the
//   SDK's reconnect); while it is gone, requests get 502 CLIENT_CONNECT_FAILED and are not queued.
// - A request that was in flight when the connection died is never re-sent (it may have reached the app): 502
//   CLIENT_RETRYABLE.
// - A request head must arrive within headersTimeoutMs; a body has no overall deadline, only one on the local
//   client's silence while the proxy waits for it (src/host/attested-proxy-body.ts): 408 PROXY_REQUEST_TIMEOUT.
// - What local clients leave unread of their answers is bounded per local connection (maxUnreadBytesPerConnection:
//   past it that connection is closed) and across all of them (maxUnreadBytes: past it the connection holding the
//   most is closed; src/host/attested-proxy-unread.ts).
// The local side is plain HTTP on loopback: whoever can reach 127.0.0.1 on this machine can use the enclave.
// On a loopback address the request must also name a loopback Host (127.x, ::1, localhost), so a web page a
// browser on this machine opens cannot reach the enclave through the proxy by DNS rebinding (its Host is its
// own domain): 403 PROXY_HOST_REFUSED, nothing forwarded.
// A page needs no rebinding to send a blind cross-site request (a form POST to http://127.0.0.1:PORT names a
// loopback Host): a request or upgrade whose Origin is present and not a loopback origin (http(s) on 127.x,
// [::1], localhost, any port) gets 403 PROXY_ORIGIN_REFUSED, nothing forwarded; so does a cross-site request a
// browser sends without Origin (Sec-Fetch-Site cross-site or same-site: an <img>, a link, a form GET) unless its
// Referer is a loopback page. Clients that send neither Origin nor Sec-Fetch-Site (curl, Python, Go,
// server-side code) are unaffected.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Writable } from 'node:stream';
import type { Duplex } from 'node:stream';
import type { WritableStream as NodeWritable } from 'node:stream/web';
import type { Logger } from 'pino';
import type { Client } from '../client/index.ts';
import { hasBody, requestBody } from './attested-proxy-body.ts';
import { unreadBudget } from './attested-proxy-unread.ts';
import { isLoopbackHost } from './listen.ts';

/**
 * The header carrying the error code of an answer the proxy gave itself (502, 403). Dropped from the app's answers,
 * so a local client can tell the proxy's errors from whatever the app writes.
 */
export const ERROR_HEADER = 'x-enclave-agent-error';

export interface AttestedProxyOptions {
  /** Connects and verifies (connect from enclave-agent/client/node with the pins bound); `signal` aborts on close(). */
  connect: (signal: AbortSignal) => Promise<Client>;
  /** Where to listen (default 127.0.0.1:0). */
  host?: string;
  port?: number;
  /** Wait after a failed connect before trying again on the next request (default 1000 ms). */
  retryAfterMs?: number;
  /** A request head must be complete within this (default 60 000 ms): 408 PROXY_REQUEST_TIMEOUT. */
  headersTimeoutMs?: number;
  /**
   * An upload the proxy waits on that sends nothing for this long has stalled (default 60 000 ms): 408
   * PROXY_REQUEST_TIMEOUT (the connection closed if the answer started), the enclave stream released. There is no
   * deadline on the whole request: a body that keeps coming is never cut.
   */
  bodyIdleTimeoutMs?: number;
  /**
   * Answer bytes the proxy holds for local clients that do not read them, all connections together (default
   * 64 MiB; src/host/attested-proxy-unread.ts). Past it the connection holding the most is closed
   * (PROXY_UNREAD_LIMIT, logged).
   */
  maxUnreadBytes?: number;
  /**
   * The same for one local connection (default 16 MiB): past it that connection is closed (PROXY_UNREAD_LIMIT),
   * so one client that does not read takes at most this much of the room the others share.
   */
  maxUnreadBytesPerConnection?: number;
  logger?: Logger;
}

export interface AttestedProxy {
  readonly url: string;
  readonly port: number;
  /** The verified client, once the first connect passed. */
  readonly client: Client | null;
  /** The last connect failure's code, until a connect passes. */
  readonly lastError: string | null;
  /** Answer bytes waiting now for local clients to read them, all answers together. */
  readonly unreadBytes: number;
  /** Connects now (the CLI does it at start to report the attestation); resolves to the error code or null. */
  ready(): Promise<string | null>;
  close(): Promise<void>;
}

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1), Host (the client sets its own), Expect (Node's server already answered
 * 100-continue to the local client; the app must not be asked again) and Proxy (httpoxy: a CGI-style app reads it
 * as HTTP_PROXY and would send its own outbound requests wherever a local client says).
 */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'proxy-authenticate', 'host', 'expect', 'proxy']);

function errorCode(err: unknown): string {
  const e = err as { attestationCode?: string; code?: string };
  return e?.attestationCode ?? e?.code ?? 'PROXY_ERROR';
}

/** The header names Connection header values list (hop-by-hop too, RFC 9110 §7.6.1), lower-cased. */
function connectionTokens(values: string[]): Set<string> {
  const tokens = new Set<string>();
  for (const v of values) for (const t of v.split(',')) tokens.add(t.trim().toLowerCase());
  return tokens;
}

function forwardHeaders(raw: string[], keepUpgrade = false): [string, string][] {
  const connection: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'connection') connection.push(raw[i + 1]!);
  const listed = connectionTokens(connection);
  const out: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    const lower = k.toLowerCase();
    if (keepUpgrade && (lower === 'upgrade' || lower === 'connection')) out.push([k, raw[i + 1]!]);
    else if (!HOP.has(lower) && !listed.has(lower)) out.push([k, raw[i + 1]!]);
  }
  return out;
}

/** The Host header's name, port removed ("[::1]:8080" → "[::1]"); '' when there is none. */
function hostName(header: string | undefined): string {
  const h = header ?? '';
  return h.startsWith('[') ? h.slice(0, h.indexOf(']') + 1) : h.replace(/:\d*$/, '');
}

/** An origin served from this machine's loopback: http or https on 127.x, [::1] or localhost, any port. */
function isLoopbackOrigin(origin: string): boolean {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false; // "null" (sandboxed frames, file: pages), several origins joined, garbage
  }
  return (url.protocol === 'http:' || url.protocol === 'https:') && isLoopbackHost(url.hostname);
}

/** A whole answer of the proxy's own, for a socket no ServerResponse writes to (an upgrade, a parse error). */
function rawAnswer(status: number, code: string, message: string): string {
  const body = `enclave-agent proxy: ${code}: ${message}\n`;
  return `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${ERROR_HEADER}: ${code}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`;
}

/** An answer of the proxy's own; `close` ends the connection after it (a request body left unread). */
function ownAnswer(res: http.ServerResponse, status: number, code: string, message: string, close = false): void {
  const body = `enclave-agent proxy: ${code}: ${message}\n`;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', [ERROR_HEADER]: code, 'content-length': Buffer.byteLength(body), ...(close ? { connection: 'close' } : {}) });
  res.end(body);
}

/** What a request Node's parser refused is answered (the statuses Node's own server uses), by parser error code. */
const PARSE_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  HPE_HEADER_OVERFLOW: { status: 431, code: 'PROXY_HEADERS_TOO_LARGE', message: `the request head is larger than this proxy accepts (${http.maxHeaderSize} bytes)` },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, code: 'PROXY_BAD_REQUEST', message: 'chunk extensions too large' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'PROXY_REQUEST_TIMEOUT', message: 'the request head did not arrive in time' },
};
const BAD_REQUEST = { status: 400, code: 'PROXY_BAD_REQUEST', message: 'malformed HTTP/1.1 request (nothing was forwarded)' };

export async function startAttestedProxy(opts: AttestedProxyOptions): Promise<AttestedProxy> {
  const logger = opts.logger;
  const retryAfterMs = opts.retryAfterMs ?? 1000;
  const headersTimeoutMs = opts.headersTimeoutMs ?? 60_000;
  const bodyIdleTimeoutMs = opts.bodyIdleTimeoutMs ?? 60_000;
  const maxUnreadBytes = opts.maxUnreadBytes ?? 64 * 1024 * 1024;
  const maxUnreadBytesPerConnection = opts.maxUnreadBytesPerConnection ?? 16 * 1024 * 1024;
  const unread = unreadBudget({ maxBytes: maxUnreadBytes, maxBytesPerConnection: maxUnreadBytesPerConnection }, (heldBytes, totalBytes, scope) =>
    logger?.warn({ code: 'PROXY_UNREAD_LIMIT', scope, heldBytes, totalBytes, maxUnreadBytes, maxUnreadBytesPerConnection }, 'a local client did not read its answer: closed it'),
  );
  let client: Client | null = null;
  let connecting: Promise<Client> | null = null;
  let lastError: string | null = null;
  let failedAt = 0;
  let lastFailure: unknown = null;
  let closed = false;
  /** Aborts a connect in flight on close(): a bridge that does not answer must not hold the process up to its timeout. */
  const closing = new AbortController();

  /** The verified client; connects (single flight) when there is none yet. */
  const getClient = async (): Promise<Client> => {
    if (client !== null) return client;
    if (connecting === null) {
      if (lastFailure !== null && Date.now() - failedAt < retryAfterMs) throw lastFailure;
      connecting = opts.connect(closing.signal).then(
        (c) => {
          connecting = null;
          if (closed) {
            void c.close();
            throw Object.assign(new Error('the proxy is closed'), { code: 'PROXY_CLOSED' });
          }
          client = c;
          lastError = null;
          lastFailure = null;
          logger?.info({ moduleId: c.attestation.moduleId }, 'enclave attestation verified; forwarding');
          return c;
        },
        (err: unknown) => {
          connecting = null;
          lastError = errorCode(err);
          lastFailure = err;
          failedAt = Date.now();
          logger?.warn({ code: lastError }, 'enclave attestation or connection failed; answering 502');
          throw err;
        },
      );
    }
    return connecting;
  };

  const refuse = (res: http.ServerResponse, err: unknown): void => {
    const code = errorCode(err);
    // A verification failure after a reconnect: the client stays closed to requests until it verifies again.
    if ((err as { code?: string })?.code === 'CLIENT_ATTESTATION_FAILED') lastError = code;
    if (res.writableEnded) return; // answered already (a stalled upload's 408)
    if (res.headersSent) {
      res.destroy();
      return;
    }
    ownAnswer(res, 502, code, (err as Error)?.message ?? String(err));
  };

  const loopbackOnly = isLoopbackHost(opts.host ?? '127.0.0.1');
  const hostRefused = (req: http.IncomingMessage): boolean => loopbackOnly && !isLoopbackHost(hostName(req.headers.host));
  const HOST_REFUSED = 'PROXY_HOST_REFUSED';
  const hostMessage = 'this proxy answers requests for a loopback Host (127.0.0.1, [::1], localhost) only';
  // Wherever it listens: a browser attaches Origin to cross-site requests whatever address they go to — but not to
  // a GET it loads without CORS (an <img>, a link, a form GET). Those carry Sec-Fetch-Site, and are refused unless
  // their Referer is a loopback page (a page can drop its Referer, which refuses it).
  const originRefused = (req: http.IncomingMessage): boolean => {
    const origin = req.headers.origin;
    if (origin !== undefined) return !isLoopbackOrigin(origin);
    const site = req.headers['sec-fetch-site'];
    if (site !== 'cross-site' && site !== 'same-site') return false;
    return req.headers.referer === undefined || !isLoopbackOrigin(req.headers.referer);
  };
  const ORIGIN_REFUSED = 'PROXY_ORIGIN_REFUSED';
  const originMessage = 'this proxy answers web pages served from loopback (http(s)://127.0.0.1, [::1], localhost) only';
  /** The first reason to refuse a request before anything reaches the enclave, or null. */
  const refusal = (req: http.IncomingMessage): { code: string; message: string } | null => {
    if (hostRefused(req)) return { code: HOST_REFUSED, message: hostMessage };
    if (originRefused(req)) return { code: ORIGIN_REFUSED, message: originMessage };
    return null;
  };

  /** Responses not finished yet per local connection (pipelined requests wait in Node's queue). */
  const answering = new WeakMap<Socket, number>();
  // No deadline on a whole request (Node's default, 300 s, cut long uploads that were still flowing); the head is
  // bounded, and checked often enough that a short headersTimeoutMs holds.
  const timeouts = { requestTimeout: 0, headersTimeout: headersTimeoutMs, connectionsCheckingInterval: Math.min(30_000, Math.max(10, Math.ceil(headersTimeoutMs / 4))) };
  const server = http.createServer(timeouts, (req, res) => {
    const conn = req.socket;
    answering.set(conn, (answering.get(conn) ?? 0) + 1);
    res.once('close', () => answering.set(conn, (answering.get(conn) ?? 1) - 1));
    const refused = refusal(req);
    if (refused !== null) {
      req.resume();
      ownAnswer(res, 403, refused.code, refused.message);
      return;
    }
    // Armed before connecting: a client that leaves while the proxy still verifies the enclave has left.
    const abort = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const stalled = (): void => {
      const t = PARSE_ERRORS.ERR_HTTP_REQUEST_TIMEOUT!;
      if (res.headersSent) res.destroy();
      else ownAnswer(res, t.status, t.code, 'the request body stopped arriving', true);
      abort.abort();
    };
    void (async () => {
      let c: Client;
      try {
        c = await getClient();
      } catch (err) {
        req.resume();
        refuse(res, err);
        return;
      }
      if (abort.signal.aborted) return; // nobody to answer: the app must not run it
      try {
        const upstream = await c.fetch(req.url ?? '/', {
          method: req.method ?? 'GET',
          headers: forwardHeaders(req.rawHeaders),
          ...(hasBody(req) ? { body: requestBody(req, bodyIdleTimeoutMs, stalled) } : {}),
          signal: abort.signal,
        });
        const headers: [string, string][] = [];
        // The body was decoded by its Transfer-Encoding, which wins over a Content-Length beside it (RFC 9112
        // §6.3) and is re-framed here: that Content-Length must go, or the local client reads a different body.
        const reframed = upstream.headers.has('transfer-encoding');
        const listed = connectionTokens([upstream.headers.get('connection') ?? '']);
        upstream.headers.forEach((v, k) => {
          if (k === 'set-cookie' || k === ERROR_HEADER || HOP.has(k) || listed.has(k) || (reframed && k === 'content-length')) return;
          headers.push([k, v]);
        });
        for (const cookie of upstream.headers.getSetCookie()) headers.push(['set-cookie', cookie]);
        res.writeHead(upstream.status, upstream.statusText, headers.flat());
        if (upstream.body === null) {
          res.end();
          return;
        }
        void unread.relay(upstream.body, res, conn);
      } catch (err) {
        req.resume();
        refuse(res, err);
      }
    })();
  });

  const upgraded = new Set<Duplex>();
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    upgraded.add(socket);
    // A local client that leaves (EOF or close) before the 101 has left, as Node's server treats an EOF before
    // its response: the upgrade is called off, and a 101 that arrives anyway is closed at once — an app that
    // keeps the connection open would otherwise hold that enclave stream and its slot for good.
    const gone = new AbortController();
    const leave = (): void => gone.abort();
    socket.once('end', leave);
    socket.once('close', () => {
      upgraded.delete(socket);
      leave();
    });
    const fail = (status: number, code: string, message: string): void => void socket.end(rawAnswer(status, code, message));
    const refused = refusal(req);
    if (refused !== null) {
      fail(403, refused.code, refused.message);
      return;
    }
    void (async () => {
      let c: Client;
      try {
        c = await getClient();
      } catch (err) {
        fail(502, errorCode(err), (err as Error)?.message ?? String(err));
        return;
      }
      try {
        const up = await c.upgrade(req.url ?? '/', { method: req.method ?? 'GET', headers: forwardHeaders(req.rawHeaders, true), signal: gone.signal });
        if (gone.signal.aborted) {
          up.close();
          socket.destroy();
          return;
        }
        socket.off('end', leave); // from here a half-close is the upgraded protocol's own
        const lines = [`HTTP/1.1 101 ${up.statusText || 'Switching Protocols'}`];
        up.headers.forEach((v, k) => {
          if (k !== ERROR_HEADER) lines.push(`${k}: ${v}`);
        });
        socket.write(lines.join('\r\n') + '\r\n\r\n');
        const toEnclave = Writable.fromWeb(up.writable as NodeWritable<Uint8Array>);
        if (head.length > 0) toEnclave.write(head);
        socket.pipe(toEnclave).on('error', () => socket.destroy());
        void unread.relay(up.readable, socket, socket);
        socket.once('close', () => up.close());
      } catch (err) {
        const status = (err as { status?: number })?.status;
        if ((err as { code?: string })?.code === 'CLIENT_UPGRADE_FAILED' && status !== undefined) fail(status, 'CLIENT_UPGRADE_FAILED', `the app answered ${status}`);
        else fail(502, errorCode(err), (err as Error)?.message ?? String(err));
      }
    })();
  });
  // A request Node's parser refused is answered like Node's own server does (a silent reset left curl with "Empty
  // reply from server" for, say, a 20 KB cookie) — unless a response is under way there, which it would corrupt.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (socket.writable && (answering.get(socket) ?? 0) === 0) {
      const a = PARSE_ERRORS[err.code ?? ''] ?? BAD_REQUEST;
      socket.write(rawAnswer(a.status, a.code, a.message));
    }
    socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const hostText = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${hostText}:${addr.port}`,
    port: addr.port,
    get client() {
      return client;
    },
    get lastError() {
      return lastError;
    },
    get unreadBytes() {
      return unread.held();
    },
    ready: () => getClient().then(
      () => null,
      (err: unknown) => errorCode(err),
    ),
    async close() {
      closed = true;
      closing.abort();
      server.closeAllConnections();
      for (const s of upgraded) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await client?.close().catch(() => {});
    },
  };
}

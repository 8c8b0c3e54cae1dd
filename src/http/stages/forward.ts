// Stage: forward to the app. One undici keep-alive Pool to 127.0.0.1:<port>: requests reuse idle
// connections (no TCP connect per request). Bodies stream both ways with backpressure (chunked in, chunked
// out when there is no length). Hop-by-hop headers (and those the Connection header names) were removed
// from the request when the exchange was built; they are removed from the response here. The app
// unreachable → 502 JSON; no response head within the timeout → 504 JSON; a failure after the response
// head was sent can only cut the connection.
import { Pool, errors as undiciErrors } from 'undici';
import type { Dispatcher } from 'undici';
import { PassThrough } from 'node:stream';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Exchange, Stage } from '../exchange.ts';
import { endToEndHeaders, removeHeader } from '../headers.ts';
import { HttpModeError } from '../errors.ts';

export interface UpstreamOptions {
  host: string;
  port: number;
  /** Time to wait for the response head, and the longest gap between body chunks (ms). */
  timeoutMs: number;
  /** Idle keep-alive connections are kept this long (ms). */
  keepAliveTimeoutMs?: number;
  /** Upper bound on concurrent connections to the app (default 256; more requests queue). */
  connections?: number;
  /** While the app has never answered, refused connections are retried for this long (ms, default 0). */
  startupGraceMs?: number;
}

/** The keep-alive pool to the app plus what the health probe and the forward stage share. */
export class Upstream {
  readonly pool: Pool;
  readonly origin: string;
  readonly timeoutMs: number;
  readonly startupGraceMs: number;
  /** Set once the app has sent any response: from then on a refused connection is an outage, not a start-up. */
  answered = false;

  constructor(opts: UpstreamOptions) {
    this.origin = `http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${opts.port}`;
    this.timeoutMs = opts.timeoutMs;
    this.startupGraceMs = opts.startupGraceMs ?? 0;
    this.pool = new Pool(this.origin, {
      connections: opts.connections ?? 256,
      pipelining: 1,
      keepAliveTimeout: opts.keepAliveTimeoutMs ?? 30_000,
      keepAliveMaxTimeout: Math.max(opts.keepAliveTimeoutMs ?? 30_000, 60_000),
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connect: { timeout: Math.min(opts.timeoutMs, 10_000) },
    });
  }

  async close(): Promise<void> {
    await this.pool.destroy().catch(() => {});
  }
}

const REFUSED = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EADDRNOTAVAIL']);

/** Maps an upstream failure before the response head to the client's status. */
export function upstreamError(err: unknown): HttpModeError {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new HttpModeError('HTTP_APP_TIMEOUT', 504, 'the app did not answer in time', { cause: err });
  }
  if (err instanceof undiciErrors.InvalidArgumentError || err instanceof undiciErrors.NotSupportedError) {
    return new HttpModeError('HTTP_BAD_REQUEST', 400, `request not forwardable: ${(err as Error).message}`, { cause: err });
  }
  if (typeof code === 'string' && REFUSED.has(code)) {
    return new HttpModeError('HTTP_APP_UNREACHABLE', 502, 'the app is unreachable', { cause: err });
  }
  return new HttpModeError('HTTP_APP_UNREACHABLE', 502, 'the app did not answer', { cause: err });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function forwardStage(upstream: Upstream, opts: { logger?: Logger; dropResponseHeaders?: ReadonlySet<string> } = {}): Stage {
  return async (ex) => {
    const res = ex.res;
    if (res === null) throw new HttpModeError('HTTP_INTERNAL', 500, 'forward stage reached without a response');
    const abort = new AbortController();
    const onClose = (): void => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', onClose);

    const body = ex.body;
    let bodyStarted = (): boolean => body !== null && body.readableDidRead;
    const method = ex.req.method ?? 'GET';
    // The client's body reaches undici through a PassThrough it may destroy without touching the request:
    // the client connection must survive an app failure to receive the 502, and once the exchange is over
    // the forwarder drains whatever the app did not read (a keep-alive stream goes on).
    // It is handed over as an async iterable so the framing stays what the client chose: undici would
    // otherwise turn a chunked body that happens to be fully buffered into a Content-Length one.
    let requestBody: Readable | undefined;
    if (body === ex.req) {
      const pass = new PassThrough({ highWaterMark: 64 * 1024 });
      pass.on('error', () => {});
      body.pipe(pass);
      res.once('close', () => {
        body.unpipe(pass);
        pass.destroy();
      });
      requestBody = iterate(pass) as unknown as Readable;
      bodyStarted = () => pass.readableDidRead;
    } else {
      requestBody = body ?? undefined;
    }

    // The length the app is told is the length of the body it gets (a decrypt stage may have changed it);
    // without one, undici sends the body chunked.
    removeHeader(ex.upstreamHeaders, 'content-length');
    if (body !== null && ex.bodyLength !== null) ex.upstreamHeaders.push('content-length', String(ex.bodyLength));

    const started = performance.now();
    let response: Dispatcher.ResponseData;
    for (;;) {
      try {
        response = await upstream.pool.request({
          origin: upstream.origin,
          path: ex.req.url ?? '/',
          method: method as Dispatcher.HttpMethod,
          headers: ex.upstreamHeaders,
          body: requestBody,
          signal: abort.signal,
          responseHeaders: 'raw',
          // Big responses stream through; the default highWaterMark of the body is fine.
        });
        break;
      } catch (err) {
        if (abort.signal.aborted) {
          ex.errorCode ??= 'CLIENT_GONE';
          return;
        }
        const code = (err as { code?: unknown }).code;
        const canRetry =
          code === 'ECONNREFUSED' &&
          !upstream.answered &&
          performance.now() - started < upstream.startupGraceMs &&
          !bodyStarted();
        if (canRetry) {
          await sleep(100);
          continue;
        }
        const mapped = upstreamError(err);
        opts.logger?.warn({ requestId: ex.requestId, code: mapped.code, cause: (err as { code?: string }).code }, 'upstream request failed');
        throw mapped;
      }
    }
    upstream.answered = true;

    const headers = endToEndHeaders(response.headers as unknown as string[], { drop: opts.dropResponseHeaders });
    for (let i = 0; i < ex.responseHeaders.length; i++) headers.push(ex.responseHeaders[i]!);
    const appBody = response.body;
    if (res.destroyed) {
      appBody.destroy();
      return;
    }
    ex.sentStatus = response.statusCode;
    ex.sentHeaders = headers;
    try {
      res.writeHead(response.statusCode, headers);
    } catch (err) {
      appBody.destroy();
      throw new HttpModeError('HTTP_APP_BAD_RESPONSE', 502, 'the app sent a response the agent cannot relay', { cause: err });
    }
    await relay(appBody, ex);
  };
}

async function* iterate(stream: Readable): AsyncGenerator<Buffer> {
  for await (const chunk of stream) yield chunk as Buffer;
}

/** Streams the app's body into the client's response with backpressure, counting bytes. */
function relay(appBody: Readable, ex: Exchange): Promise<void> {
  const res = ex.res!;
  return new Promise<void>((resolve) => {
    let settled = false;
    const done = (): void => {
      if (settled) return;
      settled = true;
      res.removeListener('drain', onDrain);
      res.removeListener('close', onResClose);
      resolve();
    };
    const onDrain = (): void => {
      appBody.resume();
    };
    const onResClose = (): void => {
      if (!appBody.readableEnded) appBody.destroy();
      done();
    };
    appBody.on('data', (chunk: Buffer) => {
      ex.bytesOut += chunk.length;
      if (!res.write(chunk)) appBody.pause();
    });
    appBody.once('end', () => {
      res.end();
      done();
    });
    appBody.once('error', (err: Error & { code?: string }) => {
      // The head is out; all we can do is cut the connection so the client sees a truncated response.
      ex.errorCode ??= err.code === 'UND_ERR_BODY_TIMEOUT' ? 'HTTP_APP_TIMEOUT' : 'HTTP_APP_BODY_FAILED';
      res.destroy();
      done();
    });
    res.on('drain', onDrain);
    res.once('close', onResClose);
  });
}

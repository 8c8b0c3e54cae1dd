// Stage: the largest request body HTTP mode forwards (enclave.toml [limits] max_request_bytes). Runs before
// decryption and forwarding:
//   - a declared Content-Length over the limit → 413 HTTP_BODY_TOO_LARGE at once; the body is never read,
//     nothing reaches the app, the connection is closed after the answer;
//   - a chunked body is counted as it flows: the chunk that crosses the limit fails the body with the same
//     413 error instead of being passed on. Before the app has answered, the client gets the 413 (the app sees
//     its request aborted); once the app's answer has begun, the answer is cut off.
// Raw mode has no request boundaries and is not affected; Data payloads are bounded by the frame size anyway.
import type { IncomingMessage } from 'node:http';
import { PassThrough, Readable } from 'node:stream';
import { HttpModeError } from '../errors.ts';
import type { Stage } from '../exchange.ts';

function tooLarge(max: number, declared?: number): HttpModeError {
  const what = declared === undefined ? 'chunked request body' : `request body of ${declared} bytes`;
  return new HttpModeError('HTTP_BODY_TOO_LARGE', 413, `${what} larger than the ${max}-byte request limit`);
}

/**
 * The stage's 413 for a request on the http.Server path whose declared Content-Length is over `max`, else null.
 * Also run before a request with `Expect: 100-continue` is answered 100 (forwarder.ts): its body is not invited.
 */
export function declaredBodyRefusal(req: IncomingMessage, max: number): HttpModeError | null {
  const declared = req.headers['content-length'];
  if (declared === undefined || req.headers['transfer-encoding'] !== undefined) return null;
  const length = Number(declared);
  return length > max ? tooLarge(max, length) : null;
}

/** Yields the chunks of `source`, failing with 413 as soon as they add up to more than `max` bytes. */
async function* capped(source: PassThrough, max: number): AsyncGenerator<Buffer> {
  let total = 0;
  for await (const chunk of source as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) throw tooLarge(max);
    yield chunk;
  }
}

export function bodyLimitStage(opts: { maxBodyBytes: number }): Stage {
  const max = opts.maxBodyBytes;
  if (!Number.isSafeInteger(max) || max < 0) {
    throw new HttpModeError('HTTP_BAD_OPTIONS', 500, `maxRequestBodyBytes: expected a non-negative integer, found ${String(max)}`);
  }
  return async (ex, next) => {
    const body = ex.body;
    if (body === null) return next();
    if (ex.bodyLength !== null) {
      if (ex.bodyLength > max) throw tooLarge(max, ex.bodyLength);
      return next();
    }
    // Chunked. The request is read through a PassThrough (as the forward stage does) so that the request
    // itself is never held by an iterator: when the exchange ends early the forwarder can still drain it.
    const req = body as IncomingMessage;
    const pass = new PassThrough({ highWaterMark: 64 * 1024 });
    pass.on('error', () => {});
    req.pipe(pass);
    const release = (): void => {
      req.unpipe(pass);
      pass.destroy();
    };
    if (ex.res !== null) ex.res.once('close', release);
    else ex.onDone(release);
    // A generator-backed stream is not "ended" before it is read, so undici keeps the client's chunked framing.
    ex.body = Readable.from(capped(pass, max), { objectMode: false });
    return next();
  };
}

// What the http.Server path refuses by a request's head alone, before any of its stages runs:
//   - more than MAX_REQUEST_HEADERS header fields, 431. Node's parser keeps only the first `maxHeadersCount` fields
//     in `req.headers` and drops the rest silently, while `req.rawHeaders` (what the app is sent) keeps up to 31
//     more: with Node's default (1,000 fields in `req.headers`, up to 1,023 in `rawHeaders`) a field past the
//     1,000th reached the app unseen by every check that reads `req.headers` (the API key, Content-Length and
//     Transfer-Encoding, Expect). The server is given PARSER_MAX_HEADERS_COUNT, one more than the limit, so a
//     request over it always shows more than the limit in `rawHeaders`, and is refused whole.
//   - two Host headers, or none in HTTP/1.1, 400 (RFC 9112 §3.2).
// The fast paths take at most MAX_FAST_HEADERS (simple-request.ts) and hand larger heads to the server.
import type { IncomingMessage } from 'node:http';
import { HttpModeError } from './errors.ts';

/** Most header fields a request may carry (the count of fields, not of names). */
export const MAX_REQUEST_HEADERS = 1000;

/** The http.Server's maxHeadersCount: one past the limit, so that a request over it is seen to be. */
export const PARSER_MAX_HEADERS_COUNT = MAX_REQUEST_HEADERS + 1;

/** 431 for a request with more header fields than MAX_REQUEST_HEADERS (an Upgrade's too), else null. */
export function tooManyHeaders(req: IncomingMessage): HttpModeError | null {
  if (req.rawHeaders.length <= 2 * MAX_REQUEST_HEADERS) return null;
  return new HttpModeError('HTTP_TOO_MANY_HEADERS', 431, `a request may carry at most ${MAX_REQUEST_HEADERS} header fields`);
}

/** Why a request is refused by its head alone (its header count, its Host count), else null. Changes nothing. */
export function requestHeadRefusal(req: IncomingMessage): HttpModeError | null {
  const tooMany = tooManyHeaders(req);
  if (tooMany !== null) return tooMany;
  const raw = req.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'host') hosts++;
  if (hosts > 1 || (hosts === 0 && req.httpVersionMinor === 1)) return new HttpModeError('HTTP_BAD_REQUEST', 400, `expected one Host header, found ${hosts}`);
  return null;
}

// Stage: API-key auth (`api_key_auth = true`, Evervault's key). Every request must carry an `api-key` header
// whose SHA-256 is one of the configured hashes; otherwise 401 before any stage that touches the app (body
// limit, decryption, forward, upgrade). The header is removed before forwarding. Comparison: the presented
// key is hashed, then compared with every configured hash by timingSafeEqual (no early exit), so neither the
// key's content nor which hash matched changes the time taken. What is hashed is the header value's bytes as
// the client sent them: Node's parsers (and parseSimpleHead) hand a field value over as latin1, one character
// per byte, so it is hashed as latin1 (as UTF-8, each byte past 0x7f became two and a key with non-ASCII
// characters, hashed by `printf %s "$KEY" | sha256sum`, could never match). The transaction log records the refusal
// (`error`: HTTP_API_KEY_MISSING / HTTP_API_KEY_INVALID); the header itself is always masked there.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Stage } from '../exchange.ts';
import { HttpModeError } from '../errors.ts';
import { removeHeader, removeUnderscoreAliases } from '../headers.ts';

export const API_KEY_HEADER = 'api-key';
const ALIASES: ReadonlySet<string> = new Set([API_KEY_HEADER]);

/** SHA-256 hex of a key's UTF-8 bytes, as `[api_key_auth] keys` stores it; a client sends those bytes. */
export function apiKeyHash(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/**
 * The stage's check of a request's headers: null when they carry a configured key, else the 401 to answer. Also
 * run before a request with `Expect: 100-continue` is answered 100 (forwarder.ts), so a client without a valid key
 * is not invited to send its body.
 */
export function apiKeyCheck(configured: readonly string[]): (headers: IncomingHttpHeaders) => HttpModeError | null {
  const hashes = configured.map((h) => {
    if (!/^[0-9a-fA-F]{64}$/.test(h)) throw new HttpModeError('HTTP_BAD_OPTIONS', 500, 'api-key hashes: expected 64 hex digits (SHA-256)');
    return Buffer.from(h, 'hex');
  });
  if (hashes.length === 0) throw new HttpModeError('HTTP_BAD_OPTIONS', 500, 'api-key auth needs at least one key hash');
  return (headers) => {
    const value = headers[API_KEY_HEADER];
    if (value === undefined) return new HttpModeError('HTTP_API_KEY_MISSING', 401, `this enclave requires an ${API_KEY_HEADER} header`);
    // Node joins repeated api-key headers with ", ": such a value never hashes to a configured key.
    const text = Array.isArray(value) ? value.join(', ') : value;
    const presented = createHash('sha256').update(text, 'latin1').digest();
    let ok = 0;
    for (const h of hashes) ok |= timingSafeEqual(presented, h) ? 1 : 0;
    // A character past U+00FF came from no wire parser: refused, not matched by its low byte.
    if (ok === 0 || /[\u0100-\uffff]/.test(text)) return new HttpModeError('HTTP_API_KEY_INVALID', 401, `the ${API_KEY_HEADER} header is not a valid key for this enclave`);
    return null;
  };
}

export function apiKeyStage(opts: { hashes: readonly string[] }): Stage {
  const check = apiKeyCheck(opts.hashes);
  return (ex, next) => {
    const refused = check(ex.req.headers);
    if (refused !== null) return Promise.reject(refused);
    removeHeader(ex.upstreamHeaders, API_KEY_HEADER);
    removeUnderscoreAliases(ex.upstreamHeaders, ALIASES); // headers.ts: `api_key` reads as api-key to a CGI/WSGI app
    return next();
  };
}

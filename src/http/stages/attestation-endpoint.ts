// Stage: `/.well-known/attestation`. Answers `{"attestation_doc": "<base64 COSE_Sign1>"}` with a fresh
// document per request, bound to this session (nonce = the session's handshake hash, via ctx.attest()), so
// an SDK that polls it sees new PCRs after a redeploy. On a TLS ingress connection the document binds the
// served certificate's key, and `?nonce=<base64url>` (1–512 bytes, TLS-INGRESS.md R5) puts the client's own
// nonce in it; a Noise session refuses that (its nonce is the handshake hash). CORS is open by default (`*`):
// the document is public and meant to be fetched from browsers. Every other path goes to the next stage.
import type { Logger } from 'pino';
import type { Exchange, Stage } from '../exchange.ts';
import { errorBody, respond } from '../exchange.ts';
import { toBase64 } from '../../util/bytes.ts';
import type { HttpModeErrorCode } from '../errors.ts';
import { callerNonceRefusal } from '../../attestation/caller-nonce.ts';

export const ATTESTATION_PATH = '/.well-known/attestation';

/** The NSM takes a nonce of at most 512 bytes. */
const MAX_NONCE_BYTES = 512;

/** `?nonce=` of the URL: absent, its bytes, or why it cannot be used. */
function clientNonce(url: string | undefined): { nonce: Uint8Array } | { error: string } | null {
  const q = (url ?? '').indexOf('?');
  if (q < 0) return null;
  const values = new URLSearchParams(url!.slice(q + 1)).getAll('nonce');
  if (values.length === 0) return null;
  if (values.length > 1) return { error: 'nonce: expected one value' };
  // Canonical base64url only (padding optional): Buffer.from would skip characters outside the alphabet, drop a
  // 4n+1th character and ignore non-zero trailing bits, so two spellings would give one nonce.
  const value = values[0]!.replace(/={1,2}$/, '');
  const nonce = new Uint8Array(Buffer.from(value, 'base64url'));
  if (!/^[A-Za-z0-9_-]*$/.test(value) || Buffer.from(nonce).toString('base64url') !== value) return { error: 'nonce: expected base64url' };
  if (nonce.length < 1 || nonce.length > MAX_NONCE_BYTES) return { error: `nonce: expected 1–${MAX_NONCE_BYTES} bytes, found ${nonce.length}` };
  const refused = callerNonceRefusal(nonce);
  return refused === null ? { nonce } : { error: `nonce: ${refused}` };
}

export function pathOf(url: string | undefined): string {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
}

export function attestationEndpointStage(opts: { corsOrigin?: string; logger?: Logger } = {}): Stage {
  const origin = opts.corsOrigin ?? '*';
  const cors = ['Access-Control-Allow-Origin', origin, ...(origin === '*' ? [] : ['Vary', 'Origin'])];
  const serve = async (ex: Exchange): Promise<void> => {
    const method = ex.req.method;
    if (method === 'OPTIONS') {
      const requested = ex.req.headers['access-control-request-headers'];
      respond(ex, 204, [
        ...cors,
        'Access-Control-Allow-Methods',
        'GET, HEAD, OPTIONS',
        'Access-Control-Allow-Headers',
        typeof requested === 'string' && /^[!#$%&'*+.^_`|~0-9A-Za-z, -]*$/.test(requested) ? requested : '*',
        'Access-Control-Max-Age',
        '600',
      ], null);
      return;
    }
    if (method !== 'GET' && method !== 'HEAD') {
      respond(ex, 405, [...cors, 'Allow', 'GET, HEAD, OPTIONS'], errorBody('HTTP_METHOD_NOT_ALLOWED', `expected GET, HEAD or OPTIONS, found ${method ?? '?'}`, ''));
      return;
    }
    const asked = clientNonce(ex.req.url);
    if (asked !== null && 'error' in asked) {
      respond(ex, 400, cors, errorBody('HTTP_BAD_REQUEST', asked.error, ''));
      return;
    }
    if (asked !== null && ex.conn.attestWithNonce === undefined) {
      const why = 'this channel binds its documents to the Noise handshake (nonce = handshake hash): ?nonce= is for TLS ingress';
      respond(ex, 400, cors, errorBody('HTTP_BAD_REQUEST', why, ''));
      return;
    }
    let doc: Uint8Array;
    try {
      doc = asked === null ? await ex.conn.attest() : await ex.conn.attestWithNonce!(asked.nonce);
    } catch (err) {
      if ((err as { code?: string }).code === 'INGRESS_NONCE_RATE_LIMITED') {
        respond(ex, 429, [...cors, 'Retry-After', '1'], errorBody('HTTP_RATE_LIMITED' satisfies HttpModeErrorCode, (err as Error).message, ''));
        return;
      }
      opts.logger?.error({ err: (err as { code?: string }).code ?? String(err), sessionId: ex.conn.sessionId }, 'attestation for /.well-known/attestation failed');
      respond(ex, 503, [...cors, 'Cache-Control', 'no-store'], errorBody('HTTP_ATTESTATION_UNAVAILABLE', 'no attestation document available', ''));
      return;
    }
    respond(ex, 200, [...cors, 'Cache-Control', 'no-store'], JSON.stringify({ attestation_doc: toBase64(doc) }));
  };
  // Every other request passes straight through (no extra async frame on the hot path).
  return (ex, next) => (pathOf(ex.req.url) === ATTESTATION_PATH ? serve(ex) : next());
}

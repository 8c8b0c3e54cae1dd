// The four routes of the local API. Each takes the request body (already capped) and returns a response;
// errors are thrown as ApiError / EvFormatError / EvDecryptError and mapped to statuses by server.ts.
//
//   POST /encrypt          JSON value → same shape, every string/number/boolean value an `ev:` string.
//                          Header `x-evervault-data-role: <role>` adds a data role (QkTC / S0lS);
//                          `enclave-secret` is reserved for [secrets] (400 API_RESERVED_ROLE).
//                          Query `?curve=p256|secp256k1` picks the key (default p256). Numbers keep their
//                          exact digits; null, keys and whitespace are kept. More values than [limits]
//                          max_decrypt_fields → 413 before any is encrypted.
//   POST /decrypt          JSON value → every `ev:` string replaced by its typed value (exact number text).
//                          Strings that are not valid `ev:` values are returned unaltered; the app's
//                          [secrets] values are refused (422) like values that do not decrypt. More values
//                          than [limits] max_decrypt_fields → 413 before any is decrypted (every string
//                          of the form `ev:…$` counts, valid or not; counted in steps on the scheduler).
//                          Both run sliced on the agent's DecryptScheduler; past its global budget
//                          ([limits] max_concurrent_decrypts) → 429 API_BUSY.
//   POST /attestation-doc  {"challenge"?, "nonce"?, "publicKey"?} → raw COSE_Sign1 (application/cbor).
//                          ONE rule: all three are standard base64 (padding optional) of raw bytes
//                          (challenge ≤ 512 bytes, nonce ≤ 512, publicKey ≤ 1024), and NONE is signed
//                          verbatim: user_data / nonce / public_key carry SHA-256("enclave-agent/app/
//                          <field>/v1" ‖ value) (app-fields.ts says why). Without publicKey, public_key is
//                          the keyring's attestationPublicKey() (CBOR {"p256": bstr33, "secp256k1":
//                          bstr33}), so the document binds this enclave's ev: keys. Unknown fields are
//                          refused. An empty body means {}.
//   GET  /health           {"status":"ok","keyIds":{...}}
import type { Nsm } from '../attestation/nsm.ts';
import type { EvCurve } from '../crypto/ev-kdf.ts';
import { JSON_TEXT_POOL_MIN_BYTES, type DecryptScheduler } from '../crypto/decrypt-scheduler.ts';
import { EcdhBudget } from '../crypto/ecdh-budget.ts';
import { EvBudgetError, EvBusyError } from '../crypto/errors.ts';
import { countJsonCandidateSteps, mayHoldCandidates } from '../crypto/json-decrypt.ts';
import { countJsonValues, encryptJsonSteps } from '../crypto/json-encrypt.ts';
import { MAX_DEPTH, nestedWithin } from '../crypto/json-lex.ts';
import type { Keyring } from '../crypto/keyring.ts';
import { SECRET_ROLE } from '../crypto/secret-ciphertexts.ts';
import { fromBase64 } from '../util/bytes.ts';
import { appFieldDigest } from './app-fields.ts';
import { ApiError } from './errors.ts';

export interface RouteContext {
  keyring: Keyring;
  nsm: Nsm;
  /** /encrypt and /decrypt: most ev: values decrypted per request (413 past it) and where the work runs (429 when busy). */
  ev: { maxDecryptFields: number; scheduler: DecryptScheduler };
}

export interface RouteRequest {
  body: Buffer;
  headers: Record<string, string | string[] | undefined>;
  query: URLSearchParams;
}

export interface RouteResponse {
  status: number;
  contentType: string;
  body: string | Uint8Array;
  /** Values encrypted or decrypted (for the log line; never the values themselves). */
  count?: number;
}

export type Route = (ctx: RouteContext, req: RouteRequest) => Promise<RouteResponse> | RouteResponse;

export const MAX_USER_DATA = 512;
export const MAX_NONCE = 512;
export const MAX_PUBLIC_KEY = 1024;

const JSON_TYPE = 'application/json';

/** The body as text, or why it cannot be JSON, by cheap checks (no parse): UTF-8, not empty, nesting. */
function decodedBody(body: Buffer): string {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw new ApiError('API_BAD_JSON', 400, 'request body is not valid UTF-8');
  }
  if (text.trim() === '') throw new ApiError('API_BAD_JSON', 400, 'request body is empty: expected a JSON value');
  // Before JSON.parse, which takes 10–20× longer per byte on deep arrays (json-text.ts): 1 MiB held the loop ~0.5 s.
  if (!nestedWithin(text, MAX_DEPTH)) throw new ApiError('API_BAD_JSON', 400, `request body nests arrays or objects deeper than ${MAX_DEPTH} levels`);
  return text;
}

const notJson = (): ApiError => new ApiError('API_BAD_JSON', 400, 'request body is not valid JSON');

/** The body as JSON text, validated here. */
function jsonText(body: Buffer): string {
  const text = decodedBody(body);
  try {
    JSON.parse(text);
  } catch {
    throw notJson();
  }
  return text;
}

/**
 * jsonText for /encrypt and /decrypt: from JSON_TEXT_POOL_MIN_BYTES up, parsed in the scheduler's worker pool when
 * it has one, as one job of the global budget (429 past it), like the HTTP stage's check. This server runs on
 * the main thread, which relays the session threads' pool jobs: a flat 1 MiB body (the default cap) held it
 * 0.1–0.17 s here, and the cap can be set to 256 MiB.
 */
async function jsonTextOffLoop(body: Buffer, scheduler: DecryptScheduler): Promise<string> {
  if (scheduler.pool === undefined || body.length < JSON_TEXT_POOL_MIN_BYTES) return jsonText(body);
  const text = await scheduled(scheduler.jsonText(body));
  if (text !== null) return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text; // the BOM, as TextDecoder drops it
  decodedBody(body); // the reason, when a cheap check finds it
  throw notJson();
}

function singleHeader(headers: RouteRequest['headers'], name: string): string | undefined {
  const v = headers[name];
  if (Array.isArray(v)) throw new ApiError('API_BAD_INPUT', 400, `header ${name} given ${v.length} times, expected once`);
  return v;
}

/** ev: work on the shared scheduler (sliced, or in its worker pool), refused with 429 past the global budget. */
async function scheduled<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (err) {
    if (err instanceof EvBusyError) throw new ApiError('API_BUSY', 429, err.message, { cause: err });
    throw err;
  }
}

const encrypt: Route = async ({ keyring, ev }, req) => {
  const role = singleHeader(req.headers, 'x-evervault-data-role');
  if (role === SECRET_ROLE) {
    // Reserved for `secrets seal`: values with this role are decrypted for `run` only, never on /decrypt.
    throw new ApiError('API_RESERVED_ROLE', 400, `x-evervault-data-role: ${SECRET_ROLE} is reserved for the app's [secrets] (enclave-agent secrets seal); pick another role`);
  }
  const curveParam = req.query.get('curve') ?? 'p256';
  if (curveParam !== 'p256' && curveParam !== 'secp256k1') {
    throw new ApiError('API_BAD_INPUT', 400, `query parameter curve must be p256 or secp256k1, found ${JSON.stringify(curveParam.slice(0, 32))}`);
  }
  const text = await jsonTextOffLoop(req.body, ev.scheduler);
  // One ECDH, then one AES-GCM and a random IV per value (70–110 µs measured on a loaded 2-core VM): a
  // 1 MiB body of one-digit values is 250,000 of them, ~20 s of CPU. The same cap as /decrypt bounds it; the scheduler slices it.
  const max = ev.maxDecryptFields;
  if (countJsonValues(text, max) > max) {
    throw new ApiError('API_TOO_MANY_ENCRYPTED_FIELDS', 413, `too many values in one request (more than ${max}, [limits] max_decrypt_fields); nothing was encrypted`);
  }
  const out = await scheduled(ev.scheduler.run(encryptJsonSteps(text, keyring, { curve: curveParam as EvCurve, ...(role !== undefined && role !== '' ? { role } : {}) })));
  return { status: 200, contentType: JSON_TYPE, body: out.json, count: out.count };
};

const decrypt: Route = async ({ keyring, ev }, req) => {
  const text = await jsonTextOffLoop(req.body, ev.scheduler);
  // Counted before the first ECDH (up to ~4 ms per value under its own key): past the cap, nothing is decrypted.
  // Every string that looks like a value counts, valid or not (a body of near-tokens costs no more than one of
  // values), and the count runs in steps on the scheduler: a 4 MiB body of near-tokens held the loop 2.6–3.7 s.
  const max = ev.maxDecryptFields;
  const count = mayHoldCandidates(text) ? await scheduled(ev.scheduler.run(countJsonCandidateSteps(text, max))) : 0;
  if (count > max) {
    throw new ApiError('API_TOO_MANY_ENCRYPTED_FIELDS', 413, `too many ev: values in one request (more than ${max}, [limits] max_decrypt_fields); nothing was decrypted`);
  }
  // No candidate, nothing to decrypt: the request takes no budget slot beyond its count.
  // The same cap bounds the ECDHs (after `keys rotate` a value under a retired key costs one per generation tried).
  let out: { json: string; count: number };
  try {
    out = count === 0 ? { json: text, count: 0 } : await scheduled(ev.scheduler.decryptJson(text, keyring, new EcdhBudget(max)));
  } catch (err) {
    if (err instanceof EvBudgetError) throw new ApiError('API_TOO_MANY_ENCRYPTED_FIELDS', 413, `the ev: values in this request need more than ${max} key agreements to decrypt ([limits] max_decrypt_fields); nothing was decrypted`);
    throw err;
  }
  return { status: 200, contentType: JSON_TYPE, body: out.json, count: out.count };
};

function base64Field(obj: Record<string, unknown>, name: string, max: number): Uint8Array | undefined {
  const v = obj[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ApiError('API_BAD_INPUT', 400, `${name} must be a base64 string, found ${Array.isArray(v) ? 'array' : typeof v}`);
  let bytes: Uint8Array;
  try {
    bytes = fromBase64(v);
  } catch {
    throw new ApiError('API_BAD_INPUT', 400, `${name} must be standard base64`);
  }
  if (bytes.length > max) throw new ApiError('API_BAD_INPUT', 400, `${name} is ${bytes.length} bytes, at most ${max} allowed`);
  return bytes;
}

const ATTESTATION_FIELDS = new Set(['challenge', 'nonce', 'publicKey']);

/**
 * The largest /attestation-doc body taken: its three fields at their largest are under 3 KB of JSON. Its body is
 * parsed here, on the main thread, and [api] max_body_bytes (1 MiB by default, up to 256 MiB) is sized for /decrypt.
 */
export const MAX_ATTESTATION_BODY = 16 * 1024;

const attestationDoc: Route = async ({ keyring, nsm }, req) => {
  if (req.body.length > MAX_ATTESTATION_BODY) {
    throw new ApiError('API_BODY_TOO_LARGE', 413, `an /attestation-doc body is at most ${MAX_ATTESTATION_BODY} bytes (three base64 fields)`);
  }
  const body: unknown = req.body.length === 0 ? {} : JSON.parse(jsonText(req.body));
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ApiError('API_BAD_INPUT', 400, 'expected a JSON object {challenge?, nonce?, publicKey?}');
  const obj = body as Record<string, unknown>;
  const unknown = Object.keys(obj).filter((k) => !ATTESTATION_FIELDS.has(k));
  if (unknown.length > 0) throw new ApiError('API_BAD_INPUT', 400, `unknown field ${JSON.stringify(unknown[0]!.slice(0, 32))}: expected challenge, nonce, publicKey`);
  const challenge = base64Field(obj, 'challenge', MAX_USER_DATA);
  const nonce = base64Field(obj, 'nonce', MAX_NONCE);
  const publicKey = base64Field(obj, 'publicKey', MAX_PUBLIC_KEY);
  const request = {
    userData: challenge === undefined ? null : appFieldDigest('user_data', challenge),
    nonce: nonce === undefined ? null : appFieldDigest('nonce', nonce),
    publicKey: publicKey === undefined ? keyring.attestationPublicKey() : appFieldDigest('public_key', publicKey),
  };
  let doc: Uint8Array;
  try {
    doc = await nsm.attest(request);
  } catch (err) {
    throw new ApiError('API_ATTESTATION_FAILED', 500, 'the NSM did not produce an attestation document', { cause: err });
  }
  return { status: 200, contentType: 'application/cbor', body: doc };
};

const health: Route = ({ keyring }) => ({ status: 200, contentType: JSON_TYPE, body: JSON.stringify({ status: 'ok', keyIds: keyring.keyIds }) });

/** path → method → handler */
export const ROUTES: Record<string, Record<string, Route>> = {
  '/encrypt': { POST: encrypt },
  '/decrypt': { POST: decrypt },
  '/attestation-doc': { POST: attestationDoc },
  '/health': { GET: health },
};


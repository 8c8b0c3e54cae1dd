// The decrypt stage of HTTP mode (ENCRYPTION.md §3): `ev:` values in request header values and JSON
// request bodies are decrypted inside the enclave before the request reaches the app.
//
// Headers: every header going to the app except `Host`, `Content-Type` and `Content-Encoding` (read before any
// decryption) is scanned (hop-by-hop fields are already gone); each token in a value is replaced by its
// decrypted text. Duplicate fields stay separate fields, in order.
//
// Bodies: only JSON is touched, recognised by its Content-Type — `application/json` or
// `application/<anything>+json`, parameters allowed. The body is buffered (up to the cap, 413 past it),
// every JSON string that is a whole `ev:` value is replaced by the decrypted value as a typed JSON value
// (`123`, `true`, `"text"`), and the result is forwarded with its new Content-Length (a chunked request
// leaves as a Content-Length one). A body without any `ev:` is forwarded byte for byte.
// Everything else is never read here: the stage returns without touching the stream, so non-JSON bodies of
// any size flow to the app untouched and unbuffered. Also passed through untouched, by design:
//   - a JSON media type with a `charset` other than UTF-8 (JSON is UTF-8, RFC 8259 §8.1; rewriting another
//     encoding would need transcoding we do not do), and a Content-Encoding other than `identity`
//     (a compressed body cannot be scanned without inflating it);
//   - form bodies, text, NDJSON and every other media type — no content-type-blind scanning (Evervault's
//     quirk of JSON-quoting tokens found in form bodies is not copied).
//
// Refusals (nothing is forwarded; the message names where, never a value):
//   - 422 HTTP_DECRYPT_FAILED: a grammatically valid token that does not decrypt (another key, tampered,
//     truncated ciphertext), or a header whose decrypted text cannot be a header value (CR/LF, controls).
//   - 400 HTTP_BAD_REQUEST: a body declared JSON that is not valid JSON (or not UTF-8, or nested deeper than
//     MAX_DEPTH = 512 arrays/objects: json-text.ts says why) AND holds a valid token. Why not "forward
//     unchanged" or "decrypt anyway": forwarding would hand the app ciphertext it cannot read, silently;
//     decrypting a document we cannot parse means guessing where its strings are.
//     A not-quite-JSON body with no token in it (empty body, trailing garbage, JSON5-ish text) is still
//     forwarded byte for byte, so such apps keep working; only the ambiguous case is refused, loudly.
//   - 400 HTTP_BAD_REQUEST: several Content-Type fields on a request with a body (the agent and the app
//     could disagree on whether it is JSON).
//   - 413 HTTP_TOO_MANY_ENCRYPTED_FIELDS: more than `maxFields` values (headers and body together; default
//     1024, enclave.toml [limits] max_decrypt_fields) in one request. In a body every string value (not key) of the form
//     `ev:…$` counts, valid or not: a body of near-tokens ("ev:Tk9D:A:A:A:$") costs no more than one of values. The same number caps the ECDHs the request may cost
//     (after `keys rotate`, a value under a retired key costs one per key generation tried): past it, 413 too. Each value with its own ephemeral key
//     costs an ECDH (~1 ms P-256, ~4 ms secp256k1), so an 8 MiB body of distinct-key values would burn
//     minutes of CPU. The values are counted first (no ECDH) and the request is refused before any of them is
//     decrypted (headers are counted before the body is read, the body before anything is decrypted).
//   - 503 HTTP_DECRYPT_BUSY: the agent's global budget of requests decrypting at once ([limits]
//     max_concurrent_decrypts, shared with the local API) is spent; nothing was decrypted or forwarded.
//   The client-visible text of a 422 names only where (body, header name): every cause gets the same words
//   (telling them apart is an oracle on the plaintext); the operator log counts the reasons, one line per 10 s.
// Decryption runs on a DecryptScheduler: header values one per step, in slices, so a request of many values
// never holds the event loop for more than a few milliseconds at a time; a body likewise, or in the
// scheduler's worker pool when it has one (the runtime gives it one). Scanning a body runs there too, in
// steps of a few hundred strings (counting candidates; searching a not-JSON body for a token): an 8 MiB body
// of near-tokens once held the loop for 6–7 s in one synchronous count. Steps rather than the pool, because
// the same steps serve every scheduler (the local API's and the tests' have no pool), the count stays a
// refusal before any body is handed to a worker, and the scan shares the one slice per turn of all ev: work.
// So counting takes a slot of the global budget: a body with a string starting "ev:" (one native search
// finds out) may be answered 503 while the budget is spent; one without never waits for a slot. Such a
// body's check that it is UTF-8 JSON at all (a strict decode and a JSON.parse) is a pool job of the budget
// too from JSON_TEXT_POOL_MIN_BYTES (64 KiB) up, when there is a pool: 8 MiB held the loop 190–360 ms.
// Strings that look like tokens but fail the grammar are left as they are, in headers and bodies.
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { DEFAULT_MAX_DECRYPT_FIELDS, DecryptScheduler } from '../../crypto/decrypt-scheduler.ts';
import { EcdhBudget } from '../../crypto/ecdh-budget.ts';
import { EvBudgetError, EvBusyError, EvDecryptError } from '../../crypto/errors.ts';
import { isEvToken } from '../../crypto/ev-parse.ts';
import { countHeaderTokens, countJsonCandidateSteps, decryptHeaderValueSteps, mayHoldCandidates } from '../../crypto/json-decrypt.ts';
import { MAX_DEPTH } from '../../crypto/json-lex.ts';
import type { Keyring } from '../../crypto/keyring.ts';
import { HttpModeError } from '../errors.ts';
import { getHeaders } from '../headers.ts';
import type { DecryptInput, DecryptOutput, DecryptStage } from './decrypt.ts';
import { readBodyCapped } from './decrypt.ts';
import { BufferBody } from '../simple-request.ts';
import { RateLimitedLog } from '../../util/rate-limited-log.ts';

export { DEFAULT_MAX_DECRYPT_FIELDS };

/** The bytes in were counted when the original body was read: the buffer handed on counts nothing again. */
const counted = (): void => {};

export interface DecryptStageOptions {
  /** Cap for buffered JSON bodies; default: the pipeline's `maxBufferedBodyBytes`. Over it → 413. */
  maxBufferedBodyBytes?: number;
  /** Most `ev:` values decrypted for one request, headers and body together. Default 1024. Over it → 413. */
  maxFields?: number;
  /** Where decryption runs, and the global budget (share one with the local API). Default: the stage's own. */
  scheduler?: DecryptScheduler;
  /** Operator log: why values were refused (never a value), counted in one line per 10 s; the last counts at close(). */
  logger?: Logger;
  /** Where refusals are counted instead (tests choose its interval); default one on `logger`. */
  refusalLog?: RateLimitedLog;
}

/** How a request body is treated, from its Content-Type / Content-Encoding. */
export type BodyKind = 'json' | 'passthrough';

/**
 * `json` for `application/json` / `application/*+json` (any parameters) whose charset, if given, is UTF-8;
 * `passthrough` for everything else, a missing or malformed Content-Type included.
 */
export function bodyKind(contentType: string | undefined, contentEncoding?: string): BodyKind {
  if (contentType === undefined) return 'passthrough';
  if (contentEncoding !== undefined && contentEncoding.trim().toLowerCase() !== 'identity' && contentEncoding.trim() !== '') return 'passthrough';
  const [essence = '', ...params] = contentType.split(';');
  const m = /^([a-z0-9!#$%&'*+.^_`|~-]+)\/([a-z0-9!#$%&'*+.^_`|~-]+)$/.exec(essence.trim().toLowerCase());
  if (m === null || m[1] !== 'application' || !(m[2] === 'json' || m[2]!.endsWith('+json'))) return 'passthrough';
  for (const p of params) {
    const eq = p.indexOf('=');
    if (eq < 0 || p.slice(0, eq).trim().toLowerCase() !== 'charset') continue;
    let v = p.slice(eq + 1).trim();
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    v = v.toLowerCase();
    if (v !== 'utf-8' && v !== 'utf8') return 'passthrough';
  }
  return 'json';
}

/** Characters a token (or its JSON-escaped form, `\/`) is made of, `$` excepted. */
function tokenChar(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x3a) || c === 0x2b || c === 0x2f || c === 0x3d || c === 0x5c;
}

/** `:$` ends one holdsTokenSteps step examines at most (each: a walk back over ≤ 7 colons and ≤ 7 parses). */
export const HOLDS_STEP_ENDS = 64;
/**
 * Characters one holdsTokenSteps step walks back over at most: a walk crosses any run of token characters,
 * and one `:$` after an 8 MiB run once held the loop 46–80 ms in a single step.
 */
export const HOLDS_STEP_CHARS = 64 * 1024;

/**
 * The longest candidate checked by parsing it (a parse is O(length), with `\/` unescaped first). A longer one
 * counts as a token, so its body is refused, never forwarded: an 8 MiB candidate (`ev:` × 7, then `\/` × 4 M,
 * then `:$`) once cost 5.3 s in one step. A real ev: value this long in a body that is not JSON is not worth
 * telling apart.
 */
export const HOLDS_MAX_CANDIDATE_CHARS = 16 * 1024;
/** Colons between a token's `ev` and its end `:$`: ev:V:IV:KEY:CT is 4, a type or `debug:` adds one each. */
const TOKEN_COLONS_MIN = 4;

/**
 * Whether `text` holds a grammatically valid token anywhere (for bodies we could not parse), as steps of
 * HOLDS_STEP_ENDS token ends or HOLDS_STEP_CHARS characters searched or walked, whichever comes first, run on the
 * DecryptScheduler. Linear: a token ends at `:$`, and from each end the start can only be one of the few
 * `ev:` among the last seven colons before it (ev, debug, version, type, IV, key, ciphertext), reached
 * without leaving token characters (`$` is not one: walks never overlap). Candidates are checked without exceptions.
 */
export function* holdsTokenSteps(text: string): Generator<void, boolean, void> {
  let ends = 0;
  let walked = 0;
  /** Counts `n` characters searched or walked; true when the step is over. */
  const spent = (n: number): boolean => {
    walked += n;
    if (walked < HOLDS_STEP_CHARS) return false;
    walked = 0;
    ends = 0;
    return true;
  };
  let from = 0;
  for (;;) {
    // The next `:$`, searched in windows that count as walked: one indexOf over the rest of an 8 MiB body of
    // colons was ~50 ms in one step.
    let end = -1;
    while (end < 0 && from < text.length - 1) {
      const stop = Math.min(text.length, from + HOLDS_STEP_CHARS + 1);
      const hit = text.slice(from, stop).indexOf(':$');
      if (hit >= 0) end = from + hit;
      const searched = hit >= 0 ? hit + 2 : stop - 1 - from;
      from = hit >= 0 ? end + 2 : stop - 1; // a `:$` across the window's edge is in the next one
      if (spent(searched)) yield;
    }
    if (end < 0) return false;
    let colons = 0;
    for (let i = end - 1; i >= 2 && colons < 7; i--) {
      const c = text.charCodeAt(i);
      if (!tokenChar(c)) break;
      if (spent(1)) yield;
      if (c !== 0x3a) continue;
      colons++;
      if (colons < TOKEN_COLONS_MIN || text.charCodeAt(i - 1) !== 0x76 /* v */ || text.charCodeAt(i - 2) !== 0x65 /* e */) continue;
      if (end + 2 - (i - 2) > HOLDS_MAX_CANDIDATE_CHARS) return true;
      if (isEvToken(text.slice(i - 2, end + 2).replaceAll('\\/', '/'))) return true;
    }
    if (++ends === HOLDS_STEP_ENDS) {
      ends = 0;
      walked = 0;
      yield;
    }
  }
}

/** The line the operator log counts refused values in. */
export const REFUSALS_MESSAGE = 'ev: values refused (HTTP requests; counts by reason)';

/**
 * The 422 for a refused value. The operator log counts it by reason, body or header, and detail (version, curve,
 * key id: a bounded set) in one line per interval (RateLimitedLog): any client can send a refused value per
 * request for the price of one ECDH, and a line per request (each naming a header the client chose) let it flood
 * the log. The request's transaction record keeps its code and request id.
 */
function refused(where: string, err: EvDecryptError, log: RateLimitedLog | undefined): HttpModeError {
  log?.note(`${err.reason} (${where === 'request body' ? 'body' : 'header'}, ${err.detail})`);
  // err.message is the same for every reason; `where` is what the client sent (body, a header name).
  return new HttpModeError('HTTP_DECRYPT_FAILED', 422, `${where}: ${err.message}`, { cause: err });
}

function tooManyFields(max: number): HttpModeError {
  return new HttpModeError(
    'HTTP_TOO_MANY_ENCRYPTED_FIELDS',
    413,
    `too many encrypted fields in one request (more than ${max}, the most the agent decrypts per request); nothing was forwarded`,
  );
}

/**
 * Headers whose values are never decrypted: the ones the agent reads before anything is decrypted (Host: the
 * request's target; Content-Type, Content-Encoding: whether the body is JSON to scan). A decrypted Content-Type
 * showed the app a JSON body whose values the agent had passed through as ciphertext.
 */
const READ_BEFORE_DECRYPTION = new Set(['host', 'content-type', 'content-encoding']);

/** Header values holding tokens, counted without decrypting (READ_BEFORE_DECRYPTION excepted, as in headerSteps). */
function countHeaders(headers: string[]): number {
  let count = 0;
  for (let i = 0; i < headers.length; i += 2) {
    const value = headers[i + 1]!;
    if (value.indexOf('ev:') < 0 || READ_BEFORE_DECRYPTION.has(headers[i]!.toLowerCase())) continue;
    count += countHeaderTokens(value);
  }
  return count;
}

/** A refusal that says where the failing value was (header name or body), as the stage throws it. */
class Located {
  constructor(
    readonly where: string,
    readonly err: EvDecryptError,
  ) {}
}

/** Decrypts header values in place, one value per step; returns how many tokens were replaced. */
function* headerSteps(headers: string[], keyring: Keyring, budget: EcdhBudget): Generator<void, number, void> {
  let count = 0;
  for (let i = 0; i < headers.length; i += 2) {
    const value = headers[i + 1]!;
    if (value.indexOf('ev:') < 0) continue;
    const name = headers[i]!;
    if (READ_BEFORE_DECRYPTION.has(name.toLowerCase())) continue;
    try {
      const out = yield* decryptHeaderValueSteps(value, keyring, budget);
      if (out.count > 0) {
        headers[i + 1] = out.value;
        count += out.count;
      }
    } catch (err) {
      if (err instanceof EvDecryptError) throw new Located(`request header ${name}`, err);
      throw err;
    }
  }
  return count;
}

/** ev: work on the scheduler: past its global budget, 503 and nothing forwarded. */
async function scheduled<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (err) {
    if (err instanceof EvBusyError) throw new HttpModeError('HTTP_DECRYPT_BUSY', 503, `${err.message}; nothing was forwarded`, { cause: err });
    throw err;
  }
}

/**
 * The request's body bytes and its JSON text when it holds ev: values to decrypt (null: forward as is). The
 * search of a body that is not JSON runs in steps on the scheduler (holdsTokenSteps).
 */
async function readJsonBody(input: DecryptInput & { body: Readable }, cap: number, scheduler: DecryptScheduler): Promise<{ raw: Buffer; text: string | null }> {
  const raw = await readBodyCapped(input.body, cap, input.contentLength, input.holder);
  if (raw.indexOf('ev:') < 0) return { raw, text: null };
  // Is it UTF-8 JSON: a strict decode and a JSON.parse of the whole body (8 MiB: 190–360 ms), in the pool
  // when the scheduler has one and the body is large (one job of the budget: 503 past it), else here.
  const text = await scheduled(scheduler.jsonText(raw));
  if (text === null) {
    // Not JSON (or not UTF-8) despite its Content-Type. Harmless without tokens; refused with them.
    if (await scheduled(scheduler.run(holdsTokenSteps(raw.toString('latin1'))))) {
      throw new HttpModeError(
        'HTTP_BAD_REQUEST',
        400,
        `request body: Content-Type says JSON but the body is not valid UTF-8 JSON nested at most ${MAX_DEPTH} levels deep, and it holds ev: values; the agent decrypts ev: values only in such JSON and does not forward them undecrypted`,
      );
    }
    return { raw, text: null };
  }
  return { raw, text };
}

/**
 * The HTTP pipeline's decrypt stage for `keyring` (pass it as `decrypt` to createHttpForwarder).
 * Returns null (request untouched, body not read) when there is nothing to do.
 */
export function createDecryptStage(keyring: Keyring, opts: DecryptStageOptions = {}): DecryptStage {
  const own = opts.maxBufferedBodyBytes;
  if (own !== undefined && (!Number.isSafeInteger(own) || own < 0)) {
    throw new HttpModeError('HTTP_BAD_OPTIONS', 500, `maxBufferedBodyBytes: expected a non-negative integer, found ${String(own)}`);
  }
  const maxFields = opts.maxFields ?? DEFAULT_MAX_DECRYPT_FIELDS;
  if (!Number.isSafeInteger(maxFields) || maxFields < 1) {
    throw new HttpModeError('HTTP_BAD_OPTIONS', 500, `maxFields: expected a positive integer, found ${String(opts.maxFields)}`);
  }
  const scheduler = opts.scheduler ?? new DecryptScheduler();
  const refusals = opts.refusalLog ?? (opts.logger === undefined ? undefined : new RateLimitedLog(opts.logger, REFUSALS_MESSAGE));

  /** Counts (413 before any ECDH), then decrypts the headers (sliced here) and the body (scheduler.decryptJson). */
  const decryptRequest = async (input: DecryptInput, headerCount: number, body: (DecryptInput & { body: Readable }) | null): Promise<DecryptOutput | null> => {
    let raw: Buffer | null = null;
    let text: string | null = null;
    if (body !== null) {
      ({ raw, text } = await readJsonBody(body, own ?? input.maxBufferedBodyBytes, scheduler));
      const left = maxFields - headerCount;
      // Every string that looks like a value counts, valid or not: a body of near-tokens costs no more than one
      // of values. Counted in steps on the scheduler (a few hundred strings per step), before any ECDH.
      // A body with no string starting "ev:" is settled by one native search and takes no budget slot.
      const count = text === null || !mayHoldCandidates(text) ? 0 : await scheduled(scheduler.run(countJsonCandidateSteps(text, left)));
      if (count > left) throw tooManyFields(maxFields);
      if (count === 0) text = null; // "ev:" in some string, no candidate: nothing to decrypt
    }
    const out: { headers: number; body: { json: string; count: number } | null } = { headers: 0, body: null };
    // ECDHs, headers and body together: after `keys rotate` a value may cost one per key generation tried.
    const budget = new EcdhBudget(maxFields);
    try {
      if (headerCount > 0) out.headers = await scheduled(scheduler.run(headerSteps(input.headers, keyring, budget)));
      // The body: in the scheduler's worker pool when it has one, else sliced on this event loop.
      if (text !== null) out.body = await scheduled(scheduler.decryptJson(text, keyring, budget));
    } catch (err) {
      if (err instanceof EvBudgetError) throw tooManyFields(maxFields);
      if (err instanceof Located) throw refused(err.where, err.err, refusals);
      if (err instanceof EvDecryptError) throw refused('request body', err, refusals);
      throw err;
    }
    const bodyCount = out.body?.count ?? 0;
    if (raw === null) return out.headers === 0 ? null : { body: input.body, contentLength: input.contentLength, decryptedFields: out.headers };
    // The body goes on as a buffer in memory: a fast-path request then reaches the app through the lean client.
    const bytes = bodyCount === 0 ? raw : Buffer.from(out.body!.json, 'utf8');
    return { body: new BufferBody(bytes, counted), contentLength: bytes.length, decryptedFields: out.headers + bodyCount };
  };

  const stage = (input: DecryptInput): DecryptOutput | null | Promise<DecryptOutput | null> => {
    const headerCount = countHeaders(input.headers);
    if (headerCount > maxFields) throw tooManyFields(maxFields);
    const body = input.body;
    let kind: BodyKind = 'passthrough';
    if (body !== null) {
      const types = getHeaders(input.headers, 'content-type');
      if (types.length > 1) throw new HttpModeError('HTTP_BAD_REQUEST', 400, `expected at most one Content-Type header on a request with a body, found ${types.length}`);
      kind = bodyKind(types[0], getHeaders(input.headers, 'content-encoding').join(','));
    }
    const json = body !== null && kind === 'json';
    // Synchronous when there is nothing to decrypt and no body to read: the body stream flows on as it came.
    if (headerCount === 0 && !json) return null;
    return decryptRequest(input, headerCount, json ? { ...input, body } : null);
  };
  // The refusal counts' timer is unref'd: a stopping thread or process would drop the last interval's.
  return Object.assign(stage, { close: () => refusals?.flush() });
}

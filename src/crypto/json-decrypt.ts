// Decrypting `ev:` values inside request bodies, header values and decoded JSON (ENCRYPTION.md §3).
//
// decryptJsonTokens scans the JSON text lexically (no parse, no re-serialisation): every JSON string
// whose content is a valid `ev:` value is replaced by the decrypted value as a typed JSON value —
// `123` (the exact decrypted number text), `true`, `"text"` (JSON-escaped). A token used as an object
// key becomes a JSON string whatever its type, so the output stays valid JSON. Strings that look like
// tokens but fail the grammar (or carry an unsupported version) pass through unchanged; a valid token
// that does not decrypt throws EvDecryptError (the HTTP pipeline answers 422 and does not forward).
import { drain } from './steps.ts';
import { EvDecryptError, EvFormatError } from './errors.ts';
import { decryptTokenDetailed, parseEv } from './ev-format.ts';
import type { EvToken, EvValue } from './ev-format.ts';
import { looksLikeEv } from './ev-parse.ts';
import { MAX_DEPTH, followedByColon, stringEnd } from './json-lex.ts';
import type { EcdhBudget } from './ecdh-budget.ts';
import type { Keyring } from './keyring.ts';

export { walkEncrypt, encryptJsonText, encryptJsonSteps } from './json-encrypt.ts';

/** Parses `s` as a token, or null when it is not one (never throws for grammar problems). */
function tokenOrNull(s: string): EvToken | null {
  if (!looksLikeEv(s)) return null;
  try {
    return parseEv(s);
  } catch (err) {
    if (err instanceof EvFormatError) return null;
    throw err;
  }
}

/** The next JSON string at or after `from` whose content is a valid token: its quotes and the token. */
function nextJsonToken(json: string, from: number): { q: number; e: number; token: EvToken } | null {
  for (let i = from; ; ) {
    const q = json.indexOf('"', i);
    if (q < 0) return null;
    const e = stringEnd(json, q);
    if (e < 0) return null;
    i = e + 1;
    // Quick reject before any allocation: content must start with ev: and end with :$
    if (e - q < 10 || json.charCodeAt(q + 1) !== 0x65 /* e */ || json.charCodeAt(q + 2) !== 0x76 || json.charCodeAt(q + 3) !== 0x3a || json.charCodeAt(e - 1) !== 0x24 /* $ */) continue;
    let content = json.slice(q + 1, e);
    if (content.includes('\\')) {
      // e.g. PHP writes "\/" inside base64; decode the JSON string first.
      try {
        content = JSON.parse(json.slice(q, e + 1)) as string;
      } catch {
        continue;
      }
    }
    const token = tokenOrNull(content);
    if (token) return { q, e, token };
  }
}

/**
 * decryptJsonTokens as steps: each next() decrypts one value (at most one ECDH), so a scheduler can run a
 * body of many values in slices (DecryptScheduler). The generator's return value is decryptJsonTokens'.
 * `budget` caps the ECDHs (ecdh-budget.ts: a value under a retired key costs one per generation tried).
 */
export function* decryptJsonSteps(json: string, keyring: Keyring, budget?: EcdhBudget): Generator<void, { json: string; count: number }, void> {
  if (json.indexOf('ev:') < 0) return { json, count: 0 };
  const out: string[] = [];
  let last = 0;
  let count = 0;
  for (let found = nextJsonToken(json, 0); found !== null; found = nextJsonToken(json, found.e + 1)) {
    const { q, e, token } = found;
    const d = decryptTokenDetailed(token, keyring, budget);
    const replacement = d.type === 'string' || followedByColon(json, e + 1) ? JSON.stringify(d.text) : d.text;
    out.push(json.slice(last, q), replacement);
    last = e + 1;
    count++;
    yield;
  }
  if (count === 0) return { json, count: 0 };
  out.push(json.slice(last));
  return { json: out.join(''), count };
}

export function decryptJsonTokens(json: string, keyring: Keyring, budget?: EcdhBudget): { json: string; count: number } {
  return drain(decryptJsonSteps(json, keyring, budget));
}

/**
 * How many values decryptJsonTokens(json) would decrypt, without decrypting anything (no ECDH: a lexical
 * scan and a parse of each candidate, a few µs each). Stops once the count exceeds `stopAfter`.
 */
export function countJsonTokens(json: string, stopAfter = Infinity): number {
  if (json.indexOf('ev:') < 0) return 0;
  let count = 0;
  for (let found = nextJsonToken(json, 0); found !== null && count <= stopAfter; found = nextJsonToken(json, found.e + 1)) count++;
  return count;
}

// A token anywhere in a header value (e.g. "Bearer ev:Tk9D:…:$"); candidates are then checked by parseEv.
const HEADER_TOKEN = /ev:(?:debug:)?[A-Za-z0-9+/]{4}:(?:(?:number|boolean):)?[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:\$/g;
// RFC 9110 field-value characters: HTAB, SP, VCHAR, obs-text. No CR, LF, NUL or other controls.
const HEADER_SAFE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** How many values decryptHeaderValue(value) would decrypt, without decrypting anything. */
export function countHeaderTokens(value: string): number {
  if (value.indexOf('ev:') < 0) return 0;
  let count = 0;
  for (const m of value.matchAll(HEADER_TOKEN)) if (tokenOrNull(m[0]) !== null) count++;
  return count;
}

/**
 * Replaces each `ev:` token in a header value by its decrypted text. Throws EvDecryptError when a token
 * does not decrypt, or (reason UNSAFE_HEADER_VALUE) when the decrypted text holds characters a header
 * value cannot carry (CR/LF/NUL/controls or characters above U+00FF) — header injection is refused.
 * As steps: each next() decrypts one value.
 */
export function* decryptHeaderValueSteps(value: string, keyring: Keyring, budget?: EcdhBudget): Generator<void, { value: string; count: number }, void> {
  if (value.indexOf('ev:') < 0) return { value, count: 0 };
  const parts: string[] = [];
  let last = 0;
  let count = 0;
  for (const m of value.matchAll(HEADER_TOKEN)) {
    const token = tokenOrNull(m[0]);
    if (!token) continue;
    const { text } = decryptTokenDetailed(token, keyring, budget);
    if (!HEADER_SAFE.test(text)) throw new EvDecryptError('UNSAFE_HEADER_VALUE', `${token.version} value in a header`);
    parts.push(value.slice(last, m.index), text);
    last = m.index + m[0].length;
    count++;
    yield;
  }
  if (count === 0) return { value, count: 0 };
  parts.push(value.slice(last));
  return { value: parts.join(''), count };
}

export function decryptHeaderValue(value: string, keyring: Keyring, budget?: EcdhBudget): { value: string; count: number } {
  return drain(decryptHeaderValueSteps(value, keyring, budget));
}

/**
 * Decoded-JSON walk: every string that is a valid `ev:` value is replaced by its decrypted typed value
 * (numbers become JS numbers — use decryptJsonTokens on the text to keep exact digits); everything else
 * is returned unchanged. Object keys are left as they are. Arrays/objects are copied, not mutated.
 */
export function walkDecrypt(value: unknown, keyring: Keyring): unknown {
  return walk(value, keyring, 0);
}

function walk(value: unknown, keyring: Keyring, depth: number): unknown {
  if (typeof value === 'string') {
    const token = tokenOrNull(value);
    return token ? (decryptTokenDetailed(token, keyring).value as EvValue) : value;
  }
  if (value === null || typeof value !== 'object') return value;
  if (depth >= MAX_DEPTH) throw new EvFormatError('EV_BAD_VALUE', `value nested deeper than ${MAX_DEPTH} levels`);
  if (Array.isArray(value)) return value.map((v) => walk(v, keyring, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v, keyring, depth + 1)]));
}

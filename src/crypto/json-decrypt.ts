// Decrypting `ev:` values inside request bodies, header values and decoded JSON (ENCRYPTION.md §3).
//
// decryptJsonTokens scans the JSON text lexically (no parse, no re-serialisation): every JSON string value
// whose content is a valid `ev:` value is replaced by the decrypted value as a typed JSON value —
// `123` (the exact decrypted number text), `true`, `"text"` (JSON-escaped). Object keys are left as they
// are, tokens included (ENCRYPTION.md §3 decrypts values; a key is structure, and a decrypted one would reach
// the app's route tables and logs). Strings that look like tokens but fail the grammar (or carry an
// unsupported version) pass through unchanged; a valid token that does not decrypt throws EvDecryptError
// (the HTTP pipeline answers 422 and does not forward).
import { drain } from './steps.ts';
import { EvDecryptError, EvFormatError } from './errors.ts';
import { decryptTokenDetailed } from './ev-format.ts';
import type { EvValue } from './ev-format.ts';
import { tryParseEv } from './ev-parse.ts';
import { MAX_DEPTH } from './json-lex.ts';
import { JsonStrings, SCAN_STEP_STRINGS } from './json-scan.ts';
import type { EcdhBudget } from './ecdh-budget.ts';
import type { Keyring } from './keyring.ts';

export { walkEncrypt, encryptJsonText, encryptJsonSteps } from './json-encrypt.ts';
export { countJsonCandidateSteps, mayHoldCandidates } from './json-scan.ts';

/**
 * decryptJsonTokens as steps: each next() decrypts at most one value (at most one ECDH per key generation)
 * and examines at most SCAN_STEP_STRINGS strings, so a scheduler can run a body of many values — or of many
 * strings that only look like values — in slices (DecryptScheduler). The generator's return value is
 * decryptJsonTokens'. `budget` caps the ECDHs (ecdh-budget.ts: a value under a retired key costs one per generation tried).
 */
export function* decryptJsonSteps(json: string, keyring: Keyring, budget?: EcdhBudget): Generator<void, { json: string; count: number }, void> {
  if (json.indexOf('ev:') < 0) return { json, count: 0 };
  const out: string[] = [];
  let last = 0;
  let count = 0;
  const s = new JsonStrings(json);
  for (let seen = 1; s.next(); seen++) {
    const token = s.valueToken();
    if (token !== null) {
      const { q, e } = s;
      const d = decryptTokenDetailed(token, keyring, budget);
      const replacement = d.type === 'string' ? JSON.stringify(d.text) : d.text;
      out.push(json.slice(last, q), replacement);
      last = e + 1;
      count++;
      yield;
    } else if (seen % SCAN_STEP_STRINGS === 0) {
      yield;
    }
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
 * scan and a parse of each candidate, never an exception). Stops once the count exceeds `stopAfter`. Runs in
 * one go: request paths count candidates in steps instead (countJsonCandidateSteps).
 */
export function countJsonTokens(json: string, stopAfter = Infinity): number {
  if (json.indexOf('ev:') < 0) return 0;
  const s = new JsonStrings(json);
  let count = 0;
  while (count <= stopAfter && s.next()) if (s.valueToken() !== null) count++;
  return count;
}

// A token anywhere in a header value (e.g. "Bearer ev:Tk9D:…:$"); candidates are then checked by tryParseEv.
const HEADER_TOKEN = /ev:(?:debug:)?[A-Za-z0-9+/]{4}:(?:(?:number|boolean):)?[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+:\$/g;
// RFC 9110 field-value characters: HTAB, SP, VCHAR, obs-text. No CR, LF, NUL or other controls.
const HEADER_SAFE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** How many values decryptHeaderValue(value) would decrypt, without decrypting anything. */
export function countHeaderTokens(value: string): number {
  if (value.indexOf('ev:') < 0) return 0;
  let count = 0;
  for (const m of value.matchAll(HEADER_TOKEN)) if (tryParseEv(m[0]) !== null) count++;
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
    const token = tryParseEv(m[0]);
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
    const token = tryParseEv(value);
    return token ? (decryptTokenDetailed(token, keyring).value as EvValue) : value;
  }
  if (value === null || typeof value !== 'object') return value;
  if (depth >= MAX_DEPTH) throw new EvFormatError('EV_BAD_VALUE', `value nested deeper than ${MAX_DEPTH} levels`);
  if (Array.isArray(value)) return value.map((v) => walk(v, keyring, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v, keyring, depth + 1)]));
}

// Encrypting every primitive leaf of a JSON value (the /encrypt endpoint, the `encrypt` CLI).
// One EvEncryptor (one ephemeral key, one ECDH) per call; one AES-GCM per leaf. null stays null,
// object keys stay as they are.
import { drain } from './steps.ts';
import { EvFormatError } from './errors.ts';
import { EvEncryptor } from './ev-format.ts';
import type { EncryptOptions, EncryptionPublicKey } from './ev-format.ts';
import { MAX_DEPTH, followedByColon, stringEnd } from './json-lex.ts';
import { Keyring } from './keyring.ts';

function encryptorFor(key: Keyring | EncryptionPublicKey, opts: EncryptOptions): EvEncryptor {
  return new EvEncryptor(key instanceof Keyring ? key.publicKeys() : key, opts);
}

/** Decoded-JSON walk: a copy of `value` with every string/number/boolean leaf replaced by an `ev:` string. */
export function walkEncrypt(value: unknown, key: Keyring | EncryptionPublicKey, opts: EncryptOptions = {}): unknown {
  const enc = encryptorFor(key, opts);
  const walk = (v: unknown, depth: number): unknown => {
    if (v === null || v === undefined) return v;
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return enc.encrypt(v);
    if (typeof v !== 'object') throw new EvFormatError('EV_BAD_VALUE', `cannot encrypt a ${typeof v}`);
    if (depth >= MAX_DEPTH) throw new EvFormatError('EV_BAD_VALUE', `value nested deeper than ${MAX_DEPTH} levels`);
    if (Array.isArray(v)) return v.map((x) => walk(x, depth + 1));
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, depth + 1)]));
  };
  return walk(value, 0);
}

const NUMBER_AT = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

/**
 * Text-preserving variant for a JSON document: every string, number and boolean VALUE is replaced by a
 * JSON string holding its `ev:` value; keys, null, structure and whitespace are kept. Numbers keep their
 * exact digits as plaintext. The caller must pass valid JSON (validate with JSON.parse first): the scan
 * is lexical and throws EV_BAD_VALUE on anything it does not recognise.
 */
export function encryptJsonText(json: string, key: Keyring | EncryptionPublicKey, opts: EncryptOptions = {}): { json: string; count: number } {
  return drain(encryptJsonSteps(json, key, opts));
}

// One AES-GCM is ~10 µs: a step of 32 values keeps a step well under a millisecond.
const ENCRYPT_STEP_VALUES = 32;

/**
 * How many values encryptJsonText(json) would encrypt (strings that are not object keys, numbers, booleans),
 * without encrypting: a lexical scan of valid JSON. Stops once the count exceeds `stopAfter`.
 */
export function countJsonValues(json: string, stopAfter = Infinity): number {
  let count = 0;
  for (let i = 0; i < json.length && count <= stopAfter; ) {
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const e = stringEnd(json, i);
      if (e < 0) break;
      if (!followedByColon(json, e + 1)) count++;
      i = e + 1;
    } else if (c === 0x74 /* t */ || c === 0x66 /* f */) {
      count++;
      i += c === 0x74 ? 4 : 5;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      NUMBER_AT.lastIndex = i;
      const m = NUMBER_AT.exec(json);
      if (!m) break;
      count++;
      i += m[0].length;
    } else {
      i++; // structure, whitespace, null's letters
    }
  }
  return count;
}

/**
 * encryptJsonText as steps for DecryptScheduler: the first next() does the ECDH of the encryptor, each
 * later one encrypts up to 32 values. The generator's return value is encryptJsonText's.
 */
export function* encryptJsonSteps(json: string, key: Keyring | EncryptionPublicKey, opts: EncryptOptions = {}): Generator<void, { json: string; count: number }, void> {
  const enc = encryptorFor(key, opts);
  yield;
  const out: string[] = [];
  let last = 0;
  let count = 0;
  let i = 0;
  const emit = (start: number, end: number, token: string): void => {
    out.push(json.slice(last, start), '"', token, '"');
    last = end;
    count++;
  };
  let stepStart = 0;
  while (i < json.length) {
    if (count - stepStart >= ENCRYPT_STEP_VALUES) {
      stepStart = count;
      yield;
    }
    const c = json.charCodeAt(i);
    if (c === 0x22 /* " */) {
      const e = stringEnd(json, i);
      if (e < 0) throw new EvFormatError('EV_BAD_VALUE', 'unterminated JSON string');
      if (!followedByColon(json, e + 1)) emit(i, e + 1, enc.encrypt(JSON.parse(json.slice(i, e + 1)) as string));
      i = e + 1;
    } else if (c === 0x74 /* t */ && json.startsWith('true', i)) {
      emit(i, i + 4, enc.encrypt(true));
      i += 4;
    } else if (c === 0x66 /* f */ && json.startsWith('false', i)) {
      emit(i, i + 5, enc.encrypt(false));
      i += 5;
    } else if (c === 0x6e /* n */ && json.startsWith('null', i)) {
      i += 4;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      NUMBER_AT.lastIndex = i;
      const m = NUMBER_AT.exec(json);
      if (!m) throw new EvFormatError('EV_BAD_VALUE', `invalid JSON number at offset ${i}`);
      emit(i, i + m[0].length, enc.encryptJsonNumber(m[0]));
      i += m[0].length;
    } else if (c === 0x7b || c === 0x7d || c === 0x5b || c === 0x5d || c === 0x2c || c === 0x3a || c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
      i++;
    } else {
      throw new EvFormatError('EV_BAD_VALUE', `unexpected character in JSON at offset ${i}`);
    }
  }
  out.push(json.slice(last));
  return { json: out.join(''), count };
}

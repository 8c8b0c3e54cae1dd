// Fuzzing the `ev:` value parser and decryption (src/crypto/ev-parse.ts, ev-format.ts) and the scanners that
// find tokens in request bodies and headers (json-decrypt.ts): random strings, `ev:`-shaped strings with
// every kind of segment, mutations of real tokens and every prefix of one. Each call either returns a
// result that satisfies its invariant (a parsed token re-formats to the same token; a decrypted mutant holds
// the original plaintext — no forgery; decrypted JSON is valid JSON equal to a reference walk) or throws
// EvFormatError / EvDecryptError — never another exception.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EvDecryptError, EvFormatError } from '../../src/crypto/errors.ts';
import { decryptTokenDetailed, encryptValue, formatEv, isEvToken, parseEv, type EvToken } from '../../src/crypto/ev-format.ts';
import { VERSIONS } from '../../src/crypto/ev-parse.ts';
import { decryptHeaderValue, decryptJsonTokens } from '../../src/crypto/json-decrypt.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { equalBytes } from '../../src/util/bytes.ts';
import { FUZZ_SEED, fuzzParams, fuzzTimeout } from './config.ts';
import { expectBoundedHeap } from './harness.ts';

const FORMAT_CODES = /^EV_(MALFORMED|UNSUPPORTED_VERSION)$/;
const DECRYPT_CODES = /^EV_(DECRYPT_FAILED|WRONG_KEY|UNSAFE_HEADER_VALUE)$/;

type Result<T> = { ok: true; value: T } | { ok: false; error: EvFormatError | EvDecryptError };

/** A value, an EvFormatError of the parsing family or an EvDecryptError; anything else is rethrown. */
function evOutcome<T>(fn: () => T): Result<T> {
  try {
    return { ok: true, value: fn() };
  } catch (err) {
    if (err instanceof EvFormatError && FORMAT_CODES.test(err.code)) return { ok: false, error: err };
    if (err instanceof EvDecryptError && DECRYPT_CODES.test(err.code)) return { ok: false, error: err };
    throw err;
  }
}

const keyring = Keyring.generate();
const other = Keyring.generate();

/** Real tokens of every version, type, role and debug flag, with the plaintext text they carry. */
const POOL: { token: string; text: string }[] = [];
{
  const values: (string | number | boolean)[] = ['', 'x', 'hello world', '4111111111111111', ' padded ', 'ünïcödé ✓', 0, -1.5, 12345678901234, true, false];
  let i = 0;
  for (const curve of ['p256', 'secp256k1'] as const) {
    for (const role of [undefined, 'pii']) {
      for (const debug of [false, true]) {
        for (let k = 0; k < 3; k++) {
          const value = values[i++ % values.length]!;
          const token = encryptValue(value, keyring.publicKeys(), { curve, debug, ...(role === undefined ? {} : { role }) });
          POOL.push({ token, text: decryptTokenDetailed(token, keyring).text });
        }
      }
    }
  }
}
const pooled = fc.constantFrom(...POOL);

function sameToken(a: EvToken, b: EvToken): boolean {
  return (
    a.debug === b.debug && a.version === b.version && a.curve === b.curve && a.hasMetadata === b.hasMetadata && a.type === b.type &&
    equalBytes(a.iv, b.iv) && equalBytes(a.ephemeralPublicKey, b.ephemeralPublicKey) && equalBytes(a.ciphertext, b.ciphertext)
  );
}

/** parseEv's contract on one string; returns the token when it parsed. */
function checkParse(s: string): EvToken | null {
  const r = evOutcome(() => parseEv(s));
  if (isEvToken(s) !== r.ok) throw new Error(`isEvToken disagrees with parseEv on ${JSON.stringify(s.slice(0, 80))}`);
  if (!r.ok) {
    if (!(r.error instanceof EvFormatError)) throw new Error(`parseEv threw ${r.error.code}`);
    return null;
  }
  const t = r.value;
  const spec = Object.prototype.hasOwnProperty.call(VERSIONS, t.version) ? VERSIONS[t.version] : undefined;
  if (spec === undefined || spec.curve !== t.curve || spec.hasMetadata !== t.hasMetadata) {
    throw new Error(`parseEv accepted version ${JSON.stringify(t.version)} with curve ${String(t.curve)}`);
  }
  if (!['string', 'number', 'boolean'].includes(t.type)) throw new Error(`bad type ${t.type}`);
  if (t.iv.length !== 12 || t.ephemeralPublicKey.length !== 33 || (t.ephemeralPublicKey[0] !== 2 && t.ephemeralPublicKey[0] !== 3) || t.ciphertext.length < 16) {
    throw new Error('parsed segments break their sizes');
  }
  // formatEv is the inverse of parseEv up to base64 padding.
  const again = parseEv(formatEv(t));
  if (!sameToken(again, t)) throw new Error('parseEv(formatEv(t)) differs from t');
  return t;
}

// --- generators ----------------------------------------------------------------------------------------------

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const b64String = (max: number) => fc.string({ unit: fc.constantFrom(...B64.split('')), maxLength: max, size: 'max' });
const segment = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 80, size: 'max' }).map((b) => Buffer.from(b).toString('base64')) },
  { weight: 2, arbitrary: fc.uint8Array({ minLength: 12, maxLength: 12 }).map((b) => Buffer.from(b).toString('base64').replace(/=+$/, '')) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(2, 3, 4, 0), fc.uint8Array({ minLength: 32, maxLength: 32 })).map(([p, b]) => Buffer.from([p, ...b]).toString('base64')) },
  { weight: 1, arbitrary: b64String(60) },
  { weight: 1, arbitrary: fc.constantFrom('', '=', '==', 'A', 'AA=', 'A===', '====', 'AAAA====', '-_', '\u00e9', ' ') },
);
const version = fc.constantFrom(
  'Tk9D', 'QkTC', 'RFVC', 'S0lS', 'T1JL', 'TENZ', 'QlJV', 'number', 'boolean', 'debug', 'tk9d', 'XXXX', '',
  'AAAAAAAAAAAAAAAA', 'toString', '__proto__', 'constructor', 'hasOwnProperty', 'valueOf',
);
/** `ev:` + optional debug + version + optional type + 0–5 segments + `:$`, joined with colons. */
const evShaped = fc
  .tuple(fc.boolean(), version, fc.constantFrom(null, 'number', 'boolean', 'string'), fc.array(segment, { maxLength: 5 }), fc.boolean())
  .map(([debug, v, type, segs, dollar]) => ['ev', ...(debug ? ['debug'] : []), v, ...(type === null ? [] : [type]), ...segs].join(':') + (dollar ? ':$' : ''));

const b64 = (b: Uint8Array, pad: boolean): string => (pad ? Buffer.from(b).toString('base64') : Buffer.from(b).toString('base64').replace(/=+$/, ''));
/** Grammatically valid tokens with random bytes (they parse; they do not decrypt). */
const evWellFormed = fc
  .record({
    debug: fc.boolean(),
    version: fc.constantFrom('Tk9D', 'QkTC', 'RFVC', 'S0lS'),
    type: fc.constantFrom(null, 'number', 'boolean'),
    iv: fc.uint8Array({ minLength: 12, maxLength: 12 }),
    epk: fc.tuple(fc.constantFrom(2, 3), fc.uint8Array({ minLength: 32, maxLength: 32 })).map(([p, b]) => Uint8Array.of(p, ...b)),
    ct: fc.uint8Array({ minLength: 16, maxLength: 60, size: 'max' }),
    pad: fc.boolean(),
  })
  .map((t) => ['ev', ...(t.debug ? ['debug'] : []), t.version, ...(t.type === null ? [] : [t.type]), b64(t.iv, t.pad), b64(t.epk, t.pad), b64(t.ct, t.pad), '$'].join(':'));

/** Character-level mutations of a string (flip, insert, delete, truncate, splice, swap a segment). */
const strMutation = fc.oneof(
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), ch: fc.constantFrom(...'A/+=:$-_ \u00ff\u0000e'.split(''), 'ev:', 'debug:') }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), ch: fc.constantFrom(...'A/+=:$ '.split(''), ':number', ':boolean', 'debug:', '=') }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ op: fc.constant('splice' as const), at: fc.nat(), from: fc.nat() }),
);
type StrMutation = typeof strMutation extends fc.Arbitrary<infer T> ? T : never;

function mutateString(s: string, muts: StrMutation[], donor: string): string {
  let out = s;
  for (const m of muts) {
    const at = out.length === 0 ? 0 : m.at % out.length;
    switch (m.op) {
      case 'set':
        out = out.slice(0, at) + m.ch + out.slice(at + 1);
        break;
      case 'insert':
        out = out.slice(0, at) + m.ch + out.slice(at);
        break;
      case 'delete':
        out = out.slice(0, at) + out.slice(at + m.n);
        break;
      case 'truncate':
        out = out.slice(0, at);
        break;
      case 'flip':
        out = out.length === 0 ? out : out.slice(0, at) + String.fromCharCode(out.charCodeAt(at) ^ (1 << m.bit)) + out.slice(at + 1);
        break;
      case 'splice':
        out = out.slice(0, at) + donor.slice(donor.length === 0 ? 0 : m.from % donor.length);
        break;
    }
  }
  return out;
}

/** A real token, 1–4 mutations of it (splices take the tail of a second real token), and its plaintext. */
const mutatedToken = fc
  .tuple(pooled, pooled, fc.array(strMutation, { minLength: 1, maxLength: 4 }))
  .map(([a, b, muts]) => ({ token: mutateString(a.token, muts, b.token), source: a, donor: b }));

// --- JSON bodies ---------------------------------------------------------------------------------------------

const jsonLeaf = fc.oneof(
  { weight: 3, arbitrary: pooled.map((p) => p.token) },
  { weight: 1, arbitrary: mutatedToken.map((m) => m.token) },
  { weight: 2, arbitrary: fc.oneof(fc.string({ maxLength: 10 }), fc.integer(), fc.boolean(), fc.constant(null)) },
);
const { v: jsonValue } = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { maxDepth: 3, depthIdentifier: 'json' },
    { weight: 4, arbitrary: jsonLeaf },
    { weight: 1, arbitrary: fc.array(tie('v'), { maxLength: 4 }) },
    { weight: 1, arbitrary: fc.array(fc.tuple(fc.oneof(fc.string({ maxLength: 6 }), pooled.map((p) => p.token)), tie('v')), { maxLength: 4 }).map((e) => Object.fromEntries(e)) },
  ),
}));

/** What decryptJsonTokens must produce, computed on the decoded value: every valid token value decrypted, keys as sent. */
function referenceDecrypt(v: unknown): unknown {
  const token = (s: string): EvToken | null => {
    try {
      return parseEv(s);
    } catch {
      return null;
    }
  };
  if (typeof v === 'string') {
    const t = token(v);
    if (t === null) return v;
    const d = decryptTokenDetailed(t, keyring);
    return d.type === 'string' ? d.text : JSON.parse(d.text);
  }
  if (Array.isArray(v)) return v.map(referenceDecrypt);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, referenceDecrypt(x)]));
  }
  return v;
}

describe('ev: parsing and decryption under fuzzing', () => {
  it(
    'answers random strings and ev:-shaped strings with a token or an EvFormatError, and re-formats what it parses',
    () => {
      let parsed = 0;
      fc.assert(
        fc.property(fc.oneof(fc.string({ maxLength: 120, unit: 'binary', size: 'max' }), evShaped, evWellFormed), (s) => {
          if (checkParse(s) !== null) parsed++;
        }),
        fuzzParams(),
      );
      expect(parsed).toBeGreaterThan(fuzzParams().numRuns! / 10);
    },
    fuzzTimeout(),
  );

  it(
    'opens a mutated token only to its original plaintext, and otherwise fails with a typed error',
    () => {
      fc.assert(
        fc.property(mutatedToken, ({ token, source, donor }) => {
          checkParse(token);
          const r = evOutcome(() => decryptTokenDetailed(token, keyring));
          // (a splice may carry the whole ciphertext of the second token: its plaintext is the other legal answer)
          if (r.ok && r.value.text !== source.text && r.value.text !== donor.text) throw new Error(`a mutated token decrypted to another plaintext: ${token}`);
          // Another enclave's keyring never opens it.
          const o = evOutcome(() => decryptTokenDetailed(token, other));
          if (o.ok) throw new Error(`a token opened with a foreign keyring: ${token}`);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  // Found by the property above (seed 15473246): `v in VERSIONS` let Object.prototype names through as
  // versions, so parseEv returned a token with curve undefined and a JSON body holding such a string got a
  // decryption failure (422) instead of passing through unchanged like any other non-token.
  it('rejects Object.prototype names in the version segment as malformed, and JSON passes them through', () => {
    const { token } = POOL[0]!;
    const rest = token.slice(token.indexOf(':', 3));
    for (const name of ['toString', 'hasOwnProperty', '__proto__', 'constructor', 'valueOf']) {
      const s = `ev:${name}${rest}`;
      const r = evOutcome(() => parseEv(s));
      expect(r.ok ? 'parsed' : r.error.code).toBe('EV_MALFORMED');
      expect(isEvToken(s)).toBe(false);
      const body = JSON.stringify({ a: s });
      expect(decryptJsonTokens(body, keyring)).toEqual({ json: body, count: 0 });
    }
  });

  it('rejects every proper prefix of every real token as malformed', () => {
    for (const { token } of POOL) {
      for (let n = 0; n < token.length; n++) {
        const prefix = token.slice(0, n);
        const r = evOutcome(() => decryptTokenDetailed(prefix, keyring));
        if (r.ok || r.error.code !== 'EV_MALFORMED') throw new Error(`prefix ${JSON.stringify(prefix)}: expected EV_MALFORMED`);
        if (isEvToken(prefix)) throw new Error(`isEvToken accepted a prefix: ${prefix}`);
      }
    }
  });

  it(
    'decrypts tokens in JSON bodies to valid JSON equal to a reference walk, or fails with a typed error',
    () => {
      fc.assert(
        fc.property(jsonValue, fc.boolean(), (value, pretty) => {
          const json = JSON.stringify(value, null, pretty ? 1 : undefined) ?? 'null';
          const r = evOutcome(() => decryptJsonTokens(json, keyring));
          if (!r.ok) return; // a valid-grammar token that does not open: the pipeline answers 422
          const out = JSON.parse(r.value.json) as unknown;
          expect(out).toEqual(referenceDecrypt(value));
        }),
        fuzzParams(0.3),
      );
    },
    fuzzTimeout(),
  );

  it(
    'answers mutated JSON text and header values with a result or a typed error',
    () => {
      const text = fc.tuple(jsonValue, fc.array(strMutation, { maxLength: 4 }), pooled).map(([v, muts, donor]) => mutateString(JSON.stringify(v) ?? '', muts, donor.token));
      fc.assert(
        fc.property(text, (s) => {
          evOutcome(() => decryptJsonTokens(s, keyring));
          const h = evOutcome(() => decryptHeaderValue(s, keyring));
          if (h.ok && h.value.count > 0 && /[\r\n\0]/.test(h.value.value) && !/[\r\n\0]/.test(s)) throw new Error('decryptHeaderValue introduced CR/LF/NUL');
        }),
        fuzzParams(0.3),
      );
    },
    fuzzTimeout(),
  );

  it(
    'retains no memory across ten thousand hostile tokens',
    async () => {
      await expectBoundedHeap((pass) => {
        fc.assert(
          fc.property(fc.oneof(evShaped, mutatedToken.map((m) => m.token)), (s) => {
            evOutcome(() => decryptTokenDetailed(s, keyring));
          }),
          { ...fuzzParams(0.5), seed: FUZZ_SEED + pass },
        );
      });
    },
    fuzzTimeout(),
  );
});

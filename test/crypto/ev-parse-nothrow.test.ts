// tryParseEv: the grammar check scanners run on every candidate string of a request body. It reports a
// failure as a value, never by throwing (an exception per failed candidate, ~9 µs, let a body of near-tokens
// hold the event loop for seconds); parseEv keeps throwing EvFormatError with the same code and message.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EvFormatError } from '../../src/crypto/errors.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { isEvToken, parseEv, tryParseEv, tryParseEvDetailed } from '../../src/crypto/ev-parse.ts';
import { Keyring } from '../../src/crypto/keyring.ts';

const keyring = Keyring.generate();
const pub = keyring.publicKeys();
const valid = [
  encryptValue('text', pub),
  encryptValue(12, pub, { curve: 'secp256k1' }),
  encryptValue(true, pub, { role: 'r1' }),
  encryptValue('x', pub, { curve: 'secp256k1', role: 'r2' }),
];

/** What parseEv does with `s`: the token, or the EvFormatError's code and message. */
function viaThrow(s: string): { problem: string; message: string } | { version: string } {
  try {
    return { version: parseEv(s).version };
  } catch (err) {
    if (!(err instanceof EvFormatError)) throw err;
    return { problem: err.code, message: err.message };
  }
}

function viaValue(s: string): { problem: string; message: string } | { version: string } {
  const r = tryParseEvDetailed(s);
  return 'problem' in r ? { problem: r.problem, message: r.message } : { version: r.version };
}

describe('tryParseEv / tryParseEvDetailed', () => {
  it('parses every version and type exactly as parseEv does', () => {
    for (const t of valid) {
      expect(tryParseEv(t)).toEqual(parseEv(t));
      expect(isEvToken(t)).toBe(true);
    }
  });

  it.each([
    ['the reviewer\'s near-token', 'ev:Tk9D:A:A:A:$', 'EV_MALFORMED', 'IV is not standard base64'],
    ['bad IV padding', 'ev:Tk9D:AAAAAAAAAAAAAA=:A:A:$', 'EV_MALFORMED', 'IV is not standard base64'],
    ['a short IV', 'ev:Tk9D:AAAA:A:A:$', 'EV_MALFORMED', 'IV is 3 bytes, expected 12'],
    ['an unknown version', 'ev:ZZZZ:A:A:A:$', 'EV_MALFORMED', 'unknown version segment'],
    ['a known unsupported version', 'ev:T1JL:A:A:A:$', 'EV_UNSUPPORTED_VERSION', 'found T1JL'],
    ['too few segments', 'ev:Tk9D:x:$', 'EV_MALFORMED', 'found 1 segments'],
  ])('%s: null / a problem, and parseEv throws the same code and message', (_what, s, code, text) => {
    expect(tryParseEv(s)).toBeNull();
    expect(isEvToken(s)).toBe(false);
    const r = viaValue(s);
    expect(r).toMatchObject({ problem: code, message: expect.stringContaining(text) as unknown });
    expect(viaThrow(s)).toEqual(r);
  });

  it('agrees with parseEv on arbitrary edits of valid tokens (same token, or same code and message)', () => {
    const alphabet = 'AB+/=:$ev9Tk9DQkTCnumberboolean'.split('');
    fc.assert(
      fc.property(fc.constantFrom(...valid), fc.nat(), fc.nat(), fc.array(fc.constantFrom(...alphabet), { maxLength: 6 }), (t, at, len, insert) => {
        const i = at % t.length;
        const s = t.slice(0, i) + insert.join('') + t.slice(i + (len % 8));
        expect(viaValue(s)).toEqual(viaThrow(s));
        expect(() => tryParseEv(s)).not.toThrow();
      }),
      { numRuns: 500 },
    );
  });
});

import { describe, expect, it } from 'vitest';
import { decodeStrict } from '../../src/attestation/cbor.ts';
import { coseSign1SigStructure, parseAttestationDocument, parseCoseSign1, PAYLOAD_KEYS } from '../../src/attestation/document.ts';
import { AttestationError } from '../../src/attestation/errors.ts';
import { encodeCbor } from '../../src/attestation/nsm-messages.ts';
import { concatBytes, fromHex, toHex, utf8 } from '../../src/util/bytes.ts';
import { fixtureBytes, isEmptyPublicKeyFixture, nitroIndex } from './fixtures.ts';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof AttestationError) return err.code;
    return `threw ${(err as Error).name}: ${(err as Error).message}`;
  }
  return 'PASSED';
}

const PROTECTED = fromHex('a1013822');
const cose = (payload: Uint8Array, protectedBytes = PROTECTED, signature = new Uint8Array(96), unprotected: unknown = new Map()) =>
  encodeCbor([protectedBytes, unprotected, payload, signature]);

describe('strict CBOR decoding', () => {
  it('decodes definite items and keeps map order', () => {
    const v = decodeStrict(fromHex('a461620361612061634201026164f5')) as Map<string, unknown>;
    expect([...v.entries()]).toEqual([['b', 3], ['a', -1], ['c', Uint8Array.of(1, 2)], ['d', true]]);
  });

  it.each([
    ['indefinite-length byte string', '5f4101ff'],
    ['indefinite-length array', '9f01ff'],
    ['indefinite-length map', 'bf6161 01ff'],
    ['a float', 'fb3ff0000000000000'],
    ['a tag', 'c11a5f000000'],
    ['undefined', 'f7'],
    ['a duplicate map key', 'a2616101616102'],
    ['a byte-string map key', 'a1410101'],
    ['invalid UTF-8 text', '62c328'],
    ['a length beyond the input', '5a00010000'],
    ['an array count beyond the input', '9b00000000ffffffff'],
    ['an integer above 2^53', '1b0020000000000000'],
    ['a reserved additional info', '1c'],
    ['trailing bytes', '0000'],
    ['nothing', ''],
  ])('rejects %s', (_, hex) => {
    expect(() => decodeStrict(fromHex(hex.replace(/\s/g, '')))).toThrow();
  });

  it('rejects nesting deeper than 16 levels without exhausting the stack', () => {
    expect(() => decodeStrict(new Uint8Array(100_000).fill(0x81))).toThrow(/nesting deeper than 16/);
  });
});

describe('COSE_Sign1 and payload parsing', () => {
  it('parses every real document: untagged, ES384 protected header, 96-byte signature, the nine keys in the real order', () => {
    for (const f of nitroIndex.documents) {
      const bytes = fixtureBytes(f);
      const { cose: c, document } = parseAttestationDocument(bytes, { allowEmptyPublicKey: isEmptyPublicKeyFixture(f) });
      expect(c.tagged).toBe(false);
      expect(c.alg).toBe(-35);
      expect(toHex(c.protectedBytes)).toBe('a1013822');
      expect(c.signature.length).toBe(96);
      expect(document.moduleId).toBe(f.module_id);
      expect(document.digest).toBe('SHA384');
      expect([...(decodeStrict(c.payload) as Map<string, unknown>).keys()]).toEqual([...PAYLOAD_KEYS]);
      expect(document.cabundle.length).toBe(4);
    }
  });

  it('returns byte strings that do not alias the input', () => {
    const f = nitroIndex.documents[1]!;
    const bytes = fixtureBytes(f);
    const { document } = parseAttestationDocument(bytes);
    const before = toHex(document.certificate);
    bytes.fill(0);
    expect(toHex(document.certificate)).toBe(before);
  });

  it('accepts tag 18 and rejects other tags, trailing bytes and truncation as ATTESTATION_MALFORMED', () => {
    const bytes = fixtureBytes(nitroIndex.documents[1]!);
    expect(parseCoseSign1(concatBytes(Uint8Array.of(0xd2), bytes)).tagged).toBe(true);
    expect(code(() => parseCoseSign1(concatBytes(Uint8Array.of(0xd8, 0x12), bytes)))).toBe('ATTESTATION_MALFORMED');
    expect(code(() => parseCoseSign1(concatBytes(bytes, Uint8Array.of(0xa0))))).toBe('ATTESTATION_MALFORMED');
    for (let n = 0; n < bytes.length; n += 97) expect([n, code(() => parseCoseSign1(bytes.subarray(0, n)))]).toEqual([n, 'ATTESTATION_MALFORMED']);
  });

  it.each([
    ['a 3-item array', () => encodeCbor([PROTECTED, new Map(), Uint8Array.of(1)]), 'ATTESTATION_MALFORMED', /array of 4 items/],
    ['a map instead of an array', () => encodeCbor(new Map([[1, 2]])), 'ATTESTATION_MALFORMED', /array of 4 items/],
    ['a text protected header', () => encodeCbor(['x', new Map(), Uint8Array.of(1), new Uint8Array(96)]), 'ATTESTATION_MALFORMED', /protected header must be a byte string/],
    ['an array unprotected header', () => cose(Uint8Array.of(0xa0), PROTECTED, new Uint8Array(96), []), 'ATTESTATION_MALFORMED', /unprotected header must be a map/],
    ['alg ES256', () => cose(Uint8Array.of(0xa0), fromHex('a10126')), 'ATTESTATION_STRUCTURE', /ES384 \(-35\); found number -7/],
    ['an extra protected parameter', () => cose(Uint8Array.of(0xa0), fromHex('a201382204a0')), 'ATTESTATION_STRUCTURE', /unexpected parameter 4/],
    ['an empty protected header', () => cose(Uint8Array.of(0xa0), new Uint8Array(0)), 'ATTESTATION_MALFORMED', /protected header/],
    ['a 64-byte signature', () => cose(Uint8Array.of(0xa0), PROTECTED, new Uint8Array(64)), 'ATTESTATION_STRUCTURE', /96 bytes .* found 64/],
    ['an empty payload', () => cose(new Uint8Array(0)), 'ATTESTATION_MALFORMED', /payload is empty/],
    ['a payload that is not a map', () => cose(encodeCbor([1])), 'ATTESTATION_STRUCTURE', /payload must be a map/],
    ['a payload with an integer key', () => cose(encodeCbor(new Map([[1, 1]]))), 'ATTESTATION_STRUCTURE', /keys must be text/],
    ['a payload with garbage after the map', () => cose(concatBytes(encodeCbor(new Map()), Uint8Array.of(0))), 'ATTESTATION_MALFORMED', /trailing/],
  ])('rejects %s', (_, make, expectedCode, message) => {
    try {
      parseAttestationDocument(make());
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(AttestationError);
      expect((err as AttestationError).code).toBe(expectedCode);
      expect((err as AttestationError).message).toMatch(message);
    }
  });

  it('builds the Sig_structure ["Signature1", protected, h\'\', payload] byte for byte', () => {
    const payload = new Uint8Array(300).fill(7);
    const expected = encodeCbor(['Signature1', PROTECTED, new Uint8Array(0), payload]);
    expect(toHex(coseSign1SigStructure(PROTECTED, payload))).toBe(toHex(expected));
    expect(toHex(coseSign1SigStructure(PROTECTED, Uint8Array.of(1)))).toBe(toHex(encodeCbor(['Signature1', PROTECTED, new Uint8Array(0), Uint8Array.of(1)])));
    expect(utf8.decode(coseSign1SigStructure(PROTECTED, payload).subarray(2, 12))).toBe('Signature1');
  });
});

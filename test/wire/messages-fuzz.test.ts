// Property tests of the message codec: round trips, an independent encoder as oracle, and hostile input
// (random bytes, mutated valid messages) that must only ever produce a result or a WireError.
import { Encoder } from 'cbor-x';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WireError } from '../../src/wire/errors.ts';
import {
  decodeClientMessage,
  decodeServerMessage,
  encodeClientMessage,
  encodeServerMessage,
} from '../../src/wire/messages.ts';
import type { ByteEncoding, ClientMessage, ServerMessage } from '../../src/wire/messages.ts';

const id = fc.oneof(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 2 ** 32 + 5 }), fc.constant(Number.MAX_SAFE_INTEGER));
const bytes = (maxLength = 300) => fc.uint8Array({ maxLength });
const nonce = fc.uint8Array({ minLength: 32, maxLength: 32 });

const clientMessage: fc.Arbitrary<ClientMessage> = fc.oneof(
  fc.constant({ type: 'RequestAttestation' as const }),
  fc.constant({ type: 'GetControlNonce' as const }),
  fc.record({ type: fc.constantFrom('Data' as const, 'OpenStream' as const, 'StreamData' as const), id, payload: bytes() }),
  fc.record({ type: fc.constant('StreamClose' as const), id, half: fc.constantFrom('Write' as const, 'Both' as const) }),
  fc.record({ type: fc.constant('Control' as const), payload: bytes(), signature: bytes(80) }),
);

const serverMessage: fc.Arbitrary<ServerMessage> = fc.oneof(
  fc.record({ type: fc.constant('Attestation' as const), data: bytes(), control_nonce: nonce }),
  fc.record({ type: fc.constant('Attestation' as const), data: bytes(), control_nonce: nonce, features: fc.array(fc.string({ maxLength: 12 }), { maxLength: 4 }) }),
  fc.record({ type: fc.constantFrom('Data' as const, 'StreamData' as const), id, payload: bytes() }),
  fc.record({ type: fc.constant('Error' as const), id, message: fc.string({ maxLength: 40, unit: 'grapheme' }) }),
  fc.record({ type: fc.constant('StreamClose' as const), id }),
  fc.record({ type: fc.constant('ControlNonce' as const), nonce }),
  fc.record({ type: fc.constant('ControlResult' as const), success: fc.boolean(), message: fc.string({ maxLength: 40 }) }),
);

const encoding = fc.constantFrom<ByteEncoding>('array', 'bstr');
const BYTE_FIELDS = ['payload', 'signature', 'data', 'control_nonce', 'nonce'];
const hasByteField = (m: object) => Object.keys(m).some((k) => BYTE_FIELDS.includes(k));

/** Decoding must give a result or a WireError that is not an internal failure — nothing else. */
function decodesSafely(decode: (b: Uint8Array) => unknown, input: Uint8Array): void {
  try {
    decode(input);
  } catch (err) {
    if (!(err instanceof WireError)) throw err;
    if (err.detail === 'internal') throw err;
  }
}

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(input: Uint8Array, muts: Mutation[]): Uint8Array {
  let b = Array.from(input);
  for (const m of muts) {
    if (b.length === 0) break;
    const at = m.at % b.length;
    if (m.kind === 'flip') b[at] = b[at]! ^ (1 << m.bit);
    else if (m.kind === 'set') b[at] = m.value;
    else if (m.kind === 'insert') b.splice(at, 0, m.value);
    else if (m.kind === 'delete') b.splice(at, 1);
    else b = b.slice(0, at);
  }
  return Uint8Array.from(b);
}

describe('message codec properties', () => {
  it('round-trips every client message in both encodings and reports the encoding used', () => {
    fc.assert(
      fc.property(clientMessage, encoding, (m, enc) => {
        const { message, encoding: seen } = decodeClientMessage(encodeClientMessage(m, enc));
        expect(message).toEqual(m);
        expect(seen).toBe(hasByteField(m) ? enc : 'array');
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips every server message in both encodings and reports the encoding used', () => {
    fc.assert(
      fc.property(serverMessage, encoding, (m, enc) => {
        const { message, encoding: seen } = decodeServerMessage(encodeServerMessage(m, enc));
        expect(message).toEqual(m);
        expect(seen).toBe(hasByteField(m) ? enc : 'array');
      }),
      { numRuns: 500 },
    );
  });

  it('encodes byte-identically to cbor-x (canonical settings) given the serde shape with int arrays', () => {
    const cborx = new Encoder({ useRecords: false, variableMapSize: true, mapsAsObjects: true });
    const serdeShape = (m: object) =>
      Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v instanceof Uint8Array ? Array.from(v) : v]));
    // cbor-x writes integers ≥ 2^32 as floats-or-bigints depending on options; keep ids below that here.
    const small = (m: object) => !('id' in m) || (m as { id: number }).id < 2 ** 32;
    fc.assert(
      fc.property(clientMessage.filter(small), (m) => {
        expect(Buffer.from(encodeClientMessage(m)).toString('hex')).toBe(Buffer.from(cborx.encode(serdeShape(m))).toString('hex'));
      }),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(serverMessage.filter(small), (m) => {
        expect(Buffer.from(encodeServerMessage(m)).toString('hex')).toBe(Buffer.from(cborx.encode(serdeShape(m))).toString('hex'));
      }),
      { numRuns: 300 },
    );
  });

  it('never throws anything but a WireError on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (input) => {
        decodesSafely(decodeClientMessage, input);
        decodesSafely(decodeServerMessage, input);
      }),
      { numRuns: 3000 },
    );
  });

  it('never throws anything but a WireError on random bytes that start like a message map', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0xa0, max: 0xbf }), fc.uint8Array({ maxLength: 120 }), (first, rest) => {
        const input = Uint8Array.of(first, 0x64, 0x74, 0x79, 0x70, 0x65, ...rest);
        decodesSafely(decodeClientMessage, input);
        decodesSafely(decodeServerMessage, input);
      }),
      { numRuns: 3000 },
    );
  });

  it('never throws anything but a WireError on mutated valid messages', () => {
    fc.assert(
      fc.property(clientMessage, serverMessage, encoding, fc.array(mutation, { minLength: 1, maxLength: 4 }), (cm, sm, enc, muts) => {
        decodesSafely(decodeClientMessage, mutate(encodeClientMessage(cm, enc), muts));
        decodesSafely(decodeServerMessage, mutate(encodeServerMessage(sm, enc), muts));
      }),
      { numRuns: 3000 },
    );
  });

  it('never throws anything but a WireError on non-Uint8Array input from untyped callers', () => {
    for (const input of [undefined, null, 'a164', [0xa0], {}, 5]) {
      expect(() => decodeClientMessage(input as unknown as Uint8Array)).toThrow(WireError);
      expect(() => decodeServerMessage(input as unknown as Uint8Array)).toThrow(WireError);
    }
  });
});

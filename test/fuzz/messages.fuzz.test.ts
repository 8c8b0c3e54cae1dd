// Fuzzing the CBOR message codec (src/wire/messages.ts): for random bytes, generated CBOR (maps with the
// schema's keys and every forbidden feature), mutated valid messages and every prefix of valid messages,
// decodeClientMessage / decodeServerMessage either return a message that re-encodes (in the encoding they
// report) to bytes that decode to the same message, or throw a WireError that is not an internal failure.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { equalBytes } from '../../src/util/bytes.ts';
import { WireError } from '../../src/wire/errors.ts';
import {
  decodeClientMessage,
  decodeServerMessage,
  encodeClientMessage,
  encodeServerMessage,
  type ByteEncoding,
  type ClientMessage,
  type ServerMessage,
} from '../../src/wire/messages.ts';
import { cborBytes, cborConcat, cborHead, cborItem, cborText } from './cbor-gen.ts';
import { FUZZ_SEED, fuzzParams, fuzzTimeout } from './config.ts';
import { expectBoundedHeap, outcome } from './harness.ts';
import { bytes, hexPreview, mutated, prefixes } from './mutate.ts';

const DECODE_CODES = /^WIRE_(DECODE|UNKNOWN_TYPE|MISSING_FIELD|BAD_FIELD|INT_RANGE)$/;

type Message = ClientMessage | ServerMessage;

function sameValue(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) return a instanceof Uint8Array && b instanceof Uint8Array && equalBytes(a, b);
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameValue(x, b[i]));
  }
  return Object.is(a, b);
}

function sameMessage(a: Message, b: Message): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return sameValue(ka, kb) && ka.every((k) => sameValue((a as unknown as Record<string, unknown>)[k], (b as unknown as Record<string, unknown>)[k]));
}

const sides = {
  client: {
    decode: decodeClientMessage,
    encode: (m: Message, enc: ByteEncoding) => encodeClientMessage(m as ClientMessage, enc),
  },
  server: {
    decode: decodeServerMessage,
    encode: (m: Message, enc: ByteEncoding) => encodeServerMessage(m as ServerMessage, enc),
  },
} as const;

/**
 * The contract on one input, for both directions: a typed, non-internal WireError, or a message whose
 * re-encoding decodes to the same message in the same encoding. Returns how many sides accepted it.
 */
function checkDecode(input: Uint8Array): number {
  let accepted = 0;
  for (const [side, codec] of Object.entries(sides)) {
    const r = outcome(() => codec.decode(input), WireError, DECODE_CODES);
    if (!r.ok) {
      if (r.error.detail === 'internal') throw new Error(`${side} decoder failed internally on ${hexPreview(input)}`, { cause: r.error.cause });
      if (r.error.code === 'WIRE_DECODE' && r.error.detail === undefined) throw new Error(`WIRE_DECODE without a detail: ${r.error.message}`);
      continue;
    }
    accepted++;
    const { message, encoding } = r.value;
    // Re-encoding a decoded message must work (the decoder only yields encodable messages) ...
    const again = codec.encode(message, encoding);
    // ... and decode to the same message, reporting the same encoding when a byte field is present.
    const back = codec.decode(again);
    if (!sameMessage(back.message, message)) throw new Error(`${side}: re-encoded message decodes differently; input ${hexPreview(input)}`);
    if (back.encoding !== encoding && encoding === 'bstr') throw new Error(`${side}: encoding changed from bstr to ${back.encoding}`);
  }
  return accepted;
}

// --- valid messages ---------------------------------------------------------------------------------------

const id = fc.oneof(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 2 ** 32 + 5 }), fc.constantFrom(2 ** 53 - 1, 0));
const payload = fc.oneof({ weight: 5, arbitrary: bytes(60) }, { weight: 1, arbitrary: bytes(600) });
const nonce = bytes(32, 32);

const clientMessage: fc.Arbitrary<ClientMessage> = fc.oneof(
  fc.constant({ type: 'RequestAttestation' as const }),
  fc.constant({ type: 'GetControlNonce' as const }),
  fc.record({ type: fc.constantFrom('Data' as const, 'OpenStream' as const, 'StreamData' as const), id, payload }),
  fc.record({ type: fc.constant('StreamClose' as const), id, half: fc.constantFrom('Write' as const, 'Both' as const) }),
  fc.record({ type: fc.constant('Control' as const), payload, signature: bytes(64, 64) }),
);

const serverMessage: fc.Arbitrary<ServerMessage> = fc.oneof(
  fc.record({ type: fc.constant('Attestation' as const), data: payload, control_nonce: nonce }),
  fc.record({ type: fc.constant('Attestation' as const), data: payload, control_nonce: nonce, features: fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 }) }),
  fc.record({ type: fc.constantFrom('Data' as const, 'StreamData' as const), id, payload }),
  fc.record({ type: fc.constant('Error' as const), id, message: fc.string({ maxLength: 30, unit: 'grapheme' }) }),
  fc.record({ type: fc.constant('StreamClose' as const), id }),
  fc.record({ type: fc.constant('ControlNonce' as const), nonce }),
  fc.record({ type: fc.constant('ControlResult' as const), success: fc.boolean(), message: fc.string({ maxLength: 30 }) }),
);

const encoding = fc.constantFrom<ByteEncoding>('array', 'bstr');

/** Encoded valid messages of both directions, in both encodings, with the decoder of their direction. */
const validTagged: fc.Arbitrary<{ bytes: Uint8Array; decode: (b: Uint8Array) => unknown }> = fc.oneof(
  fc.tuple(clientMessage, encoding).map(([m, e]) => ({ bytes: encodeClientMessage(m, e), decode: decodeClientMessage })),
  fc.tuple(serverMessage, encoding).map(([m, e]) => ({ bytes: encodeServerMessage(m, e), decode: decodeServerMessage })),
);
const validEncoded: fc.Arbitrary<Uint8Array> = validTagged.map((v) => v.bytes);

const KEYS = ['type', 'id', 'payload', 'half', 'signature', 'data', 'control_nonce', 'features', 'message', 'success', 'nonce', 'extra'];
const TEXTS = [
  'RequestAttestation', 'GetControlNonce', 'Data', 'OpenStream', 'StreamData', 'StreamClose', 'Control',
  'Attestation', 'Error', 'ControlNonce', 'ControlResult', 'Write', 'Both', 'bstr',
];
const randomItem = cborItem({ keys: KEYS, texts: TEXTS, maxDepth: 3 });
const byteField = fc.oneof(
  bytes(40).map((b) => cborConcat([cborHead(4, b.length), ...Array.from(b, (v) => cborHead(0, v))])),
  bytes(40).map(cborBytes),
);
const nonceField = fc.oneof(
  bytes(32, 32).map((b) => cborConcat([cborHead(4, 32), ...Array.from(b, (v) => cborHead(0, v))])),
  bytes(32, 32).map(cborBytes),
);
/** A well-typed value for each schema key (the decoder then gets past the type checks). */
const TYPED: Record<string, fc.Arbitrary<Uint8Array>> = {
  type: fc.constantFrom(...TEXTS).map(cborText),
  id: fc.oneof(fc.nat(), fc.constantFrom(2 ** 53 - 1, 2 ** 53)).map((n) => cborHead(0, n)),
  payload: byteField,
  signature: byteField,
  data: byteField,
  control_nonce: nonceField,
  nonce: nonceField,
  half: fc.constantFrom('Write', 'Both', 'Read').map(cborText),
  features: fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }).map((ts) => cborConcat([cborHead(4, ts.length), ...ts.map(cborText)])),
  message: fc.string({ maxLength: 20 }).map(cborText),
  success: fc.constantFrom(Uint8Array.of(0xf4), Uint8Array.of(0xf5)),
  extra: randomItem,
};
/** A message-shaped map: a random subset of the schema's keys in random order, values mostly well-typed. */
const schemaMap: fc.Arbitrary<Uint8Array> = fc
  .tuple(
    fc.shuffledSubarray(
      KEYS.map((k) => fc.tuple(fc.constant(cborText(k)), fc.oneof({ weight: 6, arbitrary: TYPED[k]! }, { weight: 1, arbitrary: randomItem }))),
      { minLength: 1 },
    ),
    fc.integer({ min: -6, max: 1 }),
  )
  .chain(([entryArbs, skew]) =>
    fc.tuple(...entryArbs).map((entries) => cborConcat([cborHead(5, Math.max(0, entries.length + (skew === 1 ? 1 : 0))), ...entries.flat()])),
  );
/** Generated CBOR: message-shaped maps and arbitrary items (every forbidden feature included). */
const generated = fc.oneof({ weight: 3, arbitrary: schemaMap }, { weight: 1, arbitrary: randomItem });

describe('message codec under fuzzing', () => {
  it(
    'round-trips every valid message and re-decodes what it decodes',
    () => {
      fc.assert(
        fc.property(clientMessage, serverMessage, encoding, (cm, sm, enc) => {
          const c = decodeClientMessage(encodeClientMessage(cm, enc));
          const s = decodeServerMessage(encodeServerMessage(sm, enc));
          if (!sameMessage(c.message, cm) || !sameMessage(s.message, sm)) throw new Error('decode(encode(m)) differs from m');
          checkDecode(encodeClientMessage(cm, enc));
          checkDecode(encodeServerMessage(sm, enc));
        }),
        fuzzParams(0.5),
      );
    },
    fuzzTimeout(),
  );

  it(
    'answers random bytes with a message or a WireError, nothing else',
    () => {
      fc.assert(
        fc.property(bytes(120), (input) => {
          checkDecode(input);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  it(
    'answers generated CBOR (schema keys, tags, floats, indefinite lengths, lying lengths) with a message or a WireError',
    () => {
      let accepted = 0;
      fc.assert(
        fc.property(generated, (input) => {
          accepted += checkDecode(input);
        }),
        fuzzParams(),
      );
      // The generator must reach the decoder's success path, not only its first rejection.
      expect(accepted).toBeGreaterThan(fuzzParams().numRuns! / 100);
    },
    fuzzTimeout(),
  );

  it(
    'answers mutated valid messages (flips, inserts, deletes, corrupted heads and lengths, splices) with a message or a WireError',
    () => {
      fc.assert(
        fc.property(mutated(validEncoded), (input) => {
          checkDecode(input);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  it(
    'reports every proper prefix of a valid message as truncated',
    () => {
      fc.assert(
        fc.property(validTagged, ({ bytes: full, decode }) => {
          // (the other direction's decoder may reject a prefix earlier, as an unknown type: covered above)
          for (const prefix of prefixes(full)) {
            const r = outcome(() => decode(prefix), WireError, /^WIRE_DECODE$/);
            if (r.ok || r.error.detail !== 'truncated') {
              throw new Error(`prefix ${hexPreview(prefix)}: expected WIRE_DECODE truncated, got ${r.ok ? 'a message' : `${r.error.code} ${r.error.detail}`}`);
            }
          }
        }),
        fuzzParams(0.1),
      );
    },
    fuzzTimeout(),
  );

  it(
    'retains no memory across ten thousand hostile decodes',
    async () => {
      const input = fc.oneof(bytes(120), generated, mutated(validEncoded));
      await expectBoundedHeap((pass) => {
        fc.assert(
          fc.property(input, (b) => {
            checkDecode(b);
          }),
          { ...fuzzParams(0.5), seed: FUZZ_SEED + pass },
        );
      });
    },
    fuzzTimeout(),
  );
});

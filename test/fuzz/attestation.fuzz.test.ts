// Fuzzing the attestation document parser (src/attestation/document.ts over the strict CBOR decoder in
// cbor.ts) and the NSM reply decoder: random bytes, generated CBOR, documents built from random fields
// (valid and slightly out of bounds), mutations of the real Nitro documents and every prefix of one. Each call
// either returns a document that agrees with an independent decode (cbor-x) and respects every documented
// bound, or throws an AttestationError of the parsing family — never another exception.
import { decode as cborxDecode } from 'cbor-x';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  MAX_CABUNDLE_ENTRIES,
  MAX_CERT_BYTES,
  MAX_NONCE_BYTES,
  MAX_PCRS,
  MAX_PUBLIC_KEY_BYTES,
  MAX_TIMESTAMP_MS,
  MAX_USER_DATA_BYTES,
  parseAttestationDocument,
  type AttestationDocument,
  type ParsedAttestation,
} from '../../src/attestation/document.ts';
import { AttestationError } from '../../src/attestation/errors.ts';
import { decodeNsmResponse, encodeCbor, encodeNsmResponse } from '../../src/attestation/nsm-messages.ts';
import { equalBytes } from '../../src/util/bytes.ts';
import { fixtureBytes, nitroIndex } from '../attestation/fixtures.ts';
import { cborItem } from './cbor-gen.ts';
import { FUZZ_SEED, fuzzParams, fuzzTimeout } from './config.ts';
import { expectBoundedHeap, outcome } from './harness.ts';
import { bytes, hexPreview, mutated, prefixes } from './mutate.ts';

const PARSE_CODES = /^ATTESTATION_(MALFORMED|STRUCTURE)$/;
const NSM_CODES = /^NSM_ERROR$/;

const REAL = nitroIndex.documents.map(fixtureBytes);

function asBytes(v: unknown): Uint8Array | null {
  return v instanceof Uint8Array ? v : null;
}

/** The invariants of a successful parse, checked against cbor-x's reading of the same bytes. */
function checkParsed(input: Uint8Array, parsed: ParsedAttestation): void {
  const { cose, document: doc } = parsed;
  const top = cborxDecode(cose.tagged ? input.subarray(1) : input) as unknown[];
  if (!Array.isArray(top) || top.length !== 4) throw new Error('cbor-x does not see a 4-item COSE_Sign1');
  if (!equalBytes(asBytes(top[0]) ?? new Uint8Array(1), cose.protectedBytes)) throw new Error('protected header bytes differ from cbor-x');
  if (!equalBytes(asBytes(top[2]) ?? new Uint8Array(0), cose.payload)) throw new Error('payload bytes differ from cbor-x');
  if (!equalBytes(asBytes(top[3]) ?? new Uint8Array(0), cose.signature)) throw new Error('signature bytes differ from cbor-x');
  if (cose.alg !== -35 || cose.signature.length !== 96) throw new Error('alg/signature outside ES384');
  checkBounds(doc);
  const payload = cborxDecode(cose.payload) as Record<string, unknown> | Map<string, unknown>;
  const get = (k: string): unknown => (payload instanceof Map ? payload.get(k) : (payload as Record<string, unknown>)[k]);
  if (get('module_id') !== doc.moduleId) throw new Error('module_id differs from cbor-x');
  if (Number(get('timestamp')) !== doc.timestamp) throw new Error('timestamp differs from cbor-x');
  if (!equalBytes(asBytes(get('certificate')) ?? new Uint8Array(0), doc.certificate)) throw new Error('certificate differs from cbor-x');
}

function checkBounds(doc: AttestationDocument): void {
  const fail = (what: string): never => {
    throw new Error(`parsed document breaks its bounds: ${what}`);
  };
  if (typeof doc.moduleId !== 'string' || doc.moduleId.length === 0) fail('module_id');
  if (doc.digest !== 'SHA384') fail('digest');
  if (!Number.isSafeInteger(doc.timestamp) || doc.timestamp <= 0 || doc.timestamp > MAX_TIMESTAMP_MS) fail('timestamp');
  if (doc.pcrs.size < 1 || doc.pcrs.size > MAX_PCRS) fail('pcr count');
  for (const [i, v] of doc.pcrs) {
    if (!Number.isInteger(i) || i < 0 || i >= MAX_PCRS) fail(`pcr index ${i}`);
    if (![32, 48, 64].includes(v.length)) fail(`pcr ${i} length`);
  }
  if (doc.certificate.length < 1 || doc.certificate.length > MAX_CERT_BYTES) fail('certificate');
  if (doc.cabundle.length < 1 || doc.cabundle.length > MAX_CABUNDLE_ENTRIES) fail('cabundle count');
  for (const c of doc.cabundle) if (!(c instanceof Uint8Array) || c.length < 1 || c.length > MAX_CERT_BYTES) fail('cabundle entry');
  if (doc.publicKey !== null && (doc.publicKey.length < 1 || doc.publicKey.length > MAX_PUBLIC_KEY_BYTES)) fail('public_key');
  if (doc.userData !== null && doc.userData.length > MAX_USER_DATA_BYTES) fail('user_data');
  if (doc.nonce !== null && doc.nonce.length > MAX_NONCE_BYTES) fail('nonce');
}

function checkDocument(input: Uint8Array): boolean {
  const r = outcome(() => parseAttestationDocument(input), AttestationError, PARSE_CODES);
  if (r.ok) checkParsed(input, r.value);
  // The lenient option changes one rule only; it must not open a path to other exceptions.
  outcome(() => parseAttestationDocument(input, { allowEmptyPublicKey: true }), AttestationError, PARSE_CODES);
  return r.ok;
}

// --- generated documents ----------------------------------------------------------------------------------

const PROTECTED = Uint8Array.of(0xa1, 0x01, 0x38, 0x22); // {1: -35}

/** Sizes mostly inside the bounds, sometimes one step outside. */
const sized = (min: number, max: number, typical: number): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min, max: Math.min(max, typical) }) },
    { weight: 1, arbitrary: fc.constantFrom(min, max, Math.max(0, min - 1), max + 1) },
  ).map((n) => new Uint8Array(n).fill(n & 0xff));

interface DocFields {
  module_id: unknown;
  digest: unknown;
  timestamp: unknown;
  pcrs: Map<unknown, unknown>;
  certificate: unknown;
  cabundle: unknown;
  public_key: unknown;
  user_data: unknown;
  nonce: unknown;
  extra: [string, unknown][];
}

const pcrValue = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(32, 48, 64) }, { weight: 1, arbitrary: fc.constantFrom(0, 47, 49, 96) }).map((n) => new Uint8Array(n).fill(1));
const pcrIndex = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: 31 }) }, { weight: 1, arbitrary: fc.constantFrom(-1, 32, 255, '0') });

const docFields: fc.Arbitrary<DocFields> = fc.record({
  module_id: fc.oneof({ weight: 8, arbitrary: fc.string({ minLength: 1, maxLength: 40 }) }, { weight: 1, arbitrary: fc.constantFrom('', 5, null) }),
  digest: fc.oneof({ weight: 8, arbitrary: fc.constant('SHA384') }, { weight: 1, arbitrary: fc.constantFrom('SHA256', 'sha384', 384) }),
  timestamp: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 2 ** 48 }) }, { weight: 1, arbitrary: fc.constantFrom(0, -5, MAX_TIMESTAMP_MS, MAX_TIMESTAMP_MS + 1, 2 ** 53 - 1, 'now') }),
  pcrs: fc
    .oneof(
      { weight: 4, arbitrary: fc.array(fc.tuple(fc.integer({ min: 0, max: 31 }), fc.constantFrom(32, 48, 64).map((n) => new Uint8Array(n).fill(1))), { minLength: 1, maxLength: 16 }) },
      { weight: 1, arbitrary: fc.array(fc.tuple(pcrIndex, pcrValue), { minLength: 0, maxLength: 33 }) },
    )
    .map((e) => new Map<unknown, unknown>(e)),
  certificate: sized(1, MAX_CERT_BYTES, 400),
  cabundle: fc.oneof({ weight: 8, arbitrary: fc.array(sized(1, MAX_CERT_BYTES, 300), { minLength: 1, maxLength: 4 }) }, { weight: 1, arbitrary: fc.constantFrom([], 'x') }),
  public_key: fc.oneof(fc.constant(null), sized(1, MAX_PUBLIC_KEY_BYTES, 100), fc.constant(new Uint8Array(0))),
  user_data: fc.oneof(fc.constant(null), sized(0, MAX_USER_DATA_BYTES, 64)),
  nonce: fc.oneof(fc.constant(null), sized(0, MAX_NONCE_BYTES, 64)),
  extra: fc.array(fc.tuple(fc.constantFrom('extra', 'module_id2', 'x'), fc.constantFrom(1, 'a', null)), { maxLength: 2 }),
});

const KEY_ORDER = ['module_id', 'digest', 'timestamp', 'pcrs', 'certificate', 'cabundle', 'public_key', 'user_data', 'nonce'] as const;

/** A COSE_Sign1 document around a payload built from `f` (fields in the NSM's order; `drop` omits one). */
function buildDocument(f: DocFields, drop: number, tagged: boolean, sigLen: number): Uint8Array {
  const payload = new Map<string, unknown>();
  KEY_ORDER.forEach((k, i) => {
    const v = f[k];
    // cbor-x writes integers ≥ 2^32 as floats unless given a BigInt (the NSM writes a u64)
    if (i !== drop) payload.set(k, typeof v === 'number' && Number.isInteger(v) && v > 0xffffffff ? BigInt(v) : v);
  });
  for (const [k, v] of f.extra) if (!payload.has(k)) payload.set(k, v);
  const doc = encodeCbor([PROTECTED, new Map(), encodeCbor(payload), new Uint8Array(sigLen)]);
  return tagged ? Uint8Array.of(0xd2, ...doc) : doc;
}

/** The parser's rules (WIRE.md §6 and document.ts), restated over the generated fields. */
function respectsRules(f: DocFields, drop: number, sigLen: number): boolean {
  const present = (i: number) => drop !== i;
  const len = (v: unknown, min: number, max: number) => v instanceof Uint8Array && v.length >= min && v.length <= max;
  const optional = (i: number, v: unknown, min: number, max: number) => !present(i) || v === null || len(v, min, max);
  return (
    sigLen === 96 &&
    [0, 1, 2, 3, 4, 5].every(present) &&
    typeof f.module_id === 'string' && f.module_id.length > 0 &&
    f.digest === 'SHA384' &&
    typeof f.timestamp === 'number' && Number.isInteger(f.timestamp) && f.timestamp > 0 && f.timestamp <= MAX_TIMESTAMP_MS &&
    f.pcrs.size >= 1 && f.pcrs.size <= MAX_PCRS &&
    [...f.pcrs].every(([i, v]) => typeof i === 'number' && i >= 0 && i < MAX_PCRS && v instanceof Uint8Array && [32, 48, 64].includes(v.length)) &&
    len(f.certificate, 1, MAX_CERT_BYTES) &&
    Array.isArray(f.cabundle) && f.cabundle.length >= 1 && f.cabundle.length <= MAX_CABUNDLE_ENTRIES &&
    (f.cabundle as unknown[]).every((c) => len(c, 1, MAX_CERT_BYTES)) &&
    optional(6, f.public_key, 1, MAX_PUBLIC_KEY_BYTES) &&
    optional(7, f.user_data, 0, MAX_USER_DATA_BYTES) &&
    optional(8, f.nonce, 0, MAX_NONCE_BYTES)
  );
}

const generatedCase = fc.tuple(
  docFields,
  fc.oneof({ weight: 6, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 8 }) }),
  fc.boolean(),
  fc.constantFrom(96, 96, 96, 95, 0),
);
const generatedDocument = generatedCase.map(([f, drop, tagged, sig]) => buildDocument(f, drop, tagged, sig));

/** Real and generated documents: the valid inputs that mutations start from. */
const validDocument = fc.oneof(fc.constantFrom(...REAL), generatedDocument);

describe('attestation document parser under fuzzing', () => {
  it(
    'parses documents built from random fields exactly when they respect the bounds, and agrees with cbor-x',
    () => {
      let accepted = 0;
      fc.assert(
        fc.property(generatedCase, ([f, drop, tagged, sig]) => {
          const ok = checkDocument(buildDocument(f, drop, tagged, sig));
          if (ok !== respectsRules(f, drop, sig)) throw new Error(`the parser ${ok ? 'accepted' : 'rejected'} a document that ${ok ? 'breaks' : 'respects'} the rules`);
          if (ok) accepted++;
        }),
        fuzzParams(0.5),
      );
      expect(accepted).toBeGreaterThan(fuzzParams(0.5).numRuns! / 20);
    },
    fuzzTimeout(),
  );

  it(
    'answers random bytes and generated CBOR with a document or an AttestationError, nothing else',
    () => {
      const tagged = (arb: fc.Arbitrary<Uint8Array>) => fc.tuple(fc.boolean(), arb).map(([t, b]) => (t ? Uint8Array.of(0xd2, ...b) : b));
      const input = fc.oneof(bytes(200), tagged(cborItem({ keys: [...KEY_ORDER], texts: ['SHA384'], blobs: fc.constantFrom(PROTECTED, encodeCbor(new Map([[1, -35]]))) })));
      fc.assert(
        fc.property(input, (b) => {
          checkDocument(b);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  it(
    'answers mutated real and generated documents with a document or an AttestationError, nothing else',
    () => {
      fc.assert(
        fc.property(mutated(validDocument), (b) => {
          checkDocument(b);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  it('reports every proper prefix of a real document, and of its payload, as malformed', () => {
    const doc = REAL[0]!;
    const payload = parseAttestationDocument(REAL[1]!).cose.payload;
    for (const prefix of prefixes(doc)) {
      const r = outcome(() => parseAttestationDocument(prefix), AttestationError, /^ATTESTATION_MALFORMED$/);
      if (r.ok) throw new Error(`a ${prefix.length}-byte prefix parsed`);
    }
    for (const prefix of prefixes(payload)) {
      const cut = encodeCbor([PROTECTED, new Map(), prefix, new Uint8Array(96)]);
      const r = outcome(() => parseAttestationDocument(cut), AttestationError, PARSE_CODES);
      if (r.ok) throw new Error(`a ${prefix.length}-byte payload prefix parsed: ${hexPreview(prefix)}`);
      if (prefix.length > 0 && r.error.code !== 'ATTESTATION_MALFORMED') throw new Error(`payload prefix: expected ATTESTATION_MALFORMED, got ${r.error.code}`);
    }
    expect(doc.length + payload.length).toBeGreaterThan(8000);
  });

  it(
    'answers NSM replies (random, generated, mutated) with a response or an AttestationError',
    () => {
      const valid = fc.oneof(
        fc.constantFrom(...REAL).map((document) => encodeNsmResponse({ kind: 'Attestation', document })),
        bytes(64).map((random) => encodeNsmResponse({ kind: 'GetRandom', random })),
        fc.constantFrom('InvalidArgument', 'InputTooLarge', 'InternalError').map((code) => encodeNsmResponse({ kind: 'Error', code })),
      );
      const input = fc.oneof(bytes(100), cborItem({ keys: ['Attestation', 'GetRandom', 'Error', 'document', 'random'] }), mutated(valid));
      fc.assert(
        fc.property(input, (b) => {
          const r = outcome(() => decodeNsmResponse(b), AttestationError, NSM_CODES);
          if (r.ok && r.value.kind === 'Attestation' && !(r.value.document instanceof Uint8Array)) throw new Error('document is not bytes');
        }),
        fuzzParams(0.5),
      );
    },
    fuzzTimeout(),
  );

  it(
    'retains no memory across ten thousand hostile documents',
    async () => {
      await expectBoundedHeap((pass) => {
        fc.assert(
          fc.property(fc.oneof(bytes(200), mutated(validDocument)), (b) => {
            checkDocument(b);
          }),
          { ...fuzzParams(0.5), seed: FUZZ_SEED + pass },
        );
      });
    },
    fuzzTimeout(),
  );
});

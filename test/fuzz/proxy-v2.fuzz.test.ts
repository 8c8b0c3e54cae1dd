// Fuzzing the PROXY protocol v2 parser (src/transport/proxy-v2.ts): random bytes, headers built from random
// fields (every version/command/family/protocol nibble, lengths, TLVs), encoded real headers, mutations of
// them and every prefix. parseProxyV2 must return null (a valid prefix), a result, or throw a
// ProxyProtocolError; and it must be consistent as bytes arrive: once it answers (result or error), more
// bytes never change the answer, and `consumed` bytes alone give the same result.
import { isIPv4, isIPv6 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeProxyV2, parseProxyV2, PROXY_V2_SIGNATURE, ProxyProtocolError, type ProxyParseResult } from '../../src/transport/proxy-v2.ts';
import { FUZZ_SEED, fuzzParams, fuzzTimeout } from './config.ts';
import { expectBoundedHeap, outcome, type Outcome } from './harness.ts';
import { bytes, hexPreview, mutated, prefixes } from './mutate.ts';

const PARSE_CODES = /^PROXY_(BAD_SIGNATURE|BAD_VERSION|BAD_COMMAND|BAD_FAMILY|TOO_LONG|TRUNCATED_ADDRESS)$/;

function parse(b: Uint8Array, maxLength?: number): Outcome<ProxyParseResult | null, ProxyProtocolError> {
  return outcome(() => parseProxyV2(b, maxLength === undefined ? {} : { maxLength }), ProxyProtocolError, PARSE_CODES);
}

function sameResult(a: ProxyParseResult, b: ProxyParseResult): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** WHATWG URL's IPv6 serializer is RFC 5952 (except for IPv4-mapped addresses, which it writes in hex). */
function canonicalV6(addr: string): string {
  return new URL(`http://[${addr}]/`).hostname.slice(1, -1);
}

/** One text per address: IPv4 for IPv4 and IPv4-mapped IPv6, canonical IPv6 otherwise (hex-mapped included). */
function normAddress(addr: string): string {
  if (isIPv4(addr)) return addr;
  const c = canonicalV6(addr);
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(c);
  if (m === null) return c;
  const hi = parseInt(m[1]!, 16);
  const lo = parseInt(m[2]!, 16);
  return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff].join('.');
}
const normEnd = (e: { address: string; port: number }) => `${normAddress(e.address)} ${e.port}`;

function checkResult(input: Uint8Array, r: ProxyParseResult, maxLength: number): void {
  if (!Number.isInteger(r.consumed) || r.consumed < 16 || r.consumed > input.length || r.consumed > maxLength) {
    throw new Error(`consumed ${r.consumed} outside 16..min(${input.length}, ${maxLength})`);
  }
  if (r.command === 'LOCAL' && (r.source !== undefined || r.destination !== undefined)) throw new Error('LOCAL reported addresses');
  for (const end of [r.source, r.destination]) {
    if (end === undefined) continue;
    if (!Number.isInteger(end.port) || end.port < 0 || end.port > 0xffff) throw new Error(`port ${end.port}`);
    if (end.family === 'IPv4' ? !isIPv4(end.address) : !isIPv6(end.address)) throw new Error(`not an ${end.family} address: ${end.address}`);
    if (end.family === 'IPv6' && !end.address.startsWith('::ffff:') && canonicalV6(end.address) !== end.address) {
      throw new Error(`IPv6 text is not RFC 5952: ${end.address} (canonical ${canonicalV6(end.address)})`);
    }
  }
  // The header alone parses to the same result (the parser never looks past `consumed`).
  const alone = parseProxyV2(input.subarray(0, r.consumed), { maxLength });
  if (alone === null || !sameResult(alone, r)) throw new Error('the header alone parses differently');
  // Re-encoding what was reported and parsing that gives the same endpoints.
  if (r.source !== undefined && r.destination !== undefined) {
    const again = parseProxyV2(encodeProxyV2({ source: r.source, destination: r.destination }));
    // (encodeProxyV2 sends IPv4-mapped pairs as IPv4: compare normalized addresses)
    if (again === null || normEnd(again.source!) !== normEnd(r.source) || normEnd(again.destination!) !== normEnd(r.destination)) {
      throw new Error(`re-encoded endpoints differ: ${JSON.stringify(r)} → ${JSON.stringify(again)}`);
    }
  }
}

/** The full contract on one input, including every prefix being consistent with the answer. */
function check(input: Uint8Array, maxLength = 4096): void {
  const r = parse(input, maxLength);
  if (r.ok && r.value !== null) checkResult(input, r.value, maxLength);
  // Incremental consistency: the first prefix that answers gives the final answer. Checked at every length
  // where the parser can decide (inside the 16 fixed bytes, around the declared end) and a few others.
  const declared = input.length >= 16 ? 16 + ((input[14]! << 8) | input[15]!) : 0;
  const points = new Set<number>();
  for (let n = 0; n <= Math.min(input.length, 17); n++) points.add(n);
  for (const n of [declared - 1, declared, declared + 1, input.length, (input.length * 7) >> 3, input.length >> 1, (input.length * 3) >> 2]) {
    if (n >= 0 && n <= input.length) points.add(n);
  }
  let decided: Outcome<ProxyParseResult | null, ProxyProtocolError> | null = null;
  for (const n of [...points].sort((a, b) => a - b)) {
    const p = parse(input.subarray(0, n), maxLength);
    if (decided === null) {
      if (!p.ok || p.value !== null) decided = p;
      continue;
    }
    if (decided.ok !== p.ok) throw new Error(`prefix ${n} of ${hexPreview(input)} changed the answer`);
    if (!decided.ok && !p.ok && decided.error.code !== p.error.code) throw new Error(`prefix ${n}: ${decided.error.code} became ${p.error.code}`);
    if (decided.ok && p.ok && (p.value === null || !sameResult(decided.value!, p.value))) throw new Error(`prefix ${n}: result changed`);
  }
}

// --- generators ----------------------------------------------------------------------------------------------

const port = fc.integer({ min: 0, max: 0xffff });
const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join('.'));
const v6 = fc.oneof(
  fc.ipV6(),
  fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff, 0xabc), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':')),
);
const endpoint = fc.record({ address: fc.oneof(v4, v6, v4.map((a) => `::ffff:${a}`)), port });
const encoded = fc.oneof(fc.constant(encodeProxyV2(null)), fc.tuple(endpoint, endpoint).map(([source, destination]) => encodeProxyV2({ source, destination })));

/** A header from raw fields: any nibbles, a length that may disagree with the addresses, TLV bytes after. */
const rawHeader = fc
  .tuple(
    fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0x20, 0x21) }, { weight: 1, arbitrary: fc.nat(255) }),
    fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0x00, 0x11, 0x21, 0x31, 0x12, 0x22) }, { weight: 1, arbitrary: fc.nat(255) }),
    fc.oneof(fc.constantFrom(0, 12, 36, 216), bytes(300).map((b) => b.length)),
    fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }) }),
    fc.nat(255),
  )
  .map(([verCmd, famProto, body, skew, fill]) => {
    const len = Math.max(0, body + skew);
    const out = new Uint8Array(16 + body).fill(fill);
    out.set(PROXY_V2_SIGNATURE, 0);
    out[12] = verCmd;
    out[13] = famProto;
    out[14] = len >> 8;
    out[15] = len & 0xff;
    for (let i = 16; i < out.length; i++) out[i] = (i * 7 + fill) & 0xff;
    return out;
  });
const withPayload = (arb: fc.Arbitrary<Uint8Array>) => fc.tuple(arb, bytes(20)).map(([h, rest]) => Uint8Array.of(...h, ...rest));
const valid = fc.oneof(withPayload(encoded), withPayload(rawHeader));

describe('PROXY v2 parser under fuzzing', () => {
  it(
    'answers random bytes, and bytes behind a correct signature, with null, a header or a ProxyProtocolError',
    () => {
      const input = fc.oneof(bytes(64), bytes(300).map((b) => Uint8Array.of(...PROXY_V2_SIGNATURE, ...b)));
      fc.assert(
        fc.property(input, fc.constantFrom(4096, 16, 28, 100), (b, max) => {
          check(b, max);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  it(
    'parses headers built from random fields and mutated headers consistently as their bytes arrive',
    () => {
      fc.assert(
        fc.property(fc.oneof(valid, mutated(valid)), (b) => {
          check(b);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  it(
    'reports every endpoint it encodes, and waits (null) on every proper prefix of a valid header',
    () => {
      fc.assert(
        fc.property(endpoint, endpoint, (source, destination) => {
          const header = encodeProxyV2({ source, destination });
          for (const prefix of prefixes(header)) {
            const p = parse(prefix);
            if (!p.ok || p.value !== null) throw new Error(`prefix ${prefix.length}: expected null`);
          }
          const r = parseProxyV2(header);
          expect(r?.consumed).toBe(header.length);
          expect([normEnd(r!.source!), normEnd(r!.destination!)]).toEqual([normEnd(source), normEnd(destination)]);
        }),
        fuzzParams(0.2),
      );
    },
    fuzzTimeout(),
  );

  it(
    'retains no memory across ten thousand hostile headers',
    async () => {
      await expectBoundedHeap((pass) => {
        fc.assert(
          fc.property(fc.oneof(bytes(64), mutated(valid)), (b) => {
            parse(b);
          }),
          { ...fuzzParams(0.5), seed: FUZZ_SEED + pass },
        );
      });
    },
    fuzzTimeout(),
  );
});

// Byte-level input generators shared by the fuzz properties: arbitrary bytes, and mutations of valid inputs
// (bit flips, byte set/insert/delete, truncation, length-field corruption, CBOR head corruption, duplication,
// splice of two valid inputs). Every generator is bounded in size so a single case always runs fast.
import fc from 'fast-check';
import { concatBytes } from '../../src/util/bytes.ts';

/** Arbitrary bytes up to `maxLength`, lengths spread over the whole range (not fast-check's "small" default). */
export function bytes(maxLength: number, minLength = 0): fc.Arbitrary<Uint8Array> {
  return fc.uint8Array({ minLength, maxLength, size: 'max' });
}

/** Bytes a parser treats specially: 0, small ints, CBOR head boundaries, signs, all-ones. */
const INTERESTING_BYTES = [0x00, 0x01, 0x02, 0x0f, 0x10, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1f, 0x20, 0x3f, 0x40, 0x5f, 0x60, 0x7f, 0x80, 0x9f, 0xa0, 0xbf, 0xc0, 0xd2, 0xf4, 0xf5, 0xf6, 0xf7, 0xf9, 0xfb, 0xff];
const byteValue = fc.oneof(fc.constantFrom(...INTERESTING_BYTES), fc.integer({ min: 0, max: 255 }));

/** Values a corrupted length field takes: boundaries of every width and around the frame/message limits. */
const LENGTH_VALUES = [
  0, 1, 2, 15, 16, 17, 23, 24, 31, 32, 33, 47, 48, 255, 256, 4095, 4096, 16383, 16384, 32767, 32768, 65518, 65519, 65535, 65536,
  0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 2 ** 53 - 1, 2 ** 53, 2 ** 64 - 1,
];

export type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'insert'; at: number; values: number[] }
  | { op: 'delete'; at: number; count: number }
  | { op: 'truncate'; at: number }
  | { op: 'length'; at: number; width: 1 | 2 | 4 | 8; value: number; littleEndian: boolean }
  | { op: 'cbor-head'; at: number; info: number }
  | { op: 'duplicate'; at: number; count: number }
  | { op: 'splice'; at: number; from: number };

const pos = fc.nat({ max: 0xffff });

export const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: pos, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: pos, value: byteValue }),
  fc.record({ op: fc.constant('insert' as const), at: pos, values: fc.array(byteValue, { minLength: 1, maxLength: 8 }) }),
  fc.record({ op: fc.constant('delete' as const), at: pos, count: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('truncate' as const), at: pos }),
  fc.record({
    op: fc.constant('length' as const),
    at: pos,
    width: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const),
    value: fc.oneof(fc.constantFrom(...LENGTH_VALUES), fc.nat()),
    littleEndian: fc.boolean(),
  }),
  fc.record({ op: fc.constant('cbor-head' as const), at: pos, info: fc.integer({ min: 0, max: 31 }) }),
  fc.record({ op: fc.constant('duplicate' as const), at: pos, count: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ op: fc.constant('splice' as const), at: pos, from: pos }),
);

function writeUint(b: Uint8Array, at: number, width: number, value: number, littleEndian: boolean): void {
  // value < 2^64; split into bytes without BigInt (precision loss above 2^53 only blurs the low bytes)
  let v = value;
  const out: number[] = [];
  for (let i = 0; i < width; i++) {
    out.push(v % 256);
    v = Math.floor(v / 256);
  }
  if (!littleEndian) out.reverse();
  for (let i = 0; i < width && at + i < b.length; i++) b[at + i] = out[i]!;
}


/**
 * Applies `muts` in order to a copy of `input`. `other` (a second valid input) is the source of splices:
 * input[0..at) ‖ other[from..). Positions wrap modulo the current length.
 */
export function applyMutations(input: Uint8Array, muts: readonly Mutation[], other: Uint8Array = input): Uint8Array {
  let b: Uint8Array = input.slice();
  for (const m of muts) {
    const len = b.length;
    if (m.op === 'insert') {
      const at = m.at % (len + 1);
      b = concatBytes(b.subarray(0, at), Uint8Array.from(m.values), b.subarray(at));
      continue;
    }
    if (m.op === 'splice') {
      const at = m.at % (len + 1);
      const from = other.length === 0 ? 0 : m.from % other.length;
      b = concatBytes(b.subarray(0, at), other.subarray(from));
      continue;
    }
    if (len === 0) continue;
    const at = m.at % len;
    switch (m.op) {
      case 'flip':
        b[at] = b[at]! ^ (1 << m.bit);
        break;
      case 'set':
        b[at] = m.value;
        break;
      case 'delete':
        b = concatBytes(b.subarray(0, at), b.subarray(at + m.count));
        break;
      case 'truncate':
        b = b.slice(0, at);
        break;
      case 'length':
        writeUint(b, at, m.width, m.value, m.littleEndian);
        break;
      case 'cbor-head':
        b[at] = (b[at]! & 0xe0) | m.info;
        break;
      case 'duplicate':
        b = concatBytes(b.subarray(0, at + m.count), b.subarray(at));
        break;
    }
  }
  return b;
}

/** 1–4 mutations of a valid input, spliced (when a splice is drawn) with a second valid input. */
export function mutated(valid: fc.Arbitrary<Uint8Array>, maxMutations = 4): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(valid, valid, fc.array(mutation, { minLength: 1, maxLength: maxMutations }))
    .map(([a, b, muts]) => applyMutations(a, muts, b));
}

/** Splits `input` at the given (wrapped, sorted) cut points: the chunks a transport might deliver. */
export function chunked(input: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  if (input.length === 0) return [];
  const points = [...new Set(cuts.map((c) => c % input.length))].filter((c) => c > 0).sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let start = 0;
  for (const p of points) {
    out.push(input.subarray(start, p));
    start = p;
  }
  out.push(input.subarray(start));
  return out;
}

/** Cut points for chunked(): none (one chunk) up to many (byte-by-byte-ish). */
export const cuts: fc.Arbitrary<number[]> = fc.oneof(
  fc.constant<number[]>([]),
  fc.array(fc.nat({ max: 0xffff }), { maxLength: 8 }),
  fc.array(fc.nat({ max: 0xffff }), { maxLength: 64, size: 'max' }),
);

/** Every proper prefix of `input`, shortest first (the empty one included). */
export function* prefixes(input: Uint8Array): Generator<Uint8Array> {
  for (let n = 0; n < input.length; n++) yield input.subarray(0, n);
}

/** Input bytes as a string for a counterexample message (bounded). */
export function hexPreview(b: Uint8Array, max = 96): string {
  const hex = Buffer.from(b.subarray(0, max)).toString('hex');
  return b.length > max ? `${hex}… (${b.length} bytes)` : hex;
}

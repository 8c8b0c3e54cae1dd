// A generator of raw CBOR items for the decoders' fuzz properties: well-formed items of every major type
// (ints in minimal and non-minimal widths, byte/text strings including invalid UTF-8, arrays, maps) mixed with
// what the strict decoders must refuse (tags, floats, simple values, indefinite lengths, reserved additional
// info, breaks, lying lengths). `keys` steers map keys toward the names a decoder looks up.
import fc from 'fast-check';
import { bytes } from './mutate.ts';
import { concatBytes } from '../../src/util/bytes.ts';

/** A CBOR head of major type `major` with argument n; `width` forces a (possibly non-minimal) encoding. */
export function cborHead(major: number, n: number, width?: 0 | 1 | 2 | 4 | 8): Uint8Array {
  const mt = major << 5;
  const w = width ?? (n < 24 ? 0 : n < 0x100 ? 1 : n < 0x10000 ? 2 : n < 0x100000000 ? 4 : 8);
  if (w === 0) return Uint8Array.of(mt | n);
  const out = new Uint8Array(1 + w);
  out[0] = mt | (w === 1 ? 24 : w === 2 ? 25 : w === 4 ? 26 : 27);
  let v = n;
  for (let i = w; i >= 1; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return out;
}

export const cborConcat = (parts: readonly Uint8Array[]): Uint8Array => concatBytes(...parts);

const te = new TextEncoder();
export const cborText = (s: string): Uint8Array => {
  const raw = te.encode(s);
  return cborConcat([cborHead(3, raw.length), raw]);
};
export const cborBytes = (b: Uint8Array): Uint8Array => cborConcat([cborHead(2, b.length), b]);

const intValue = fc.oneof(
  fc.integer({ min: 0, max: 23 }),
  fc.integer({ min: 0, max: 255 }),
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.constantFrom(24, 255, 256, 65535, 65536, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 64 - 2 ** 11),
);
const width = fc.option(fc.constantFrom(0 as const, 1 as const, 2 as const, 4 as const, 8 as const), { nil: undefined, freq: 4 });

function fitWidth(n: number, w: 0 | 1 | 2 | 4 | 8 | undefined): 0 | 1 | 2 | 4 | 8 | undefined {
  if (w === undefined) return undefined;
  const cap = w === 0 ? 23 : w === 8 ? Infinity : 2 ** (8 * w) - 1;
  return n <= cap ? w : undefined;
}

const uintItem = fc.tuple(fc.constantFrom(0, 1), intValue, width).map(([major, n, w]) => cborHead(major, n, fitWidth(n, w)));

/** Invalid and lone UTF-8 sequences mixed into text strings. */
const badUtf8 = fc.constantFrom(Uint8Array.of(0xff), Uint8Array.of(0xc0, 0x80), Uint8Array.of(0xed, 0xa0, 0x80), Uint8Array.of(0xe2, 0x82), Uint8Array.of(0xf4, 0x90, 0x80, 0x80));
const textItem = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 12 }).map(cborText) },
  { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 4 }), badUtf8).map(([s, bad]) => { const raw = cborConcat([te.encode(s), bad]); return cborConcat([cborHead(3, raw.length), raw]); }) },
);
const bytesItem = bytes(40).map(cborBytes);

/** Items a strict decoder must refuse (or, for bools/null, may accept). */
const oddItem = fc.oneof(
  fc.constantFrom(
    Uint8Array.of(0xf4), // false
    Uint8Array.of(0xf5), // true
    Uint8Array.of(0xf6), // null
    Uint8Array.of(0xf7), // undefined
    Uint8Array.of(0xf0), // simple(16)
    Uint8Array.of(0xf8, 0x20), // simple(32)
    Uint8Array.of(0xf9, 0x3c, 0x00), // half float 1.0
    Uint8Array.of(0xfa, 0x3f, 0x80, 0x00, 0x00), // float 1.0
    Uint8Array.of(0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0), // double 1.0
    Uint8Array.of(0xff), // break
    Uint8Array.of(0x5f, 0x41, 0x00, 0xff), // indefinite byte string
    Uint8Array.of(0x7f, 0x61, 0x61, 0xff), // indefinite text
    Uint8Array.of(0x9f, 0x01, 0xff), // indefinite array
    Uint8Array.of(0xbf, 0x61, 0x61, 0x01, 0xff), // indefinite map
    Uint8Array.of(0x1c), // reserved additional info
    Uint8Array.of(0x3d),
    Uint8Array.of(0x5e),
    Uint8Array.of(0xd2, 0x40), // tag 18
    Uint8Array.of(0xc1, 0x1a, 0, 0, 0, 0), // tag 1
    Uint8Array.of(0xd8, 0x40, 0x40), // tag 64
  ),
  // a length head that lies about what follows
  fc.tuple(fc.constantFrom(2, 3, 4, 5), intValue, width).map(([major, n, w]) => cborHead(major, n, fitWidth(n, w))),
);

export interface CborGenOptions {
  /** Text keys to favour in maps (the names the decoder under test looks up). */
  keys?: readonly string[];
  /** Text values to favour (e.g. variant names). */
  texts?: readonly string[];
  /** Byte strings to favour (e.g. valid nested documents). */
  blobs?: fc.Arbitrary<Uint8Array>;
  maxDepth?: number;
}

/** Arbitrary CBOR bytes: mostly well-formed items, with refusable ones mixed in at every depth. */
export function cborItem(opts: CborGenOptions = {}): fc.Arbitrary<Uint8Array> {
  const keys = opts.keys ?? [];
  const texts = opts.texts ?? [];
  const keyItem = keys.length > 0 ? fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...keys).map(cborText) }, { weight: 1, arbitrary: textItem }, { weight: 1, arbitrary: uintItem }) : fc.oneof(textItem, uintItem);
  const leaves: fc.WeightedArbitrary<Uint8Array>[] = [
    { weight: 4, arbitrary: uintItem },
    { weight: 3, arbitrary: textItem },
    { weight: 3, arbitrary: bytesItem },
    { weight: 1, arbitrary: oddItem },
  ];
  if (texts.length > 0) leaves.push({ weight: 3, arbitrary: fc.constantFrom(...texts).map(cborText) });
  if (opts.blobs !== undefined) leaves.push({ weight: 2, arbitrary: opts.blobs.map(cborBytes) });
  const leaf = fc.oneof(...leaves);
  const { item } = fc.letrec<{ item: Uint8Array }>((tie) => ({
    item: fc.oneof(
      { maxDepth: opts.maxDepth ?? 4, depthIdentifier: 'cbor' },
      { weight: 6, arbitrary: leaf },
      {
        weight: 1,
        arbitrary: fc
          .tuple(fc.array(tie('item'), { maxLength: 6 }), fc.integer({ min: -1, max: 1 }))
          .map(([items, skew]) => cborConcat([cborHead(4, Math.max(0, items.length + (skew === 1 ? 1 : 0))), ...items])),
      },
      {
        weight: 2,
        arbitrary: fc
          .tuple(fc.array(fc.tuple(keyItem, tie('item')), { maxLength: 6 }), fc.integer({ min: -3, max: 1 }))
          .map(([entries, skew]) => cborConcat([cborHead(5, Math.max(0, entries.length + (skew === 1 ? 1 : 0))), ...entries.flat()])),
      },
      {
        // an array of small uints: the serde form of a byte field
        weight: 2,
        arbitrary: fc.array(fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(256, 1000)), { maxLength: 40 }).map((ns) =>
          cborConcat([cborHead(4, ns.length), ...ns.map((n) => cborHead(0, n))]),
        ),
      },
    ),
  }));
  return item;
}

// The int-array codec hook (setIntArrayCodec): with a codec installed, encode and decode give exactly what the JS
// loops give — same bytes, same WireError (code, detail, message, element index) — for every input. Runs with a
// reference codec written here (so the hook and the resume-after-a-slow-element logic are checked on every
// machine) and with the C addon's codec when it is built.
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { toHex, fromHex } from '../../src/util/bytes.ts';
import { WireError } from '../../src/wire/errors.ts';
import {
  decodeServerMessage,
  encodeServerMessage,
  getIntArrayCodec,
  INT_ARRAY_CODEC_THRESHOLD,
  setIntArrayCodec,
  type IntArrayCodec,
} from '../../src/wire/messages.ts';
import { nativeIntArrayCodec } from '../../src/wire/native-int-array.ts';
import { head, map, t, u } from './cbor-helpers.ts';

const SCALE = 2 ** 26;

/** The contract of IntArrayCodec, one element at a time (obviously right, slow). */
const reference: IntArrayCodec = {
  count(src) {
    let big = 0;
    for (const v of src) if (v >= 24) big++;
    return big;
  },
  encode(src, dst, p) {
    for (const v of src) {
      if (v >= 24) dst[p++] = 0x18;
      dst[p++] = v;
    }
    return p;
  },
  decode(src, p, n, dst, q) {
    const start = p;
    let i = 0;
    while (i < n && p < src.length) {
      const v = src[p]!;
      if (v < 24) {
        dst[q + i++] = v;
        p += 1;
      } else if (v === 0x18 && p + 1 < src.length) {
        dst[q + i++] = src[p + 1]!;
        p += 2;
      } else break;
    }
    return i + (p - start) * SCALE;
  },
};

const native = nativeIntArrayCodec();
const codecs: { name: string; codec: IntArrayCodec | null }[] = [
  { name: 'reference JS codec', codec: reference },
  { name: 'native codec (C addon)', codec: native },
];

afterEach(() => setIntArrayCodec(null));

// ENCLAVE_AGENT_REQUIRE_ADDON=1 (CI; the 'no-addon' project turns it off): the native cases below must run, not skip.
it.runIf(process.env.ENCLAVE_AGENT_REQUIRE_ADDON === '1')('has the native codec when the addon is required', () => {
  expect(native).not.toBeNull();
});

function withCodec<T>(codec: IntArrayCodec | null, threshold: number, fn: () => T): T {
  const before = getIntArrayCodec();
  setIntArrayCodec(codec, threshold);
  try {
    return fn();
  } finally {
    setIntArrayCodec(before);
  }
}

/** xorshift32: deterministic test data. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

const LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 23, 24, 255, 256, 4095, 65519];
const KINDS = ['random', 'all-small', 'all-big', 'mixed-runs', 'boundary'] as const;

function payload(kind: (typeof KINDS)[number], n: number, seed: number): Uint8Array {
  const r = rng(seed);
  const b = new Uint8Array(n);
  let run = 0;
  let big = false;
  for (let i = 0; i < n; i++) {
    switch (kind) {
      case 'random':
        b[i] = r() & 0xff;
        break;
      case 'all-small':
        b[i] = r() % 24;
        break;
      case 'all-big':
        b[i] = 24 + (r() % 232);
        break;
      case 'mixed-runs': // runs of 0..19 of one class, so 8-byte blocks are sometimes pure, sometimes not
        if (run-- <= 0) {
          run = r() % 20;
          big = (r() & 1) === 1;
        }
        b[i] = big ? 24 + (r() % 232) : r() % 24;
        break;
      case 'boundary': // the values around the threshold and the head byte itself
        b[i] = [0, 23, 24, 25, 0x18, 0x19, 0xff, 0x17][r() % 8]!;
        break;
    }
  }
  return b;
}

/** The message the tests decode: a server StreamData whose payload is the given int array (head + elements). */
function streamData(n: number, elementsHex: string): Uint8Array {
  return fromHex(map(t('type'), t('StreamData'), t('id'), u(7), t('payload'), head(4, n) + elementsHex));
}

type Outcome = { payload: string } | { error: { name: string; code: string; detail: string | undefined; message: string } };

function decodeOutcome(bytes: Uint8Array): Outcome {
  try {
    const { message } = decodeServerMessage(bytes);
    return { payload: toHex((message as { payload: Uint8Array }).payload) };
  } catch (err) {
    if (!(err instanceof WireError)) throw err;
    return { error: { name: err.name, code: err.code, detail: err.detail, message: err.message } };
  }
}

/** The same bytes at a random offset inside a larger buffer (byteOffset ≠ 0, other bytes around). */
function embedded(bytes: Uint8Array, r: () => number): Uint8Array {
  const before = r() % 61;
  const big = new Uint8Array(before + bytes.length + (r() % 29));
  for (let i = 0; i < big.length; i++) big[i] = r() & 0xff;
  big.set(bytes, before);
  return big.subarray(before, before + bytes.length);
}

it('leaves the JS loops in place until a codec is installed, and null removes it', () => {
  expect(getIntArrayCodec()).toBeNull();
  setIntArrayCodec(reference, 0);
  expect(getIntArrayCodec()).toBe(reference);
  setIntArrayCodec(null);
  expect(getIntArrayCodec()).toBeNull();
  expect(INT_ARRAY_CODEC_THRESHOLD).toBeGreaterThan(0);
  expect(() => setIntArrayCodec(reference, -1)).toThrow(RangeError);
  expect(() => setIntArrayCodec(reference, 1.5)).toThrow(RangeError);
});

it('calls the codec only for byte fields of at least the threshold', () => {
  const calls: string[] = [];
  const spy: IntArrayCodec = {
    count: (s) => (calls.push(`count ${s.length}`), reference.count(s)),
    encode: (s, d, o) => (calls.push(`encode ${s.length}`), reference.encode(s, d, o)),
    decode: (s, o, n, d, q) => (calls.push(`decode ${n}`), reference.decode(s, o, n, d, q)),
  };
  withCodec(spy, 100, () => {
    for (const n of [99, 100]) {
      const p = new Uint8Array(n).fill(200);
      expect(decodeServerMessage(encodeServerMessage({ type: 'StreamData', id: 1, payload: p })).message).toEqual({ type: 'StreamData', id: 1, payload: p });
    }
  });
  expect(calls).toEqual(['count 100', 'encode 100', 'decode 100']);
});

describe.each(codecs)('$name', ({ codec }) => {
  const skip = codec === null;

  it.skipIf(skip)('encodes and decodes byte-identically to the JS loops: every length × alphabet, at random offsets', () => {
    const r = rng(0x5eed);
    for (const kind of KINDS) {
      for (const n of LENGTHS) {
        const p = payload(kind, n, n * 31 + kind.length);
        const msg = { type: 'StreamData' as const, id: 9, payload: p };
        const js = encodeServerMessage(msg);
        const withNative = withCodec(codec, 0, () => encodeServerMessage(msg));
        expect(toHex(withNative), `${kind} ${n}`).toBe(toHex(js));
        // the payload itself at an offset inside a larger buffer encodes the same
        const shifted = embedded(p, r);
        expect(toHex(withCodec(codec, 0, () => encodeServerMessage({ ...msg, payload: shifted })))).toBe(toHex(js));
        const input = embedded(js, r);
        const decoded = withCodec(codec, 0, () => decodeServerMessage(input));
        expect(decoded.message, `${kind} ${n}`).toEqual(msg);
        expect(decoded.encoding).toBe('array');
      }
    }
  });

  it.skipIf(skip)('count and encode at random offsets write exactly the elements and nothing around them', () => {
    const r = rng(77);
    for (const kind of KINDS) {
      for (const n of LENGTHS) {
        const src = embedded(payload(kind, n, n + 3), r);
        const expected = new Uint8Array(2 * n + 8);
        const end = reference.encode(src, expected, 0);
        expect(codec!.count(src)).toBe(reference.count(src));
        const room = end + (r() % 5); // exact fit or a little more
        const dstOffset = r() % 13;
        const backing = new Uint8Array(7 + dstOffset + room + 7).fill(0xa5);
        const dst = backing.subarray(7, 7 + dstOffset + room);
        expect(codec!.encode(src, dst, dstOffset)).toBe(dstOffset + end);
        expect(toHex(dst.subarray(dstOffset, dstOffset + end))).toBe(toHex(expected.subarray(0, end)));
        // canaries: nothing before dstOffset, nothing after the end
        expect(backing.subarray(0, 7 + dstOffset).every((b) => b === 0xa5)).toBe(true);
        expect(backing.subarray(7 + dstOffset + end).every((b) => b === 0xa5)).toBe(true);
      }
    }
  });

  it.skipIf(skip)('decode stops exactly where the contract says, at random offsets, and writes only the elements it reports', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('00', '17', '18', '1818', '18ff', '1805', '190005', '19', 'ff', '20', '1a00000001', '60', '80'), { maxLength: 80 }),
        fc.nat({ max: 90 }),
        fc.nat({ max: 40 }),
        fc.nat({ max: 9 }),
        (parts, n, before, dstOffset) => {
          const body = fromHex(parts.join(''));
          const src = new Uint8Array(before + body.length);
          src.set(body, before);
          const a = new Uint8Array(dstOffset + n + 3).fill(0xee);
          const b = new Uint8Array(dstOffset + n + 3).fill(0xee);
          const want = reference.decode(src, before, n, a, dstOffset);
          const got = codec!.decode(src, before, n, b, dstOffset);
          expect(got).toBe(want);
          expect(toHex(b)).toBe(toHex(a));
        },
      ),
      { numRuns: 400 },
    );
  });

  // Elements that the fast paths do not take, and what the decoder must answer for them.
  const HOSTILE: [string, string][] = [
    ['non-minimal 0x18 v < 24', '1805'],
    ['non-minimal 0x19', '190005'],
    ['non-minimal 0x1a', '1a000000ff'],
    ['non-minimal 0x1b', '1b00000000000000ff'],
    ['0x19 above 255', '190100'],
    ['0x1a above 255', '1a00010000'],
    ['0x1b above 2^53', '1bffffffffffffffff'],
    ['negative int', '20'],
    ['byte string', '4100'],
    ['text string', '6161'],
    ['nested array', '8100'],
    ['map', 'a0'],
    ['bool', 'f5'],
    ['null', 'f6'],
    ['float', 'f93c00'],
    ['tag', 'c000'],
    ['reserved info 28', '1c'],
    ['indefinite uint (info 31)', '1f'],
    ['simple value', 'f820'],
    ['break', 'ff'],
  ];

  it.skipIf(skip)('hostile elements anywhere in a long array: the same value or the same WireError (code, message, index) as the JS loops', () => {
    const fast = (k: number, seed: number) => {
      const r = rng(seed);
      let hex = '';
      for (let i = 0; i < k; i++) {
        const v = r() & 0xff;
        hex += (v < 24 ? '' : '18') + v.toString(16).padStart(2, '0');
      }
      return hex;
    };
    let compared = 0;
    for (const [what, el] of HOSTILE) {
      for (const at of [0, 1, 7, 8, 300, 599]) {
        for (const threshold of [0, INT_ARRAY_CODEC_THRESHOLD]) {
          const n = 600;
          const hex = fast(at, at) + el + fast(n - at - 1, at + 1);
          const bytes = streamData(n, hex);
          const js = decodeOutcome(bytes);
          expect(withCodec(codec, threshold, () => decodeOutcome(bytes)), `${what} at ${at}`).toEqual(js);
          compared++;
        }
      }
    }
    expect(compared).toBe(HOSTILE.length * 6 * 2);
    // the error names the element: spot-check that the index really is the hostile one
    const bad = streamData(600, fast(300, 1) + '190100' + fast(299, 2));
    expect(withCodec(codec, 0, () => decodeOutcome(bad))).toMatchObject({ error: { code: 'WIRE_INT_RANGE', message: 'payload[300] is 256, above 255' } });
  });

  it.skipIf(skip)('truncated input and counts larger than the input: the same errors as the JS loops', () => {
    const cases: [number, string][] = [
      [3, '0102'], // n larger than the input (the up-front length check)
      [3, '010218'], // 0x18 as the last input byte
      [2, '0119'], // a 0x19 head without its argument
      [2, '011900'], // a 0x19 head with one of its two argument bytes
      [4, '18ff18ff18'], // n fits the byte count, the last element is cut
      [300, '18'.repeat(300)], // 0x18 0x18 pairs: 150 elements, then the input ends
      [400, '00'.repeat(399) + '18'],
      [5, '0000000000' + '00'], // trailing byte after a complete array
    ];
    for (const [n, hex] of cases) {
      const bytes = streamData(n, hex);
      const js = decodeOutcome(bytes);
      expect('error' in js, hex).toBe(true);
      for (const threshold of [0, 1, INT_ARRAY_CODEC_THRESHOLD]) {
        expect(withCodec(codec, threshold, () => decodeOutcome(bytes)), `${n} ${hex}`).toEqual(js);
      }
    }
  });

  it.skipIf(skip)('random element soups decode to the same outcome with and without the codec', () => {
    const element = fc.oneof(
      { weight: 6, arbitrary: fc.integer({ min: 0, max: 255 }).map((v) => (v < 24 ? '' : '18') + v.toString(16).padStart(2, '0')) },
      { weight: 1, arbitrary: fc.constantFrom('1805', '190018', '1a00000017', '1b00000000000000ff', '1800') },
      { weight: 1, arbitrary: fc.constantFrom('190100', '20', '40', 'f4', '18', '19', 'c0', '1c') },
    );
    fc.assert(
      fc.property(fc.array(element, { maxLength: 400 }), fc.integer({ min: -3, max: 3 }), fc.constantFrom(0, 1, 8, 64), (els, dn, threshold) => {
        const n = Math.max(0, els.length + dn);
        const bytes = streamData(n, els.join(''));
        expect(withCodec(codec, threshold, () => decodeOutcome(bytes))).toEqual(decodeOutcome(bytes));
      }),
      { numRuns: 300 },
    );
  });

  it.skipIf(skip)('an array of alternating non-minimal elements decodes like the JS loops (the codec steps aside)', () => {
    const n = 2000;
    const bytes = streamData(n, '1805ff'.repeat(n / 2).replace(/ff/g, '18ff'));
    const js = decodeOutcome(bytes);
    expect(js).toEqual({ payload: '05ff'.repeat(n / 2) });
    expect(withCodec(codec, 0, () => decodeOutcome(bytes))).toEqual(js);
    expect(withCodec(codec, INT_ARRAY_CODEC_THRESHOLD, () => decodeOutcome(bytes))).toEqual(js);
  });
});

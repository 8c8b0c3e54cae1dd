import { describe, expect, it } from 'vitest';
import { WireError } from '../../src/wire/errors.ts';
import { FrameReader, MAX_FRAME_LEN, MIN_FRAME_LEN, encodeFrame } from '../../src/wire/frames.ts';
import { expectWireError } from './cbor-helpers.ts';

/** xorshift32: a small seeded PRNG so every replay is reproducible from its seed. */
function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return (n: number) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

function randomBytes(len: number, rand: (n: number) => number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = rand(256);
  return b;
}

const header = (len: number) => Uint8Array.of(len >>> 24, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

function drain(reader: FrameReader): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let f = reader.nextFrame(); f !== null; f = reader.nextFrame()) out.push(f);
  return out;
}

describe('encodeFrame', () => {
  it('prefixes the big-endian length and enforces 16 ≤ len ≤ 65535', () => {
    const ct = new Uint8Array(300).fill(7);
    const f = encodeFrame(ct);
    expect([...f.subarray(0, 4)]).toEqual([0, 0, 1, 44]);
    expect(same(f.subarray(4), ct)).toBe(true);
    expect(encodeFrame(new Uint8Array(MAX_FRAME_LEN)).length).toBe(MAX_FRAME_LEN + 4);
    expect(encodeFrame(new Uint8Array(MIN_FRAME_LEN)).length).toBe(MIN_FRAME_LEN + 4);
    expectWireError(() => encodeFrame(new Uint8Array(MAX_FRAME_LEN + 1)), 'WIRE_FRAME_TOO_LARGE');
    expectWireError(() => encodeFrame(new Uint8Array(MIN_FRAME_LEN - 1)), 'WIRE_FRAME_TOO_SMALL');
  });
});

describe('FrameReader', () => {
  it('reassembles frames delivered one byte at a time', () => {
    const rand = prng(1);
    const frames = [16, 17, 1000, MAX_FRAME_LEN].map((n) => randomBytes(n, rand));
    const stream = Buffer.concat(frames.map(encodeFrame));
    const reader = new FrameReader();
    const got: Uint8Array[] = [];
    for (let i = 0; i < stream.length; i++) {
      reader.push(stream.subarray(i, i + 1));
      got.push(...drain(reader));
    }
    expect(got.length).toBe(frames.length);
    got.forEach((f, i) => expect(same(f, frames[i]!)).toBe(true));
    expect(reader.buffered).toBe(0);
    reader.end();
  });

  it('holds no staging buffer once every byte was taken (an idle connection keeps nothing), and frames it returned stay intact', () => {
    const r = new FrameReader();
    r.push(new Uint8Array(32).fill(7)); // hs1: a small read goes to the staging buffer
    expect(r.stagingBytes).toBeGreaterThan(0);
    const hs1 = r.readExact(32)!;
    expect(r.stagingBytes).toBe(0);
    const body = Uint8Array.from({ length: 40 }, (_, i) => i);
    const wire = encodeFrame(body);
    r.push(wire.subarray(0, 10));
    r.push(wire.subarray(10));
    const frame = r.nextFrame()!;
    expect(r.stagingBytes).toBe(0);
    r.push(new Uint8Array(20).fill(9)); // a later read must not overwrite what was handed out
    expect(same(frame, body)).toBe(true);
    expect(hs1.every((b) => b === 7)).toBe(true);
  });

  it('a stream of tiny reads that never drains grows its staging buffer and keeps every byte', () => {
    const rand = prng(3);
    const frames = Array.from({ length: 40 }, () => randomBytes(300, rand));
    const stream = Buffer.concat(frames.map(encodeFrame));
    const r = new FrameReader();
    for (let i = 0; i < stream.length; i += 100) r.push(stream.subarray(i, i + 100));
    expect(r.stagingBytes).toBe(4096);
    const got = drain(r);
    expect(got.length).toBe(frames.length);
    got.forEach((f, i) => expect(same(f, frames[i]!)).toBe(true));
    expect(r.stagingBytes).toBe(0);
  });

  it('copies a frame that spans chunks into alloc(len) and says so; a frame inside one chunk stays a view', () => {
    const a = Uint8Array.from({ length: 1000 }, (_, i) => i & 0xff);
    const b = Uint8Array.from({ length: 700 }, (_, i) => (i * 3) & 0xff);
    const wire = new Uint8Array([...encodeFrame(a), ...encodeFrame(b)]);
    const r = new FrameReader();
    const first = wire.subarray(0, 1004); // frame a, whole
    r.push(first);
    r.push(wire.subarray(1004, 1300)); // frame b, split across two chunks
    r.push(wire.subarray(1300));
    const scratch = new Uint8Array(4096).fill(0xee);
    const lens: number[] = [];
    const alloc = (n: number): Uint8Array => (lens.push(n), scratch.subarray(0, n));
    const fa = r.nextFrame(alloc)!;
    expect(r.lastFrameCopied).toBe(false);
    expect(fa.buffer).toBe(first.buffer);
    expect([...fa]).toEqual([...a]);
    const fb = r.nextFrame(alloc)!;
    expect(r.lastFrameCopied).toBe(true);
    expect(lens).toEqual([700]);
    expect(fb.buffer).toBe(scratch.buffer);
    expect([...fb]).toEqual([...b]);
    expect(r.nextFrame(alloc)).toBeNull();
  });

  it('returns several frames delivered in one chunk, in order', () => {
    const frames = [20, 30, 40].map((n, i) => new Uint8Array(n).fill(i + 1));
    const reader = new FrameReader();
    reader.push(Buffer.concat(frames.map(encodeFrame)));
    const got = drain(reader);
    expect(got.map((f) => [f.length, f[0]])).toEqual([[20, 1], [30, 2], [40, 3]]);
  });

  it('reads the 32-byte hs1 and 48-byte hs2 raw, then frames, from one chunk', () => {
    const hs1 = new Uint8Array(32).fill(1);
    const hs2 = new Uint8Array(48).fill(2);
    const frame = new Uint8Array(25).fill(3);
    const reader = new FrameReader();
    reader.push(Buffer.concat([hs1, hs2, encodeFrame(frame)]));
    expect(same(reader.readExact(32)!, hs1)).toBe(true);
    expect(same(reader.readExact(48)!, hs2)).toBe(true);
    expect(same(reader.nextFrame()!, frame)).toBe(true);
    expect(reader.nextFrame()).toBeNull();
  });

  it('returns null from readExact until all the handshake bytes are in', () => {
    const reader = new FrameReader();
    reader.push(new Uint8Array(31).fill(5));
    expect(reader.readExact(32)).toBeNull();
    reader.push(Uint8Array.of(6, 7));
    const hs1 = reader.readExact(32)!;
    expect(hs1.length).toBe(32);
    expect(hs1[31]).toBe(6);
    expect(reader.buffered).toBe(1);
  });

  for (const len of [MAX_FRAME_LEN + 1, 2 ** 32 - 1]) {
    it(`rejects a frame length of ${len} with WIRE_FRAME_TOO_LARGE as soon as the 4 header bytes are in`, () => {
      const reader = new FrameReader();
      const h = header(len);
      reader.push(h.subarray(0, 3));
      expect(reader.nextFrame()).toBeNull();
      reader.push(h.subarray(3));
      expectWireError(() => reader.nextFrame(), 'WIRE_FRAME_TOO_LARGE');
      // sticky: the session cannot accidentally resynchronise on garbage
      expectWireError(() => reader.nextFrame(), 'WIRE_FRAME_TOO_LARGE');
      expectWireError(() => reader.push(new Uint8Array(1)), 'WIRE_FRAME_TOO_LARGE');
      expect(() => reader.end()).not.toThrow();
    });
  }

  for (const len of [0, 1, MIN_FRAME_LEN - 1]) {
    it(`rejects a frame length of ${len} with WIRE_FRAME_TOO_SMALL`, () => {
      const reader = new FrameReader();
      reader.push(header(len));
      expectWireError(() => reader.nextFrame(), 'WIRE_FRAME_TOO_SMALL');
    });
  }

  it('throws WIRE_TRUNCATED from end() when the stream stops inside a frame header or body', () => {
    const partialHeader = new FrameReader();
    partialHeader.push(Uint8Array.of(0, 0));
    expect(partialHeader.nextFrame()).toBeNull();
    expectWireError(() => partialHeader.end(), 'WIRE_TRUNCATED');

    const partialBody = new FrameReader();
    partialBody.push(encodeFrame(new Uint8Array(100)).subarray(0, 50));
    expect(partialBody.nextFrame()).toBeNull();
    expectWireError(() => partialBody.end(), 'WIRE_TRUNCATED');
    expectWireError(() => partialBody.nextFrame(), 'WIRE_TRUNCATED');
  });

  it('throws WIRE_TRUNCATED from end() when the stream stops inside the handshake', () => {
    const reader = new FrameReader();
    reader.push(new Uint8Array(20));
    expect(reader.readExact(32)).toBeNull();
    expectWireError(() => reader.end(), 'WIRE_TRUNCATED');
    expectWireError(() => reader.readExact(32), 'WIRE_TRUNCATED');
  });

  it('keeps complete frames readable after end(), then reports a clean end with null', () => {
    const reader = new FrameReader();
    reader.push(Buffer.concat([encodeFrame(new Uint8Array(16)), encodeFrame(new Uint8Array(17))]));
    reader.end();
    expect(reader.nextFrame()!.length).toBe(16);
    expect(reader.nextFrame()!.length).toBe(17);
    expect(reader.nextFrame()).toBeNull();
    expectWireError(() => reader.push(new Uint8Array(1)), 'WIRE_ENDED');
  });

  it('end() with a complete frame followed by a partial one reports the truncation', () => {
    const reader = new FrameReader();
    reader.push(Buffer.concat([encodeFrame(new Uint8Array(16)), encodeFrame(new Uint8Array(17)).subarray(0, 10)]));
    expectWireError(() => reader.end(), 'WIRE_TRUNCATED');
    expect(reader.nextFrame()!.length).toBe(16);
    expectWireError(() => reader.nextFrame(), 'WIRE_TRUNCATED');
  });

  it('never modifies a frame it returned, however later bytes arrive', () => {
    const rand = prng(7);
    const frames = Array.from({ length: 40 }, () => randomBytes(16 + rand(200), rand));
    const stream = Buffer.concat(frames.map(encodeFrame));
    const reader = new FrameReader();
    const got: Uint8Array[] = [];
    for (let i = 0; i < stream.length; ) {
      const n = 1 + rand(30); // small chunks: the reader's copying path
      reader.push(stream.subarray(i, i + n));
      i += n;
      got.push(...drain(reader));
    }
    expect(got.length).toBe(frames.length);
    got.forEach((f, i) => expect(same(f, frames[i]!)).toBe(true));
  });

  it('recovers every frame of a recorded stream across 10,000 random chunkings', () => {
    const rand = prng(0xc0ffee);
    const hs1 = randomBytes(32, rand);
    const sizes = [MAX_FRAME_LEN, 16, 17, MAX_FRAME_LEN - 1, 4096, 32768, 32769];
    for (let i = 0; i < 20; i++) sizes.push(16 + rand(3000));
    const frames = sizes.map((n) => randomBytes(n, rand));
    const stream = Buffer.concat([hs1, ...frames.map(encodeFrame)]);

    for (let replay = 0; replay < 10_000; replay++) {
      const r = prng(replay + 1);
      // Split points: sometimes a few, sometimes many; bias some to sit next to frame headers.
      const cuts = new Set<number>();
      const count = r(4) === 0 ? 1 + r(200) : r(12);
      for (let i = 0; i < count; i++) cuts.add(1 + r(stream.length - 1));
      const points = [0, ...[...cuts].sort((a, b) => a - b), stream.length];
      const reader = new FrameReader();
      let gotHs1: Uint8Array | null = null;
      let n = 0;
      for (let i = 0; i + 1 < points.length; i++) {
        reader.push(stream.subarray(points[i], points[i + 1]));
        if (gotHs1 === null) gotHs1 = reader.readExact(32);
        // drain eagerly most of the time, sometimes let frames pile up
        if (gotHs1 !== null && r(3) !== 0) {
          for (let f = reader.nextFrame(); f !== null; f = reader.nextFrame()) {
            if (!same(f, frames[n]!)) throw new Error(`replay ${replay}: frame ${n} differs`);
            n++;
          }
        }
      }
      reader.end();
      if (gotHs1 === null || !same(gotHs1, hs1)) throw new Error(`replay ${replay}: hs1 differs`);
      for (let f = reader.nextFrame(); f !== null; f = reader.nextFrame()) {
        if (!same(f, frames[n]!)) throw new Error(`replay ${replay}: frame ${n} differs`);
        n++;
      }
      if (n !== frames.length || reader.buffered !== 0) throw new Error(`replay ${replay}: got ${n} of ${frames.length} frames`);
    }
  });

  it('throws only WireErrors (or returns frames) on random streams', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const rand = prng(seed);
      const reader = new FrameReader();
      try {
        for (let i = 0; i < 20; i++) {
          reader.push(randomBytes(rand(64), rand));
          drain(reader);
        }
        reader.end();
        drain(reader);
      } catch (err) {
        expect(err).toBeInstanceOf(WireError);
      }
    }
  });
});

// Fuzzing the FrameReader (src/wire/frames.ts) against a straight-line oracle of the byte grammar
// (WIRE.md §2): for any bytes in any chunking, with or without the raw handshake message first, the reader
// returns exactly the oracle's handshake bytes and frames (as still-valid views) and fails only with the
// oracle's WireError code — never another exception, never a lost or invented byte.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { equalBytes } from '../../src/util/bytes.ts';
import { WireError } from '../../src/wire/errors.ts';
import { FrameReader, MAX_FRAME_LEN, MIN_FRAME_LEN, encodeFrame } from '../../src/wire/frames.ts';
import { FUZZ_RUNS, FUZZ_SEED, fuzzParams, fuzzTimeout } from './config.ts';
import { expectBoundedHeap, outcome } from './harness.ts';
import { bytes, chunked, cuts, hexPreview, mutated, prefixes } from './mutate.ts';

type Code = 'WIRE_FRAME_TOO_LARGE' | 'WIRE_FRAME_TOO_SMALL' | 'WIRE_TRUNCATED';
const READ_CODES = /^WIRE_(FRAME_TOO_LARGE|FRAME_TOO_SMALL|TRUNCATED)$/;

interface Parsed {
  hs: Uint8Array | null;
  frames: Uint8Array[];
  error: Code | null;
}

/** The grammar, read in one pass over the whole input. */
function oracle(input: Uint8Array, hsLen: number): Parsed {
  const frames: Uint8Array[] = [];
  let pos = 0;
  let hs: Uint8Array | null = null;
  if (hsLen > 0) {
    if (input.length < hsLen) return { hs, frames, error: 'WIRE_TRUNCATED' };
    hs = input.subarray(0, hsLen);
    pos = hsLen;
  }
  while (pos < input.length) {
    const remaining = input.length - pos;
    if (remaining < 4) return { hs, frames, error: 'WIRE_TRUNCATED' };
    const len = ((input[pos]! << 24) >>> 0) + (input[pos + 1]! << 16) + (input[pos + 2]! << 8) + input[pos + 3]!;
    if (len > MAX_FRAME_LEN) return { hs, frames, error: 'WIRE_FRAME_TOO_LARGE' };
    if (len < MIN_FRAME_LEN) return { hs, frames, error: 'WIRE_FRAME_TOO_SMALL' };
    if (remaining - 4 < len) return { hs, frames, error: 'WIRE_TRUNCATED' };
    frames.push(input.subarray(pos + 4, pos + 4 + len));
    pos += 4 + len;
  }
  return { hs, frames, error: null };
}

interface Driven {
  hs: Uint8Array | null;
  frames: Uint8Array[];
  errors: WireError[];
  reader: FrameReader;
}

/**
 * Feeds the chunks the way a session does: after each push, take the handshake bytes if still pending, then
 * (unless that push is marked lazy, i.e. the consumer is applying backpressure) every complete frame; then
 * end() and a final drain. Every call may only return or throw a WireError of the reading family.
 */
function drive(chunks: Uint8Array[], hsLen: number, lazy: readonly boolean[]): Driven {
  const reader = new FrameReader();
  const frames: Uint8Array[] = [];
  const errors: WireError[] = [];
  let hs: Uint8Array | null = null;
  let failed: WireError | null = null;
  /** nextFrame() errors are sticky (documented); a readExact() truncation after end() is not. */
  let sticky = false;

  const drain = (frameLoop: boolean): void => {
    if (failed !== null) return;
    if (hsLen > 0 && hs === null) {
      const r = outcome(() => reader.readExact(hsLen), WireError, READ_CODES);
      if (!r.ok) {
        failed = r.error;
        errors.push(r.error);
        return;
      }
      hs = r.value;
      if (hs === null) return;
    }
    if (!frameLoop) return;
    const r = outcome(
      () => {
        for (let f = reader.nextFrame(); f !== null; f = reader.nextFrame()) frames.push(f);
      },
      WireError,
      READ_CODES,
    );
    if (!r.ok) {
      failed = r.error;
      sticky = true;
      errors.push(r.error);
    }
  };

  chunks.forEach((chunk, i) => {
    if (failed !== null) {
      if (!sticky) return;
      // Sticky: a failed reader rejects further input with the same error.
      const again = outcome(() => reader.push(chunk), WireError, READ_CODES);
      if (again.ok || again.error !== failed) throw new Error('push() after a failure did not rethrow the same error');
      return;
    }
    reader.push(chunk);
    drain(!(lazy[i % Math.max(1, lazy.length)] ?? false));
  });
  if (failed === null) {
    const ended = outcome(() => reader.end(), WireError, READ_CODES);
    if (!ended.ok) errors.push(ended.error);
    drain(true);
  }
  if (failed !== null && sticky) {
    const again = outcome(() => reader.nextFrame(), WireError, READ_CODES);
    if (again.ok || again.error !== failed) throw new Error('nextFrame() after a failure did not rethrow the same error');
  }
  return { hs, frames, errors, reader };
}

function check(input: Uint8Array, chunks: Uint8Array[], hsLen: number, lazy: readonly boolean[]): void {
  const want = oracle(input, hsLen);
  const got = drive(chunks, hsLen, lazy);
  const where = (): string => `input ${hexPreview(input)} in ${chunks.length} chunk(s), hsLen ${hsLen}`;
  if (want.hs !== null && (got.hs === null || !equalBytes(got.hs, want.hs))) throw new Error(`handshake bytes differ: ${where()}`);
  if (got.frames.length !== want.frames.length) {
    throw new Error(`expected ${want.frames.length} frame(s), got ${got.frames.length}: ${where()}`);
  }
  got.frames.forEach((f, i) => {
    if (!equalBytes(f, want.frames[i]!)) throw new Error(`frame ${i} differs: ${where()}`);
  });
  if (want.error === null) {
    if (got.errors.length > 0) throw new Error(`unexpected ${got.errors[0]!.code}: ${where()}`);
    if (got.reader.buffered !== 0) throw new Error(`${got.reader.buffered} bytes left buffered after a clean end: ${where()}`);
    // After end(), more input is a WIRE_ENDED error, not a crash.
    const late = outcome(() => got.reader.push(Uint8Array.of(1)), WireError, /^WIRE_ENDED$/);
    if (late.ok) throw new Error(`push() after end() was accepted: ${where()}`);
  } else {
    if (got.errors.length === 0) throw new Error(`expected ${want.error}, nothing was thrown: ${where()}`);
    for (const e of got.errors) if (e.code !== want.error) throw new Error(`expected ${want.error}, got ${e.code}: ${where()}`);
  }
}

// --- generators ----------------------------------------------------------------------------------------------

const hsLen = fc.constantFrom(0, 0, 32, 48);

/** A frame body: mostly small, sometimes at the lower limit and around one staging buffer / one chunk. */
const body = fc.oneof(
  { weight: 20, arbitrary: bytes(200, MIN_FRAME_LEN) },
  { weight: 2, arbitrary: fc.constantFrom(MIN_FRAME_LEN, 255, 256, 4096).map((n) => new Uint8Array(n).fill(0xa5)) },
);
/** The same with the 65535-byte maximum frame in the mix (slow to copy around: used in fewer cases). */
const bodyWithMax = fc.oneof(
  { weight: 3, arbitrary: body },
  { weight: 1, arbitrary: fc.constant(new Uint8Array(MAX_FRAME_LEN).fill(0x5a)) },
);

/** hs bytes (when hsLen > 0) followed by 0–5 valid frames. */
function validStream(hs: number, frameBody = body): fc.Arbitrary<Uint8Array> {
  return fc.tuple(bytes(hs, hs), fc.array(frameBody, { maxLength: 5 })).map(([h, bodies]) => Buffer.concat([h, ...bodies.map(encodeFrame)]));
}

const lazyFlags = fc.array(fc.boolean(), { maxLength: 8 });

describe('FrameReader under fuzzing', () => {
  it(
    'reads random bytes exactly as the grammar oracle does, in any chunking',
    () => {
      fc.assert(
        fc.property(hsLen, bytes(160), cuts, lazyFlags, (n, input, cutPoints, lazy) => {
          check(input, chunked(input, cutPoints), n, lazy);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  it(
    'reads mutated valid streams (flips, inserts, deletes, corrupted lengths, splices) exactly as the oracle does',
    () => {
      const streams = hsLen.chain((n) => fc.tuple(fc.constant(n), mutated(validStream(n))));
      fc.assert(
        fc.property(streams, cuts, lazyFlags, ([n, input], cutPoints, lazy) => {
          check(input, chunked(input, cutPoints), n, lazy);
        }),
        fuzzParams(),
      );
    },
    fuzzTimeout(),
  );

  it(
    'reads mutated streams that carry maximum-size frames exactly as the oracle does',
    () => {
      const streams = hsLen.chain((n) => fc.tuple(fc.constant(n), mutated(validStream(n, bodyWithMax))));
      fc.assert(
        fc.property(streams, cuts, lazyFlags, ([n, input], cutPoints, lazy) => {
          check(input, chunked(input, cutPoints), n, lazy);
        }),
        fuzzParams(0.05),
      );
    },
    fuzzTimeout(),
  );

  it(
    'reports every proper prefix of a valid stream as truncated after the frames it completes',
    () => {
      const small = hsLen.chain((n) =>
        fc.tuple(fc.constant(n), fc.tuple(bytes(n, n), fc.array(bytes(40, MIN_FRAME_LEN), { maxLength: 2 })).map(([h, bs]) => Buffer.concat([h, ...bs.map(encodeFrame)]))),
      );
      fc.assert(
        fc.property(small, cuts, ([n, input], cutPoints) => {
          check(input, chunked(input, cutPoints), n, []);
          for (const prefix of prefixes(input)) {
            const want = oracle(prefix, n);
            // a prefix ends either at a frame boundary (clean) or inside the handshake or a frame
            if (want.error !== null && want.error !== 'WIRE_TRUNCATED') throw new Error(`a prefix of a valid stream reads as ${want.error}`);
            check(prefix, [prefix], n, []);
          }
        }),
        fuzzParams(0.1),
      );
    },
    fuzzTimeout(),
  );

  it(
    'keeps a long-lived reader flat in memory while it passes valid frames through',
    async () => {
      const reader = new FrameReader();
      let total = 0;
      const run = (pass: 0 | 1): void => {
        fc.assert(
          fc.property(fc.array(bytes(300, MIN_FRAME_LEN), { minLength: 1, maxLength: 4 }), cuts, (bs, cutPoints) => {
            const stream = Buffer.concat(bs.map(encodeFrame));
            let got = 0;
            for (const chunk of chunked(stream, cutPoints)) {
              reader.push(chunk);
              for (let f = reader.nextFrame(); f !== null; f = reader.nextFrame()) {
                if (!equalBytes(f, bs[got]!)) throw new Error(`frame ${got} differs`);
                got++;
              }
            }
            if (got !== bs.length || reader.buffered !== 0) throw new Error(`expected ${bs.length} frames and nothing buffered, got ${got} / ${reader.buffered}`);
            total += got;
          }),
          { ...fuzzParams(), seed: FUZZ_SEED + pass },
        );
      };
      await expectBoundedHeap(run);
      expect(total).toBeGreaterThanOrEqual(2 * FUZZ_RUNS);
    },
    fuzzTimeout(),
  );
});

// The credentials channel's FrameReader reads what the host's bridge sends — under the Nitro threat model, a
// peer that may be hostile. It re-joined everything buffered on every chunk, so a 64 KiB answer sent a byte at a
// time made it copy ~2 GiB (~0.6 s on the agent's event loop per credentials fetch). Counted in bytes copied by
// Buffer.concat, not in time: joining once per frame is O(frame).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { encodeFrame, FrameReader, MAX_RESPONSE_BYTES } from '../../src/host/credentials-protocol.ts';

afterEach(() => {
  vi.restoreAllMocks();
});

/** Pushes `bytes` in chunks of `size`; returns the frames and the bytes Buffer.concat produced meanwhile. */
function drip(reader: FrameReader, bytes: Buffer, size: number): { frames: Record<string, unknown>[]; copied: number } {
  const concat = Buffer.concat.bind(Buffer);
  let copied = 0;
  vi.spyOn(Buffer, 'concat').mockImplementation((list, total) => {
    const out = concat(list, total);
    copied += out.length;
    return out;
  });
  const frames: Record<string, unknown>[] = [];
  for (let i = 0; i < bytes.length; i += size) frames.push(...reader.push(bytes.subarray(i, i + size)));
  vi.restoreAllMocks();
  return { frames, copied };
}

describe('the credentials FrameReader', () => {
  const big = encodeFrame({ Status: 'Ok', AccessKeyId: 'AKID', SecretAccessKey: 'x', SessionToken: 'T'.repeat(MAX_RESPONSE_BYTES - 100) });

  it('a frame of the largest size, a byte at a time: copied about once, not once per byte', () => {
    expect(big.length).toBeGreaterThan(MAX_RESPONSE_BYTES - 100);
    const reader = new FrameReader(MAX_RESPONSE_BYTES);
    const { frames, copied } = drip(reader, big, 1);
    expect(frames).toHaveLength(1);
    expect((frames[0]!.SessionToken as string).length).toBe(MAX_RESPONSE_BYTES - 100);
    expect(reader.pending).toBe(0);
    expect(copied).toBeLessThan(2 * big.length);
  });

  it('still splits frames across and within chunks of every size, and refuses an oversized header at once', () => {
    const small = [encodeFrame({ Status: 'Ok', n: 1 }), encodeFrame({ Status: 'Ok', n: 2 }), encodeFrame({ Status: 'Ok', n: 3 })];
    const stream = Buffer.concat([...small, big, ...small]);
    for (const size of [1, 2, 3, 5, 7, 64, 4096, stream.length]) {
      const reader = new FrameReader(MAX_RESPONSE_BYTES);
      const { frames } = drip(reader, stream, size);
      expect(frames.map((f) => f.n ?? 'big')).toEqual([1, 2, 3, 'big', 1, 2, 3]);
      expect(reader.pending).toBe(0);
    }
    const head = Buffer.alloc(4);
    head.writeUInt32BE(MAX_RESPONSE_BYTES + 1);
    const reader = new FrameReader(MAX_RESPONSE_BYTES);
    expect(reader.push(head.subarray(0, 3))).toEqual([]);
    expect(() => reader.push(head.subarray(3))).toThrow(expect.objectContaining({ code: 'CREDENTIALS_FRAME_TOO_LARGE' }));
  });
});

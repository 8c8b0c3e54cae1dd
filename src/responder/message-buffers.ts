// Reused 64 KB buffers for large messages: a session encodes what it sends into one, seals it there in place and
// writes from it; it assembles a received frame that spans socket reads in one and decrypts it there. Each comes
// back here when nothing refers to it any more: a sent message once written, a received frame once its stream's
// app socket has taken the bytes, app reads joined into one message once it is written. Every fresh 64 KB buffer
// is external memory to V8, which runs a full GC every ~64 MB of it: at stream rates that was several per second.
import { MAX_FRAME_LEN } from '../wire/frames.ts';

/** Buffers kept for reuse, process-wide (64 × 64 KB = 4 MB at most; more in flight are simply allocated). */
const MAX_KEPT = 64;
const kept: Uint8Array[] = [];
let fresh = 0;

/** A buffer of MAX_FRAME_LEN bytes (any message or frame fits); its contents are unspecified. */
export function takeMessageBuffer(): Uint8Array {
  const buf = kept.pop();
  if (buf !== undefined) return buf;
  fresh++;
  return new Uint8Array(MAX_FRAME_LEN);
}

/** How many buffers takeMessageBuffer had to allocate so far in this thread (the rest were reused). */
export function freshMessageBuffers(): number {
  return fresh;
}

/** For FrameReader.nextFrame: the first `n` bytes of a reused buffer. */
export function takeFrameBuffer(n: number): Uint8Array {
  return takeMessageBuffer().subarray(0, n);
}

/** Hands back a frame buffer from takeFrameBuffer, wiped (it held plaintext after an in-place decrypt). */
export function returnFrameBuffer(frame: Uint8Array): void {
  frame.fill(0);
  returnMessageBuffer(new Uint8Array(frame.buffer));
}

/** Hands a buffer back once nothing refers to it any more (its write completed). */
export function returnMessageBuffer(buf: Uint8Array): void {
  if (kept.length < MAX_KEPT) kept.push(buf);
}

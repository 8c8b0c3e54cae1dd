// Reused buffers for the large messages a session sends (int-array stream chunks, big replies): each is encoded
// into one, sealed there in place and written from it, then comes back here. Every fresh 64 KB buffer is external
// memory to V8, which runs a full GC every ~64 MB of it: at stream rates that was several per second.
import { MAX_MESSAGE_LEN } from '../wire/messages.ts';

/** Buffers kept for reuse, process-wide (64 × 64 KB = 4 MB at most; more in flight are simply allocated). */
const MAX_KEPT = 64;
const kept: Uint8Array[] = [];

/** A buffer of MAX_MESSAGE_LEN bytes (any message fits); its contents are unspecified. */
export function takeMessageBuffer(): Uint8Array {
  return kept.pop() ?? new Uint8Array(MAX_MESSAGE_LEN);
}

/** Hands a buffer back once nothing refers to it any more (its write completed). */
export function returnMessageBuffer(buf: Uint8Array): void {
  if (kept.length < MAX_KEPT) kept.push(buf);
}

/**
 * Node-only: installs the C int-array loops of the native addon (native/src/intarray.c) into the browser-safe
 * wire codec (src/wire/messages.ts, setIntArrayCodec). The addon is optional: when it is missing (not built,
 * not Linux) nothing changes and the JS loops keep running.
 */
import { loadNative } from '../transport/native.ts';
import { INT_ARRAY_CODEC_THRESHOLD, setIntArrayCodec } from './messages.ts';
import type { IntArrayCodec } from './messages.ts';

/** The int-array part of the addon's exports (see native/src/intarray.c for the exact contract). */
export interface NativeIntArrayBinding {
  intArrayCount(src: Uint8Array): number;
  intArrayEncode(src: Uint8Array, dst: Uint8Array, dstOffset: number): number;
  /** Returns decoded + consumed × 2^26; n ≤ 2^26 − 1. */
  intArrayDecode(src: Uint8Array, srcOffset: number, n: number, dst: Uint8Array, dstOffset: number): number;
}

let codec: IntArrayCodec | null | undefined;

/** The addon's int-array codec, or null when the addon (or its int-array part) is unavailable. */
export function nativeIntArrayCodec(): IntArrayCodec | null {
  if (codec === undefined) {
    codec = null;
    try {
      const b = loadNative() as unknown as Partial<NativeIntArrayBinding>;
      if (typeof b.intArrayCount === 'function' && typeof b.intArrayEncode === 'function' && typeof b.intArrayDecode === 'function') {
        // the addon's functions themselves, no wrapper: one JS frame less per call
        codec = { count: b.intArrayCount, encode: b.intArrayEncode, decode: b.intArrayDecode };
      }
    } catch {
      // optional: an addon that is missing or too old to have intArray* leaves the JS loops in place
    }
  }
  return codec;
}

/**
 * Installs the native int-array codec for byte fields of ≥ `threshold` bytes (default INT_ARRAY_CODEC_THRESHOLD).
 * Returns true when it is installed, false when the addon is unavailable (nothing changed). Idempotent.
 */
export function installNativeIntArrayCodec(threshold: number = INT_ARRAY_CODEC_THRESHOLD): boolean {
  const c = nativeIntArrayCodec();
  if (c === null) return false;
  setIntArrayCodec(c, threshold);
  return true;
}

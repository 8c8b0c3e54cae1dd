/**
 * Node-only: the in-place AEAD of the native addon (native/src/aead.c) — ChaCha20-Poly1305 and AES-256-GCM through
 * the EVP API of the OpenSSL inside node, one long-lived EVP_CIPHER_CTX per key, encrypting and decrypting in the
 * caller's buffers (no per-message cipher object, no per-message ArrayBuffer). Optional: null when the addon is
 * missing (not built, not Linux) or too old to have the aead* functions. Nothing here imports node:* itself, but
 * the loader does: only suite-node.ts (and other Node code) may import this file.
 */
import { loadNative } from '../transport/native.ts';

export type NativeAeadCipher = 'chacha20-poly1305' | 'aes-256-gcm';

declare const nativeAeadContext: unique symbol;
/** A cipher and its key, owned by the addon (cleansed when collected, or by aeadFree); the OpenSSL context is the thread's, shared. Opaque. */
export interface NativeAeadContext {
  readonly [nativeAeadContext]: true;
}

/**
 * The aead part of the addon's exports: the addon's own functions (no JS wrapper). Every argument is checked in C
 * (TypeError ERR_INVALID_ARG_TYPE / ERR_INVALID_ARG_VALUE, RangeError ERR_OUT_OF_RANGE); an OpenSSL failure throws
 * Error ERR_NATIVE_AEAD; a context passed to aeadFree throws ERR_NATIVE_AEAD_FREED afterwards.
 * Nonces are exactly 12 bytes (Noise: 4 zero bytes ‖ counter, LE for ChaChaPoly, BE for AESGCM), tags 16.
 */
export interface NativeAead {
  /** A context for `cipher` with the 32-byte `key` set. */
  aeadNew(cipher: NativeAeadCipher, key: Uint8Array): NativeAeadContext;
  /**
   * Encrypts parts[0] ‖ parts[1] ‖ … IN PLACE as one message under (nonce, ad) and writes the 16-byte tag into
   * `tag`. Empty parts and an empty array are allowed; views are honoured (byteOffset/byteLength). On a throw
   * the parts may be partly encrypted: drop the message.
   */
  aeadSeal(ctx: NativeAeadContext, nonce: Uint8Array, ad: Uint8Array, parts: readonly Uint8Array[], tag: Uint8Array): void;
  /**
   * `data` = ciphertext ‖ 16-byte tag (≥ 16 bytes, else RangeError). Decrypts data[0 .. length − 16) IN PLACE;
   * true when the tag verifies. False (or a throw) leaves data[0 .. length − 16) zeroed, never unauthenticated
   * plaintext. The tag bytes are left as they were.
   */
  aeadOpen(ctx: NativeAeadContext, nonce: Uint8Array, ad: Uint8Array, data: Uint8Array): boolean;
  /** Frees (and cleanses) the context now instead of at garbage collection. Idempotent. */
  aeadFree(ctx: NativeAeadContext): void;
  /** Contexts created and freed (finalizer or aeadFree) since the addon loaded, process-wide. */
  aeadStats(): { created: number; freed: number };
}

let aead: NativeAead | null | undefined;

/** The addon's in-place AEAD, or null when the addon (or its aead part) is unavailable. */
export function nativeAead(): NativeAead | null {
  if (aead === undefined) {
    aead = null;
    try {
      const b = loadNative() as unknown as Partial<NativeAead>;
      if (
        typeof b.aeadNew === 'function' &&
        typeof b.aeadSeal === 'function' &&
        typeof b.aeadOpen === 'function' &&
        typeof b.aeadFree === 'function' &&
        typeof b.aeadStats === 'function'
      ) {
        // the addon's functions themselves (they do not use `this`): one JS frame less per message
        aead = { aeadNew: b.aeadNew, aeadSeal: b.aeadSeal, aeadOpen: b.aeadOpen, aeadFree: b.aeadFree, aeadStats: b.aeadStats };
      }
    } catch {
      // optional: a missing addon, or one too old to have aead*, leaves the JS ciphers in place
    }
  }
  return aead;
}

// The byte grammar of one connection (WIRE.md §2): hs1 (32 raw bytes), hs2 (48 raw bytes), then frames of
// `len:u32be ‖ ciphertext[len]` with 16 ≤ len ≤ 65535. Pure and browser-safe: the Node writer lives in
// frame-writer.ts.
import { WireError } from './errors.ts';

/** Largest ciphertext of one frame (the Noise message limit). */
export const MAX_FRAME_LEN = 65535;
/** Smallest ciphertext of one frame: an AEAD tag over an empty plaintext. */
export const MIN_FRAME_LEN = 16;
/** Largest single write() that survives AF_VSOCK guest→host on current Nitro kernels. */
export const MAX_WRITE = 32768;
/** Bytes of the frame length prefix. */
export const FRAME_HEADER_LEN = 4;

function checkFrameLen(len: number): void {
  if (len > MAX_FRAME_LEN) {
    throw new WireError('WIRE_FRAME_TOO_LARGE', `frame length ${len} exceeds the maximum of ${MAX_FRAME_LEN}`);
  }
  if (len < MIN_FRAME_LEN) {
    throw new WireError('WIRE_FRAME_TOO_SMALL', `frame length ${len} is below the minimum of ${MIN_FRAME_LEN} (an AEAD tag)`);
  }
}

/** `len:u32be ‖ ciphertext` in one new buffer. Throws WIRE_FRAME_TOO_LARGE / WIRE_FRAME_TOO_SMALL. */
export function encodeFrame(ciphertext: Uint8Array): Uint8Array {
  const len = ciphertext.length;
  checkFrameLen(len);
  const out = new Uint8Array(FRAME_HEADER_LEN + len);
  writeU32(out, len);
  out.set(ciphertext, FRAME_HEADER_LEN);
  return out;
}

/** `encodeFrame` of the concatenation of `ciphertext` (e.g. CipherState.encryptParts output): one copy. */
export function encodeFrameParts(ciphertext: readonly Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of ciphertext) len += p.length;
  checkFrameLen(len);
  const out = new Uint8Array(FRAME_HEADER_LEN + len);
  writeU32(out, len);
  let at = FRAME_HEADER_LEN;
  for (const p of ciphertext) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The 4-byte `len:u32be` prefix of a frame whose ciphertext is `len` bytes. Throws like encodeFrame. */
export function encodeFrameHeader(len: number): Uint8Array {
  checkFrameLen(len);
  const out = new Uint8Array(FRAME_HEADER_LEN);
  writeU32(out, len);
  return out;
}

function writeU32(out: Uint8Array, len: number): void {
  out[0] = len >>> 24;
  out[1] = (len >>> 16) & 0xff;
  out[2] = (len >>> 8) & 0xff;
  out[3] = len & 0xff;
}

/** Chunks shorter than this are copied into a staging buffer so a stream of tiny reads costs O(1) per byte. */
const SMALL_CHUNK = 256;
/**
 * A staging buffer starts at the small size and doubles (up to the large one) each time one fills while bytes are
 * still buffered; the reader lets go of it whenever every byte has been taken, so an idle connection holds none.
 */
const STAGING_MIN = 512;
const STAGING_MAX = 4096;

/**
 * Incremental reader of one connection's inbound bytes. Feed it whatever the transport delivers with
 * `push()` (any chunking), then take the handshake messages with `readExact()` and frames with `nextFrame()`;
 * both return null until enough bytes are buffered.
 *
 * Ownership: `push()` takes the chunk; the caller must not modify it afterwards. Returned byte arrays may be
 * views into pushed chunks (no copy when a frame lies within one chunk) and are never modified by the reader.
 *
 * Errors are sticky: after nextFrame() threw, every later nextFrame()/readExact()/push() throws the same error.
 * After `end()`, a call that cannot be satisfied from the remaining bytes throws WIRE_TRUNCATED instead of
 * returning null (null then only means a clean end of stream).
 *
 * The reader does not bound `buffered` itself: the transport should stop reading (pause the socket) while
 * `buffered` exceeds what it is willing to hold, and resume after draining frames.
 */
export class FrameReader {
  #chunks: Uint8Array[] = [];
  /** Index of the first unconsumed chunk in #chunks. */
  #head = 0;
  /** Bytes of #chunks[#head] already consumed. */
  #off = 0;
  #buffered = 0;
  /** Length of the frame whose header was validated but whose body is incomplete; -1 if none. */
  #frameLen = -1;
  /** Size of the last readExact() that returned null; 0 if none pending. */
  #pendingExact = 0;
  #ended = false;
  #failure: WireError | null = null;
  #staging: Uint8Array | null = null;
  #stagingFill = 0;
  #stagingSize = STAGING_MIN;
  /** Start in #staging of the view that is currently the last chunk, or -1 if the last chunk is not staging. */
  #stagingStart = -1;

  /** Bytes held and not yet returned. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Bytes of memory the reader itself keeps referenced: its staging buffer (0 once everything was taken). */
  get stagingBytes(): number {
    return this.#staging === null ? 0 : this.#staging.length;
  }

  push(chunk: Uint8Array): void {
    if (this.#failure !== null) throw this.#failure;
    if (this.#ended) throw new WireError('WIRE_ENDED', `push() of ${chunk.length} bytes after end()`);
    const n = chunk.length;
    if (n === 0) return;
    this.#buffered += n;
    if (n >= SMALL_CHUNK) {
      this.#chunks.push(chunk);
      this.#stagingStart = -1;
      return;
    }
    // Small chunk: append into the staging buffer. Filled staging bytes are never rewritten, so views
    // handed out earlier stay valid.
    if (this.#staging === null || this.#stagingFill + n > this.#staging.length) {
      if (this.#staging !== null) this.#stagingSize = Math.min(this.#stagingSize * 2, STAGING_MAX);
      this.#staging = new Uint8Array(this.#stagingSize);
      this.#stagingFill = 0;
      this.#stagingStart = -1;
    }
    const staging = this.#staging;
    staging.set(chunk, this.#stagingFill);
    this.#stagingFill += n;
    const last = this.#chunks.length - 1;
    if (this.#stagingStart >= 0 && last >= this.#head) {
      // Extend the view that is already the last chunk (its start is unchanged, so #off stays valid).
      this.#chunks[last] = staging.subarray(this.#stagingStart, this.#stagingFill);
    } else {
      this.#stagingStart = this.#stagingFill - n;
      this.#chunks.push(staging.subarray(this.#stagingStart, this.#stagingFill));
    }
  }

  /**
   * Exactly `n` raw bytes (hs1 = 32, hs2 = 48), or null until they are buffered. Use before any frame.
   */
  readExact(n: number): Uint8Array | null {
    if (this.#failure !== null) throw this.#failure;
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`readExact(n): n must be a non-negative integer, got ${n}`);
    if (this.#buffered < n) {
      if (this.#ended) {
        throw new WireError('WIRE_TRUNCATED', `stream ended after ${this.#buffered} of ${n} expected handshake bytes`);
      }
      this.#pendingExact = n;
      return null;
    }
    this.#pendingExact = 0;
    return this.#take(n);
  }

  /**
   * The ciphertext of the next complete frame, or null. Throws WIRE_FRAME_TOO_LARGE / WIRE_FRAME_TOO_SMALL as
   * soon as the 4 length bytes are buffered. A frame that spans pushed chunks is copied into `alloc(len)` (a
   * reused buffer, say) instead of a new array; `lastFrameCopied` tells which happened.
   */
  nextFrame(alloc?: (n: number) => Uint8Array): Uint8Array | null {
    if (this.#failure !== null) throw this.#failure;
    this.#copied = false;
    if (this.#frameLen < 0) {
      if (this.#buffered < FRAME_HEADER_LEN) {
        if (this.#ended && this.#buffered > 0) {
          this.#fail(new WireError('WIRE_TRUNCATED', `stream ended inside a frame header (${this.#buffered} of 4 bytes)`));
        }
        return null;
      }
      const len = this.#peekU32();
      try {
        checkFrameLen(len);
      } catch (err) {
        this.#fail(err as WireError);
      }
      this.#skip(FRAME_HEADER_LEN);
      this.#frameLen = len;
    }
    const len = this.#frameLen;
    if (this.#buffered < len) {
      if (this.#ended) {
        this.#fail(new WireError('WIRE_TRUNCATED', `stream ended inside a frame: ${this.#buffered} of ${len} ciphertext bytes`));
      }
      return null;
    }
    this.#frameLen = -1;
    return this.#take(len, alloc);
  }

  /** Whether the frame nextFrame() returned last was copied (it spanned pushed chunks) rather than a view. */
  get lastFrameCopied(): boolean {
    return this.#copied;
  }
  #copied = false;

  /**
   * The stream ended. Throws WIRE_TRUNCATED if the buffered bytes end inside a pending handshake read or
   * inside a frame; complete frames still buffered stay readable. A no-op after an earlier failure.
   */
  end(): void {
    if (this.#ended || this.#failure !== null) return;
    this.#ended = true;
    if (this.#pendingExact > 0) {
      if (this.#buffered < this.#pendingExact) {
        throw new WireError('WIRE_TRUNCATED', `stream ended after ${this.#buffered} of ${this.#pendingExact} expected handshake bytes`);
      }
      return; // the caller has not taken its handshake bytes yet; later calls report any truncation
    }
    // Walk the remaining bytes as frames without consuming them.
    let pos = 0;
    let remaining = this.#buffered;
    if (this.#frameLen >= 0) {
      if (remaining < this.#frameLen) {
        throw new WireError('WIRE_TRUNCATED', `stream ended inside a frame: ${remaining} of ${this.#frameLen} ciphertext bytes`);
      }
      pos += this.#frameLen;
      remaining -= this.#frameLen;
    }
    while (remaining > 0) {
      if (remaining < FRAME_HEADER_LEN) {
        throw new WireError('WIRE_TRUNCATED', `stream ended inside a frame header (${remaining} of 4 bytes)`);
      }
      const len = this.#peekU32(pos);
      checkFrameLen(len);
      if (remaining - FRAME_HEADER_LEN < len) {
        throw new WireError(
          'WIRE_TRUNCATED',
          `stream ended inside a frame: ${remaining - FRAME_HEADER_LEN} of ${len} ciphertext bytes`,
        );
      }
      pos += FRAME_HEADER_LEN + len;
      remaining -= FRAME_HEADER_LEN + len;
    }
  }

  #fail(err: WireError): never {
    this.#failure = err;
    throw err;
  }

  /** Big-endian u32 at `at` bytes past the read position (requires 4 buffered bytes there). */
  #peekU32(at = 0): number {
    let value = 0;
    let need = 4;
    let i = this.#head;
    let off = this.#off + at;
    // Move to the chunk holding byte `at`.
    while (off >= this.#chunks[i]!.length) {
      off -= this.#chunks[i]!.length;
      i++;
    }
    while (need > 0) {
      const chunk = this.#chunks[i]!;
      while (need > 0 && off < chunk.length) {
        value = value * 256 + chunk[off++]!;
        need--;
      }
      i++;
      off = 0;
    }
    return value;
  }

  #skip(n: number): void {
    this.#buffered -= n;
    while (n > 0) {
      const chunk = this.#chunks[this.#head]!;
      const avail = chunk.length - this.#off;
      if (avail > n) {
        this.#off += n;
        return;
      }
      n -= avail;
      this.#advanceChunk();
    }
  }

  #take(n: number, alloc?: (n: number) => Uint8Array): Uint8Array {
    if (n === 0) return new Uint8Array(0);
    this.#buffered -= n;
    const first = this.#chunks[this.#head]!;
    const avail = first.length - this.#off;
    if (avail >= n) {
      const view = first.subarray(this.#off, this.#off + n);
      if (avail === n) this.#advanceChunk();
      else this.#off += n;
      return view;
    }
    const out = alloc === undefined ? new Uint8Array(n) : alloc(n);
    this.#copied = true;
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[this.#head]!;
      const part = Math.min(chunk.length - this.#off, n - filled);
      out.set(chunk.subarray(this.#off, this.#off + part), filled);
      filled += part;
      if (this.#off + part === chunk.length) this.#advanceChunk();
      else this.#off += part;
    }
    return out;
  }

  #advanceChunk(): void {
    this.#chunks[this.#head] = EMPTY; // drop the reference
    this.#head++;
    this.#off = 0;
    if (this.#head === this.#chunks.length) {
      this.#chunks.length = 0;
      this.#head = 0;
      this.#stagingStart = -1;
      // Everything was taken: views handed out keep their own reference, the reader needs none.
      this.#staging = null;
      this.#stagingFill = 0;
    } else if (this.#head >= 64 && this.#head * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }
}

const EMPTY = new Uint8Array(0);

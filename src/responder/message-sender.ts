// A session's send path: every byte toward the client goes through one FrameWriter (≤ 32 KiB per write, one
// write at a time: WIRE.md §2); messages are encoded and encrypted when queued, so the nonce order is the
// write order.
import type { Duplex } from 'node:stream';
import type { CipherState } from '../noise/cipher-state.ts';
import { FrameWriter } from '../wire/frame-writer.ts';
import { encodeServerMessageInto, encodeServerMessageParts, type ByteEncoding, type ServerMessage } from '../wire/messages.ts';
import { returnFrameBuffer, returnMessageBuffer, takeMessageBuffer } from './message-buffers.ts';

/** Payloads from this size on are encoded into a reused buffer (below, a fresh small one costs less). */
const POOLED_MIN = 4096;
const NOOP = (): void => {};

/** One settled promise shared by every session that has nothing pending (promises are immutable). */
const SETTLED: Promise<void> = Promise.resolve();

export class MessageSender {
  readonly #writer: FrameWriter;
  readonly #onWritten: () => void;
  readonly #onFailed: (err: unknown) => void;
  #send: CipherState | null = null;
  #lastWrite: Promise<void> = SETTLED;

  /** `onWritten` / `onFailed`: after each write, or its failure. */
  constructor(sock: Duplex, onWritten: () => void, onFailed: (err: unknown) => void) {
    // Frames queued together share writes (≤ 32768 bytes each, one at a time: WIRE.md §2).
    this.#writer = new FrameWriter(sock, { coalesce: true });
    this.#onWritten = onWritten;
    this.#onFailed = onFailed;
  }

  /** True once the handshake is done (messages can be encrypted). */
  get ready(): boolean {
    return this.#send !== null;
  }

  get queuedBytes(): number {
    return this.#writer.queuedBytes;
  }

  /** Resolves when everything queued so far has been written. */
  get flushed(): Promise<void> {
    return this.#lastWrite;
  }

  /** The handshake is done: every later message is encrypted with `send`. */
  start(send: CipherState): void {
    this.#send = send;
  }

  /** Queues bytes as they are (hs2: one 48-byte write). */
  writeRaw(bytes: Uint8Array): Promise<void> {
    return this.#track(this.#writer.writeRaw(bytes));
  }

  /**
   * Encodes, encrypts and queues one message; only once ready. Throws (nothing queued) if it cannot be sealed;
   * the promise resolves when written or failed (never rejects).
   * `ownedPayload`: the payload is handed over (an app socket's read buffers) and may be encrypted in place.
   * `pooled`: the reused buffer (message-buffers.ts) an owned bstr payload lies in (joined app reads); it goes back
   * there once nothing needs it.
   */
  send(msg: ServerMessage, enc: ByteEncoding, ownedPayload: boolean, pooled?: Uint8Array): Promise<void> {
    const payload = (msg as { payload?: Uint8Array }).payload;
    if (payload !== undefined && payload.length >= POOLED_MIN && !(ownedPayload && enc === 'bstr')) return this.#sendPooled(msg, enc);
    // In parts (a large bstr payload uncopied; ciphertext parts and tag): the writer hands them to the sink as
    // they are. One part is a fresh encoding, ours to encrypt in place; a separate payload part only if owned.
    const pt = encodeServerMessageParts(msg, enc);
    let ct: Uint8Array[];
    try {
      ct = pt.length === 1 || ownedPayload ? this.#send!.encryptOwned(pt) : this.#send!.encryptParts(pt);
    } catch (err) {
      pooled?.fill(0);
      throw err;
    }
    const written = this.#writer.writeFrameParts(ct);
    if (pooled !== undefined) {
      // Sealed in place (the addon), the buffer holds ciphertext until written; else it still holds the plaintext.
      if (ct.some((part) => part.buffer === pooled.buffer)) written.then(() => returnMessageBuffer(pooled), NOOP);
      else returnFrameBuffer(pooled);
    }
    return this.#track(written);
  }

  /** A large message encoded into a reused buffer and sealed there; the buffer comes back once written. */
  #sendPooled(msg: ServerMessage, enc: ByteEncoding): Promise<void> {
    const buf = takeMessageBuffer();
    let ct: Uint8Array[];
    try {
      const pt = buf.subarray(0, encodeServerMessageInto(msg, enc, buf, 0));
      ct = this.#send!.encryptOwned(pt);
      if (ct[0] !== pt && pt.length > 0) {
        // not sealed in place (no addon): the ciphertext is elsewhere, the plaintext is wiped and the buffer free
        pt.fill(0);
        returnMessageBuffer(buf);
        return this.#track(this.#writer.writeFrameParts(ct));
      }
    } catch (err) {
      returnMessageBuffer(buf);
      throw err;
    }
    const written = this.#writer.writeFrameParts(ct);
    // After a failed write the sink may still hold a view: that buffer is dropped, not reused.
    written.then(() => returnMessageBuffer(buf), NOOP);
    return this.#track(written);
  }

  #track(write: Promise<void>): Promise<void> {
    const done = write.then(this.#onWritten, this.#onFailed);
    this.#lastWrite = done;
    return done;
  }
}

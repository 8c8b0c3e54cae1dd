// A session's send path: every byte toward the client goes through one FrameWriter (≤ 32 KiB per write, one
// write at a time: WIRE.md §2); messages are encoded and encrypted when queued, so the nonce order is the
// write order.
import type { Duplex } from 'node:stream';
import type { CipherState } from '../noise/cipher-state.ts';
import { FrameWriter } from '../wire/frame-writer.ts';
import { encodeServerMessageParts, type ByteEncoding, type ServerMessage } from '../wire/messages.ts';

export class MessageSender {
  readonly #writer: FrameWriter;
  readonly #onWritten: () => void;
  readonly #onFailed: (err: unknown) => void;
  #send: CipherState | null = null;
  #lastWrite: Promise<void> = Promise.resolve();

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
   * Encodes and encrypts one message (throws if it cannot); only once ready.
   * `ownedPayload`: the payload is handed over (an app socket's read buffers) and may be encrypted in place.
   */
  seal(msg: ServerMessage, enc: ByteEncoding, ownedPayload: boolean): Uint8Array[] {
    // In parts (a large bstr payload uncopied; ciphertext parts and tag): the writer hands them to the sink as
    // they are. One part is a fresh encoding, ours to encrypt in place; a separate payload part only if owned.
    const pt = encodeServerMessageParts(msg, enc);
    return pt.length === 1 || ownedPayload ? this.#send!.encryptOwned(pt) : this.#send!.encryptParts(pt);
  }

  /** Queues one sealed frame; resolves when written or failed (never rejects). */
  writeFrame(ct: Uint8Array[]): Promise<void> {
    return this.#track(this.#writer.writeFrameParts(ct));
  }

  #track(write: Promise<void>): Promise<void> {
    const done = write.then(this.#onWritten, this.#onFailed);
    this.#lastWrite = done;
    return done;
  }
}

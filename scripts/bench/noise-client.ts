// A minimal benchmark client for the agent's TCP listener: initiator handshake, FrameReader, codec, socket
// backpressure. Every server message after the handshake goes to `onMessage` (set it before the request that
// provokes the reply). Shared by the responder and http benches; not a bench itself (run.ts skips it).
import net from 'node:net';
import { createHandshake } from '../../src/noise/handshake.ts';
import type { CipherState } from '../../src/noise/cipher-state.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { TAG_LEN } from '../../src/noise/primitives.ts';
import { encodeFrameHeader, FRAME_HEADER_LEN, FrameReader, MAX_FRAME_LEN } from '../../src/wire/frames.ts';
import { installNativeIntArrayCodec } from '../../src/wire/native-int-array.ts';
import { decodeServerMessage, encodeClientMessageInto, type ByteEncoding, type ClientMessage, type ServerMessage } from '../../src/wire/messages.ts';

// Like the SDK's node entry: the addon's int-array loops when it is built.
installNativeIntArrayCodec();

export class NoiseClient {
  readonly socket: net.Socket;
  readonly #reader = new FrameReader();
  #send!: CipherState;
  #recv!: CipherState;
  onMessage: (m: ServerMessage) => void = () => {};

  private constructor(socket: net.Socket) {
    this.socket = socket;
  }

  static async connect(port: number): Promise<NoiseClient> {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    await new Promise<void>((r, j) => socket.once('connect', r).once('error', j));
    const c = new NoiseClient(socket);
    const hs = createHandshake({ role: 'initiator', primitives: nodePrimitives });
    await new Promise<void>((resolve, reject) => {
      socket.on('error', reject);
      socket.on('data', (chunk: Buffer) => {
        c.#reader.push(chunk);
        if (c.#recv === undefined) {
          const hs2 = c.#reader.readExact(48);
          if (hs2 === null) return;
          hs.readMessage(hs2);
          const t = hs.split();
          c.#send = t.send;
          c.#recv = t.recv;
          resolve();
        }
        // What onMessage sends in answer to the frames of one read leaves in one writev, not a syscall each.
        socket.cork();
        try {
          for (let ct = c.#reader.nextFrame(c.#assemble); ct !== null; ct = c.#reader.nextFrame(c.#assemble)) {
            const { message, encoding } = decodeServerMessage(c.#recv.decryptOwned(ct));
            // a byte-string payload is a view of the frame: a frame assembled in the scratch buffer keeps it
            if (encoding === 'bstr' && c.#reader.lastFrameCopied) c.#scratch = new Uint8Array(MAX_FRAME_LEN);
            c.onMessage(message);
          }
        } finally {
          socket.uncork();
        }
      });
      socket.write(hs.writeMessage());
    });
    return c;
  }

  /** Where a received frame that spans socket reads is assembled (reused while nothing keeps a view of it). */
  #scratch = new Uint8Array(MAX_FRAME_LEN);
  readonly #assemble = (n: number): Uint8Array => this.#scratch.subarray(0, n);

  /** Frame buffers whose write completed, reused for the next frames (a load generator should not spend its CPU in GC). */
  readonly #pool: Uint8Array[] = [];

  /** false: the socket buffer is full, wait for drain. */
  send(m: ClientMessage, enc: ByteEncoding = 'array'): boolean {
    // The frame is assembled in a pooled buffer: the message encoded straight into it, sealed there in place (the
    // addon's AEAD; node:crypto's parts are copied in instead), written as one view, the buffer reused after the write.
    const buf = this.#pool.pop() ?? new Uint8Array(FRAME_HEADER_LEN + MAX_FRAME_LEN);
    const len = encodeClientMessageInto(m, enc, buf.subarray(0, buf.length - TAG_LEN), FRAME_HEADER_LEN) - FRAME_HEADER_LEN;
    buf.set(encodeFrameHeader(len + TAG_LEN), 0);
    let at = FRAME_HEADER_LEN;
    for (const c of this.#send.encryptOwned(buf.subarray(FRAME_HEADER_LEN, at + len))) {
      if (c.buffer !== buf.buffer || c.byteOffset !== buf.byteOffset + at) buf.set(c, at);
      at += c.length;
    }
    return this.socket.write(buf.subarray(0, at), () => this.#pool.push(buf));
  }

  next(): Promise<ServerMessage> {
    return new Promise((resolve) => (this.onMessage = resolve));
  }

  close(): void {
    this.socket.destroy();
  }
}

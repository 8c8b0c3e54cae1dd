// A minimal benchmark client for the agent's TCP listener: initiator handshake, FrameReader, codec, socket
// backpressure. Every server message after the handshake goes to `onMessage` (set it before the request that
// provokes the reply). Shared by the responder and http benches; not a bench itself (run.ts skips it).
import net from 'node:net';
import { createHandshake } from '../../src/noise/handshake.ts';
import type { CipherState } from '../../src/noise/cipher-state.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { encodeFrameHeader, FrameReader } from '../../src/wire/frames.ts';
import { installNativeIntArrayCodec } from '../../src/wire/native-int-array.ts';
import { decodeServerMessage, encodeClientMessageParts, type ByteEncoding, type ClientMessage, type ServerMessage } from '../../src/wire/messages.ts';

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
        for (let ct = c.#reader.nextFrame(); ct !== null; ct = c.#reader.nextFrame()) c.onMessage(decodeServerMessage(c.#recv.decryptOwned(ct)).message);
      });
      socket.write(hs.writeMessage());
    });
    return c;
  }

  /** false: the socket buffer is full, wait for drain. */
  send(m: ClientMessage, enc: ByteEncoding = 'array'): boolean {
    // Header and ciphertext parts as one corked writev: a large bstr payload is encrypted without being copied
    // into the message first, and the ciphertext is not copied into a frame (what the SDK's node transport does).
    const pt = encodeClientMessageParts(m, enc);
    // one part: a fresh encoding, ours to encrypt in place; else the payload is the caller's
    const ct = pt.length === 1 ? this.#send.encryptOwned(pt) : this.#send.encryptParts(pt);
    let len = 0;
    for (const p of ct) len += p.length;
    const s = this.socket;
    s.cork();
    s.write(encodeFrameHeader(len));
    for (let i = 0; i < ct.length - 1; i++) s.write(ct[i]!);
    const ok = s.write(ct[ct.length - 1]!);
    s.uncork();
    return ok;
  }

  next(): Promise<ServerMessage> {
    return new Promise((resolve) => (this.onMessage = resolve));
  }

  close(): void {
    this.socket.destroy();
  }
}

// One connection to the agent: a WebSocket carrying the Noise NN handshake and then encrypted frames
// (WIRE.md §2–§3). Browser-safe: the WebSocket constructor and the Noise primitives are injected.
//
// Writing: every message is encoded, encrypted and sent as ONE WebSocket message holding one `len ‖ ct` record,
// synchronously, so the nonce order is the send order (the single ordered writer). hs1 is one 32-byte message.
// Reading: whatever the bridge delivers (split or merged records) goes through a FrameReader; hs2 is the first
// 48 bytes. Any receive failure (bad length, AEAD failure, undecodable CBOR, a text message) ends the channel.
import { createHandshake } from '../noise/handshake.ts';
import type { CipherState } from '../noise/cipher-state.ts';
import type { NoisePrimitives } from '../noise/primitives.ts';
import { encodeFrameParts, FrameReader } from '../wire/frames.ts';
import { decodeServerMessage, encodeClientMessageParts, type ByteEncoding, type ClientMessage, type ServerMessage } from '../wire/messages.ts';
import { abortError, ClientError, transportErrorName } from './errors.ts';
import { maskUserinfo } from '../util/url-userinfo.ts';

const HS2_LEN = 48;

/** The part of the WHATWG WebSocket this SDK uses (browsers, undici, happy-dom, `ws` all fit). */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: never) => void): void;
  /** BoundedWebSocket (node.ts): the error of the socket under the upgrade, when that is why it failed. */
  readonly transportError?: Error | null;
  /** BoundedWebSocket (node.ts): stop reading the connection, and read on (a slow reader holds the sender back). */
  pauseReading?(): void;
  resumeReading?(): void;
}

/** `new WebSocket(url)` or, when headers are given (undici on Node), `new WebSocket(url, { headers })`. */
export type WebSocketConstructor = new (url: string, protocolsOrInit?: string | string[] | { headers?: Record<string, string> }) => WebSocketLike;

export interface ChannelOptions {
  url: string;
  WebSocket: WebSocketConstructor;
  primitives: NoisePrimitives;
  /** Extra headers on the WebSocket upgrade request (needs a WebSocket implementation that takes them, e.g. undici). */
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface ChannelListener {
  message(msg: ServerMessage): void;
  /** Called once when the channel ends for any reason; `error` says why. */
  closed(error: ClientError): void;
}

const OPEN = 1;

export class Channel {
  readonly handshakeHash: Uint8Array;
  /** Encoding of byte fields in what we send ('bstr' once the agent advertised it). */
  encoding: ByteEncoding = 'array';
  readonly #ws: WebSocketLike;
  readonly #send: CipherState;
  readonly #recv: CipherState;
  readonly #reader: FrameReader;
  #listener: ChannelListener | null = null;
  #queued: ServerMessage[] = [];
  #closeError: ClientError | null = null;
  /** holdReading() calls not released yet: the connection is not read while there is one. */
  #readHolds = 0;

  private constructor(ws: WebSocketLike, reader: FrameReader, send: CipherState, recv: CipherState, hash: Uint8Array) {
    this.#ws = ws;
    this.#reader = reader;
    this.#send = send;
    this.#recv = recv;
    this.handshakeHash = hash;
  }

  /** Opens the WebSocket and runs the initiator handshake. Rejects with CLIENT_CONNECT_FAILED / CLIENT_PROTOCOL / abort errors. */
  static open(opts: ChannelOptions): Promise<Channel> {
    return new Promise<Channel>((resolve, reject) => {
      const { signal } = opts;
      if (signal?.aborted) {
        reject(abortError(signal));
        return;
      }
      // Named without its credentials (`wss://user:pass@host/`): error messages end up in logs.
      const where = maskUserinfo(opts.url);
      let ws: WebSocketLike;
      try {
        ws = opts.headers !== undefined && Object.keys(opts.headers).length > 0 ? new opts.WebSocket(opts.url, { headers: opts.headers }) : new opts.WebSocket(opts.url);
        ws.binaryType = 'arraybuffer';
      } catch (err) {
        reject(new ClientError('CLIENT_CONNECT_FAILED', `cannot open a WebSocket to ${where}: ${String((err as Error)?.message ?? err).split(opts.url).join(where)}`, { cause: err }));
        return;
      }
      const reader = new FrameReader();
      const hs = createHandshake({ role: 'initiator', primitives: opts.primitives });
      let channel: Channel | null = null;
      let settled = false;
      const fail = (err: ClientError): void => {
        if (channel !== null) {
          channel.#fail(err);
          return;
        }
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        try {
          ws.close();
        } catch {
          // already closing
        }
        reject(err);
      };
      const onAbort = (): void => fail(abortError(signal!));
      signal?.addEventListener('abort', onAbort, { once: true });

      ws.addEventListener('open', () => {
        if (settled) return;
        try {
          ws.send(hs.writeMessage());
        } catch (err) {
          fail(new ClientError('CLIENT_CONNECT_FAILED', `cannot send the handshake: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
        }
      });
      ws.addEventListener('message', (event: { data: unknown }) => {
        if (channel !== null) {
          channel.#onData(event.data);
          return;
        }
        if (settled) return;
        try {
          const bytes = toBytes(event.data);
          reader.push(bytes);
          const hs2 = reader.readExact(HS2_LEN);
          if (hs2 === null) return;
          hs.readMessage(hs2);
          const t = hs.split();
          channel = new Channel(ws, reader, t.send, t.recv, t.handshakeHash);
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          resolve(channel);
          if (reader.buffered > 0) channel.#drain();
        } catch (err) {
          fail(err instanceof ClientError ? err : new ClientError('CLIENT_PROTOCOL', `handshake failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
        }
      });
      ws.addEventListener('error', () => {
        const cause = ws.transportError ?? undefined;
        fail(new ClientError('CLIENT_CONNECT_FAILED', `WebSocket error on ${where}${cause === undefined ? '' : `: the connection failed (${transportErrorName(cause)})`}`, { cause }));
      });
      ws.addEventListener('close', (event: { code?: number; reason?: string }) => {
        const detail = `code ${event.code ?? '?'}${event.reason ? `, ${event.reason}` : ''}`;
        if (channel !== null) channel.#fail(new ClientError('CLIENT_RETRYABLE', `the connection to the agent closed (${detail})`));
        else fail(new ClientError('CLIENT_CONNECT_FAILED', `the WebSocket to ${where} closed before the handshake completed (${detail})`));
      });
    });
  }

  get closed(): boolean {
    return this.#closeError !== null;
  }

  /** Bytes the WebSocket has queued and not yet sent (for upload backpressure). */
  get bufferedAmount(): number {
    return this.#ws.bufferedAmount;
  }

  /** Whether holdReading() can stop reading the connection (the WebSocket can pause: Node's BoundedWebSocket). */
  get canPause(): boolean {
    return typeof this.#ws.pauseReading === 'function' && typeof this.#ws.resumeReading === 'function';
  }

  /**
   * Stops reading the connection until the returned function (idempotent) and every other hold's are called: the
   * protocol's only flow control. Every message of the session waits meanwhile. A no-op unless canPause.
   */
  holdReading(): () => void {
    if (!this.canPause || this.#closeError !== null) return () => {};
    if (this.#readHolds++ === 0) this.#ws.pauseReading!();
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this.#readHolds === 0 && this.#closeError === null) this.#ws.resumeReading!();
    };
  }

  /** Receives every later message; messages that arrived before are delivered first. */
  listen(listener: ChannelListener): void {
    this.#listener = listener;
    const queued = this.#queued;
    this.#queued = [];
    for (const m of queued) listener.message(m);
    if (this.#closeError !== null) listener.closed(this.#closeError);
  }

  /** Encrypts and sends one message as one WebSocket message. Throws the close error when the channel is gone. */
  send(msg: ClientMessage): void {
    if (this.#closeError !== null) throw this.#closeError;
    if (this.#ws.readyState !== OPEN) {
      this.#fail(new ClientError('CLIENT_RETRYABLE', 'the connection to the agent is closing'));
      throw this.#closeError!;
    }
    let frame: Uint8Array;
    try {
      // in parts: a large bstr payload is encrypted where it lies, and the ciphertext copied once, into the frame
      frame = encodeFrameParts(this.#send.encryptParts(encodeClientMessageParts(msg, this.encoding)));
    } catch (err) {
      // An encoding problem is the caller's (sizes are checked before); an encryption failure poisons the channel.
      throw new ClientError('CLIENT_PROTOCOL', `cannot send ${msg.type}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
    this.#ws.send(frame);
  }

  /** Closes the WebSocket; the listener hears `error` (default CLIENT_CLOSED). */
  close(error?: ClientError): void {
    this.#fail(error ?? new ClientError('CLIENT_CLOSED', 'the client was closed'));
  }

  #onData(data: unknown): void {
    if (this.#closeError !== null) return;
    try {
      this.#reader.push(toBytes(data));
    } catch (err) {
      this.#fail(err instanceof ClientError ? err : new ClientError('CLIENT_PROTOCOL', `receive failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
      return;
    }
    this.#drain();
  }

  #drain(): void {
    try {
      for (let ct = this.#reader.nextFrame(); ct !== null && this.#closeError === null; ct = this.#reader.nextFrame()) {
        const { message } = decodeServerMessage(this.#recv.decrypt(ct));
        if (this.#listener !== null) this.#listener.message(message);
        else this.#queued.push(message);
      }
    } catch (err) {
      this.#fail(new ClientError('CLIENT_PROTOCOL', `receive failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
    }
  }

  #fail(err: ClientError): void {
    if (this.#closeError !== null) return;
    this.#closeError = err;
    // a paused connection would never read the agent's close frame
    if (this.#readHolds > 0) this.#ws.resumeReading?.();
    try {
      this.#ws.close(1000);
    } catch {
      // already closed
    }
    this.#listener?.closed(err);
  }
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new ClientError('CLIENT_PROTOCOL', `expected a binary WebSocket message, found ${typeof data === 'string' ? 'text' : typeof data}`);
}

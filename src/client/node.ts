// The Node entry of the client SDK: the only file of src/client allowed Node built-ins and undici. It injects the
// node:crypto Noise suite (13–30× faster than @noble) and undici's WebSocket with a message bound (BoundedWebSocket).
import '../attestation/ecdsa-node.ts'; // node:crypto ECDSA for attestation checks (ecdsa.ts says why)
import { Duplex } from 'node:stream';
import type { ReadableStream as NodeReadable, WritableStream as NodeWritable } from 'node:stream/web';
import { Dispatcher, getGlobalDispatcher, WebSocket as UndiciWebSocket } from 'undici';
import { nodePrimitives } from '../noise/suite-node.ts';
import { installNativeIntArrayCodec } from '../wire/native-int-array.ts';
import type { WebSocketConstructor } from './channel.ts';
import { ClientError } from './errors.ts';
import { connect as connectBrowser, type Client, type ClientStream } from './index.ts';
import { connectHttps, type HttpsConnectOptions } from './tls-client.ts';
import { socketPause, type SocketPause } from './socket-pause.ts';
import { destroyUpgradeSocketOnError, upgradeKey } from './upgrade-tls-error.ts';

export * from './index.ts';
export type { HttpsConnectOptions } from './tls-client.ts';

/**
 * The largest WebSocket message accepted from the bridge. WIRE.md §2: one record is at most 4 + 65535 bytes, but
 * a bridge may merge server→client records into one message, so one record is no bound; our bridge sends each
 * agent socket read (≤ 64 KiB) as one message. 1 MiB — the bridge's own limit for client messages — leaves
 * room for merging bridges while keeping an untrusted bridge far below undici's default of 128 MiB, which it
 * would buffer in full before the channel checks a byte.
 */
export const MAX_BRIDGE_MESSAGE_BYTES = 1 << 20;

/**
 * Dispatches through `inner` — the user's (a ProxyAgent, say) or undici's global one — but gives undici's WebSocket
 * our message bound: it reads the bound from its dispatcher's webSocketOptions, which a ProxyAgent, an
 * EnvHttpProxyAgent or a composed dispatcher does not let one set (128 MiB, or none at all).
 */
class BoundedDispatcher extends Dispatcher {
  readonly #inner: Dispatcher;
  #stopWatching: (() => void) | null = null;
  /** The error of the socket that carried the upgrade, once it failed (upgrade-tls-error.ts). */
  transportError: Error | null = null;
  /** Pauses the socket that carried the upgrade (the WebSocket's from then on), once it was written. */
  socket: SocketPause | null = null;
  constructor(inner: Dispatcher) {
    super();
    this.#inner = inner;
  }
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const key = upgradeKey(options);
    if (key !== null) {
      this.release();
      this.#stopWatching = destroyUpgradeSocketOnError(
        key,
        (err) => (this.transportError = err),
        (socket) => (this.socket = socketPause(socket)),
      );
    }
    return this.#inner.dispatch(options, handler);
  }
  /** Stops watching for the upgrade request (the WebSocket closed). */
  release(): void {
    this.#stopWatching?.();
    this.#stopWatching = null;
  }
  /** maxFragments: undici's default. */
  get webSocketOptions(): { maxFragments: number; maxPayloadSize: number } {
    return { maxFragments: 131_072, maxPayloadSize: MAX_BRIDGE_MESSAGE_BYTES };
  }
}

type BoundedInit = { protocols?: string | string[]; headers?: Record<string, string>; dispatcher?: Dispatcher };

/** WebSocket's second argument (protocols, or an init object) as an init object. */
const initOf = (protocolsOrInit?: string | string[] | BoundedInit): BoundedInit =>
  protocolsOrInit === undefined || typeof protocolsOrInit === 'string' || Array.isArray(protocolsOrInit) ? { protocols: protocolsOrInit ?? [] } : protocolsOrInit;

/**
 * undici's WebSocket, with messages above MAX_BRIDGE_MESSAGE_BYTES failing the connection (close 1009) unread, and
 * pauseReading()/resumeReading() (socket-pause.ts) for the client's onBufferFull 'pause'. It
 * connects through `init.dispatcher`, else undici's global dispatcher as it is at construction (so a proxy set with
 * setGlobalDispatcher is used), the bound applying either way. A TLS error on the socket of the upgrade fails it at
 * once instead of leaving it CONNECTING (upgrade-tls-error.ts).
 */
export class BoundedWebSocket extends UndiciWebSocket {
  readonly #dispatcher: BoundedDispatcher;
  constructor(url: string, protocolsOrInit?: string | string[] | BoundedInit) {
    const init = initOf(protocolsOrInit);
    const dispatcher = new BoundedDispatcher(init.dispatcher ?? getGlobalDispatcher());
    super(url, { ...init, dispatcher });
    this.#dispatcher = dispatcher;
    this.addEventListener('close', () => dispatcher.release());
  }
  /** Why the socket under the upgrade failed (a TLS record error, say), for the channel's error message. */
  get transportError(): Error | null {
    return this.#dispatcher.transportError;
  }
  /** Stops reading the connection (Channel.holdReading): TCP holds the bridge back until resumeReading(). */
  pauseReading(): void {
    this.#dispatcher.socket?.pause();
  }
  resumeReading(): void {
    this.#dispatcher.socket?.resume();
  }
}

/** BoundedWebSocket through `dispatcher` (Channel constructs its WebSocket with the url and headers only). */
function boundedWebSocketVia(dispatcher: Dispatcher): WebSocketConstructor {
  return class extends BoundedWebSocket {
    constructor(url: string, protocolsOrInit?: string | string[] | BoundedInit) {
      super(url, { ...initOf(protocolsOrInit), dispatcher });
    }
  } as unknown as WebSocketConstructor;
}

export interface NodeConnectOptions extends HttpsConnectOptions {
  /**
   * ws:// and wss:// only: the undici Dispatcher the bridge WebSocket connects through, e.g. `new ProxyAgent(url)`
   * or `new EnvHttpProxyAgent()` to reach the bridge through an HTTP proxy. Default: undici's global dispatcher
   * (setGlobalDispatcher). The 1 MiB message bound applies either way (the dispatcher's own
   * webSocket.maxPayloadSize is not used). Not with options.WebSocket, which brings its own transport.
   */
  dispatcher?: Dispatcher;
}

/**
 * connect() with Node defaults: nodePrimitives, and BoundedWebSocket even where Node has a global WebSocket (Node 22+
 * always does: undici's, unbounded — an untrusted bridge could make it buffer 128 MiB); only an explicit
 * options.WebSocket replaces it. An https://
 * URL goes to the enclave's attested TLS ingress instead (tls-client.ts): same Client API, trust from the
 * attestation document in the certificate (never from system roots), verified on every TLS connection.
 */
export function connect(url: string, options: NodeConnectOptions): Promise<Client> {
  const dispatcher = options?.dispatcher;
  if (dispatcher !== undefined) {
    if (dispatcher === null || typeof dispatcher !== 'object' || typeof (dispatcher as { dispatch?: unknown }).dispatch !== 'function') return Promise.reject(new ClientError('CLIENT_BAD_OPTIONS', 'dispatcher: expected an undici Dispatcher (e.g. new ProxyAgent(url))'));
    if (options.WebSocket !== undefined) return Promise.reject(new ClientError('CLIENT_BAD_OPTIONS', 'dispatcher: not with options.WebSocket (give one or the other)'));
    if (typeof url === 'string' && /^https:/i.test(url)) return Promise.reject(new ClientError('CLIENT_BAD_OPTIONS', 'dispatcher: applies to ws:// and wss:// only (https:// connects with node:tls)'));
  }
  if (typeof url === 'string' && /^https:/i.test(url)) return connectHttps(url, options);
  if (options?.nonce !== undefined) return Promise.reject(new ClientError('CLIENT_BAD_OPTIONS', 'nonce: applies to https:// only (the Noise channel binds its own handshake hash)'));
  installNativeIntArrayCodec(); // the C int-array loops for large byte fields, when the addon is built
  const WebSocket = options.WebSocket ?? (dispatcher !== undefined ? boundedWebSocketVia(dispatcher) : (BoundedWebSocket as unknown as WebSocketConstructor));
  const { dispatcher: _dispatcher, ...rest } = options;
  return connectBrowser(url, { primitives: nodePrimitives, ...rest, WebSocket });
}

/** A ClientStream (openStream / upgrade) as a Node Duplex, for libraries that want a socket-like object. */
export function toNodeDuplex(stream: ClientStream): Duplex {
  return Duplex.fromWeb(
    { readable: stream.readable as unknown as NodeReadable<Uint8Array>, writable: stream.writable as unknown as NodeWritable<Uint8Array> },
    { objectMode: false },
  );
}

// The Node entry of the client SDK: the only file of src/client allowed Node built-ins and undici. It injects the
// node:crypto Noise suite (13–30× faster than @noble) and undici's WebSocket with a message bound (BoundedWebSocket).
import '../attestation/ecdsa-node.ts'; // node:crypto ECDSA for attestation checks (ecdsa.ts says why)
import { Duplex } from 'node:stream';
import type { ReadableStream as NodeReadable, WritableStream as NodeWritable } from 'node:stream/web';
import { Agent, WebSocket as UndiciWebSocket } from 'undici';
import { nodePrimitives } from '../noise/suite-node.ts';
import { installNativeIntArrayCodec } from '../wire/native-int-array.ts';
import type { WebSocketConstructor } from './channel.ts';
import { ClientError } from './errors.ts';
import { connect as connectBrowser, type Client, type ClientStream } from './index.ts';
import { connectHttps, type HttpsConnectOptions } from './tls-client.ts';

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

let boundedAgent: Agent | undefined;

/** undici's WebSocket, with messages above MAX_BRIDGE_MESSAGE_BYTES failing the connection (close 1009) unread. */
export class BoundedWebSocket extends UndiciWebSocket {
  constructor(url: string, protocolsOrInit?: string | string[] | { headers?: Record<string, string> }) {
    boundedAgent ??= new Agent({ webSocket: { maxPayloadSize: MAX_BRIDGE_MESSAGE_BYTES } });
    const init = protocolsOrInit === undefined || typeof protocolsOrInit === 'string' || Array.isArray(protocolsOrInit) ? { protocols: protocolsOrInit ?? [] } : protocolsOrInit;
    super(url, { ...init, dispatcher: boundedAgent });
  }
}

/**
 * connect() with Node defaults: nodePrimitives, and BoundedWebSocket even where Node has a global WebSocket (Node 22+
 * always does: undici's, unbounded — an untrusted bridge could make it buffer 128 MiB); only an explicit
 * options.WebSocket replaces it. An https://
 * URL goes to the enclave's attested TLS ingress instead (tls-client.ts): same Client API, trust from the
 * attestation document in the certificate (never from system roots), verified on every TLS connection.
 */
export function connect(url: string, options: HttpsConnectOptions): Promise<Client> {
  if (typeof url === 'string' && /^https:/i.test(url)) return connectHttps(url, options);
  if (options?.nonce !== undefined) return Promise.reject(new ClientError('CLIENT_BAD_OPTIONS', 'nonce: applies to https:// only (the Noise channel binds its own handshake hash)'));
  installNativeIntArrayCodec(); // the C int-array loops for large byte fields, when the addon is built
  const WebSocket = options.WebSocket ?? (BoundedWebSocket as unknown as WebSocketConstructor);
  return connectBrowser(url, { primitives: nodePrimitives, ...options, WebSocket });
}

/** A ClientStream (openStream / upgrade) as a Node Duplex, for libraries that want a socket-like object. */
export function toNodeDuplex(stream: ClientStream): Duplex {
  return Duplex.fromWeb(
    { readable: stream.readable as unknown as NodeReadable<Uint8Array>, writable: stream.writable as unknown as NodeWritable<Uint8Array> },
    { objectMode: false },
  );
}

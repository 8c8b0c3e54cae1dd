// The Node entry of the client SDK: the only file of src/client allowed Node built-ins and undici. It injects the
// node:crypto Noise suite (13–30× faster than @noble) and, where Node has no global WebSocket (Node 20), undici's.
import '../attestation/ecdsa-node.ts'; // node:crypto ECDSA for attestation checks (ecdsa.ts says why)
import { Duplex } from 'node:stream';
import type { ReadableStream as NodeReadable, WritableStream as NodeWritable } from 'node:stream/web';
import { WebSocket as UndiciWebSocket } from 'undici';
import { nodePrimitives } from '../noise/suite-node.ts';
import { installNativeIntArrayCodec } from '../wire/native-int-array.ts';
import type { WebSocketConstructor } from './channel.ts';
import { ClientError } from './errors.ts';
import { connect as connectBrowser, type Client, type ClientStream } from './index.ts';
import { connectHttps, type HttpsConnectOptions } from './tls-client.ts';

export * from './index.ts';
export type { HttpsConnectOptions } from './tls-client.ts';

/**
 * connect() with Node defaults: nodePrimitives, and globalThis.WebSocket or else undici's WebSocket. An https://
 * URL goes to the enclave's attested TLS ingress instead (tls-client.ts): same Client API, trust from the
 * attestation document in the certificate (never from system roots), verified on every TLS connection.
 */
export function connect(url: string, options: HttpsConnectOptions): Promise<Client> {
  if (typeof url === 'string' && /^https:/i.test(url)) return connectHttps(url, options);
  if (options?.nonce !== undefined) return Promise.reject(new ClientError('CLIENT_BAD_OPTIONS', 'nonce: applies to https:// only (the Noise channel binds its own handshake hash)'));
  installNativeIntArrayCodec(); // the C int-array loops for large byte fields, when the addon is built
  const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? (UndiciWebSocket as unknown as WebSocketConstructor);
  return connectBrowser(url, { primitives: nodePrimitives, ...options, WebSocket });
}

/** A ClientStream (openStream / upgrade) as a Node Duplex, for libraries that want a socket-like object. */
export function toNodeDuplex(stream: ClientStream): Duplex {
  return Duplex.fromWeb(
    { readable: stream.readable as unknown as NodeReadable<Uint8Array>, writable: stream.writable as unknown as NodeWritable<Uint8Array> },
    { objectMode: false },
  );
}

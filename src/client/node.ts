// The Node entry of the client SDK: the only file of src/client allowed Node built-ins and undici. It injects the
// node:crypto Noise suite (13–30× faster than @noble) and, where Node has no global WebSocket (Node 20), undici's.
import { Duplex } from 'node:stream';
import type { ReadableStream as NodeReadable, WritableStream as NodeWritable } from 'node:stream/web';
import { WebSocket as UndiciWebSocket } from 'undici';
import { nodePrimitives } from '../noise/suite-node.ts';
import { installNativeIntArrayCodec } from '../wire/native-int-array.ts';
import type { WebSocketConstructor } from './channel.ts';
import { connect as connectBrowser, type Client, type ClientStream, type ConnectOptions } from './index.ts';

export * from './index.ts';

/** connect() with Node defaults: nodePrimitives, and globalThis.WebSocket or else undici's WebSocket. */
export function connect(url: string, options: ConnectOptions): Promise<Client> {
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

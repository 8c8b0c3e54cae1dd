/**
 * The native engine over AF_UNIX: the exact code path of vsock.ts with another address family. This is how
 * the engine is tested on machines without a vsock peer, and how it is benchmarked against net.Socket.
 * (Production unix sockets use unix.ts, on net.Socket.)
 */
import type { NativeListener, NativeListenOptions } from './native-listener.ts';
import { connectNative, listenNative } from './native-listener.ts';
import type { NativeStream } from './native-stream.ts';

export function listenUnixNative(path: string, opts: NativeListenOptions): Promise<NativeListener> {
  return listenNative({ family: 'unix', path }, opts);
}

export function connectUnixNative(path: string): Promise<NativeStream> {
  return connectNative({ family: 'unix', path });
}

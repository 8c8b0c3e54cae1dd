// Node-only. Node emits 'error' on an established TLS socket (a corrupt record: bad MAC, wrong version, ...)
// without destroying it, and undici's HTTP/1.1 client fails the request in flight only on the socket's 'close'.
// So a bridge (or a MITM) answering our WebSocket upgrade with a garbage TLS record left the WebSocket
// CONNECTING until connectTimeoutMs. This finds the socket that carries one upgrade request — by its
// Sec-WebSocket-Key, on undici's documented `undici:client:sendHeaders` channel — and destroys it on error, so
// the WebSocket fails at once (undici's own WebSocket does the same once the upgrade completed).
import diagnostics from 'node:diagnostics_channel';
import type { Duplex } from 'node:stream';

const SEND_HEADERS = 'undici:client:sendHeaders';

/** The Sec-WebSocket-Key of a WebSocket upgrade's dispatch options, or null for any other request. */
export function upgradeKey(options: { upgrade?: string | boolean | null; headers?: unknown }): string | null {
  if (options.upgrade !== 'websocket') return null;
  const h = options.headers;
  if (h === null || typeof h !== 'object') return null;
  const entries: unknown[] = Array.isArray(h) ? h : Symbol.iterator in h ? [...(h as Iterable<unknown>)] : Object.entries(h);
  // undici passes an object; a flat [name, value, ...] array and [name, value] pairs are the other accepted forms.
  const pairs = entries.every((e) => Array.isArray(e)) ? (entries as unknown[][]) : entries.flatMap((e, i) => (i % 2 === 0 ? [[e, entries[i + 1]]] : []));
  for (const [name, value] of pairs) {
    if (String(name).toLowerCase() === 'sec-websocket-key' && typeof value === 'string') return value;
  }
  return null;
}

/**
 * Watches for the upgrade request with Sec-WebSocket-Key `key` to be written, hands its socket to `onSocket`, then
 * destroys the socket on the first socket error after handing the error to `onError`. Returns the function that
 * stops watching (call it when the WebSocket closes, in case the request was never written).
 */
export function destroyUpgradeSocketOnError(key: string, onError: (err: Error) => void, onSocket: (socket: Duplex) => void = () => {}): () => void {
  const line = `\r\nsec-websocket-key: ${key}\r\n`;
  const stop = (): void => {
    diagnostics.unsubscribe(SEND_HEADERS, onSend);
  };
  function onSend(message: unknown): void {
    const { headers, socket } = message as { headers?: unknown; socket?: Duplex };
    if (typeof headers !== 'string' || socket === undefined || !headers.toLowerCase().includes(line.toLowerCase())) return;
    stop();
    onSocket(socket);
    socket.once('error', (err: Error) => {
      onError(err);
      if (!socket.destroyed) socket.destroy();
    });
  }
  diagnostics.subscribe(SEND_HEADERS, onSend);
  return stop;
}

// A bound on an http.Server's concurrent connections: the local API's, and the activity page's (its own answer).
// Only the app reaches the API's 127.0.0.1:9999, but a runaway app (a connection leak, a reconnect loop) must not
// take the agent's file descriptors and memory: a net.Server in front of the http.Server (which never listens
// itself) counts connections. Past `max` at once a new one is answered 503 API_TOO_MANY_CONNECTIONS (JSON, as
// every refusal; Connection: close, Retry-After) and closed lingering, its bytes read and dropped (an unread
// request would turn the close into a reset that loses the answer); past `max` + REFUSING_AT_ONCE open (refused
// ones not yet closed included), Node closes a new one at accept, unanswered.
import type http from 'node:http';
import net from 'node:net';
import { closeLingering, DEFAULT_LINGER_TIME_MS, refusalLinger } from '../transport/lingering-close.ts';

export const DEFAULT_MAX_API_CONNECTIONS = 256;
/** Refused connections being answered at once; past them, new connections are closed at accept. */
export const REFUSING_AT_ONCE = 64;
/**
 * A refused connection its client leaves open is closed after this long without a byte (and 30 s after the answer
 * at the latest) by default: the activity page's. The local API passes [limits] linger_timeout_ms / linger_time_ms.
 */
export const REFUSAL_LINGER_MS = 2_000;

export type ConnectionRefusal = 'max-connections' | 'closed-at-accept';

/**
 * A whole 503 answer with a JSON `body` (Retry-After: 1, Connection: close), written to a refused connection as is;
 * `headers` go beside (another server's security headers).
 */
export function refusalAnswer(body: string, headers: Readonly<Record<string, string>> = {}): Buffer {
  const extra = Object.entries({ 'cache-control': 'no-store', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  return Buffer.concat([
    Buffer.from(`HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nretry-after: 1\r\n${extra}connection: close\r\n\r\n`, 'latin1'),
    Buffer.from(body, 'utf8'),
  ]);
}

function apiRefusal(max: number): Buffer {
  return refusalAnswer(
    JSON.stringify({
      error: 'API_TOO_MANY_CONNECTIONS',
      message: `the local API serves at most ${max} connections at once: reuse or close idle ones, then retry`,
    }),
  );
}

/**
 * The listening front of `server`: hands it at most `max` connections at once and refuses the rest (`onRefused`,
 * once per connection). Its close() waits for every connection, as the http.Server's own would; close `server` too
 * (its header-timeout checks, its idle connections). `refusal`: the answer past `max` (refusalAnswer; the local
 * API's by default).
 */
export function cappedFront(
  server: http.Server,
  max: number,
  onRefused: (why: ConnectionRefusal) => void,
  lingerMs = REFUSAL_LINGER_MS,
  lingerTimeMs = DEFAULT_LINGER_TIME_MS,
  refusal?: Buffer,
): net.Server {
  if (!Number.isSafeInteger(max) || max < 1) throw new RangeError(`max connections: expected a positive integer, found ${String(max)}`);
  refusal ??= apiRefusal(max);
  let served = 0;
  const front = net.createServer((socket) => {
    socket.on('error', () => {});
    if (served >= max) {
      onRefused('max-connections');
      socket.write(refusal);
      closeLingering(socket, refusalLinger(lingerMs, lingerTimeMs));
      return;
    }
    served++;
    socket.once('close', () => served--);
    server.emit('connection', socket);
  });
  front.maxConnections = max + REFUSING_AT_ONCE;
  front.on('drop', () => onRefused('closed-at-accept'));
  // The http.Server's header and request timeouts are checked from its 'listening' on; it never listens itself.
  server.emit('listening');
  return front;
}

/**
 * Listens `front` (cappedFront's). A listen failure closes `server` (its header-timeout checks) and rejects with
 * `listenError(err)`. Once listening, an error Node reports on `front` is one connection's that could not be accepted
 * (ENOBUFS, a network error pending on it): `onAcceptError` hears its code and the server serves on (unheard, the
 * 'error' would end the process).
 */
export function listenFront(
  front: net.Server,
  server: http.Server,
  options: net.ListenOptions,
  listenError: (err: NodeJS.ErrnoException) => Error,
  onAcceptError: (code: string) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onListenError = (err: NodeJS.ErrnoException): void => {
      server.close();
      reject(listenError(err));
    };
    front.once('error', onListenError);
    front.listen(options, () => {
      front.off('error', onListenError);
      front.on('error', (err: NodeJS.ErrnoException) => onAcceptError(err.code ?? 'error'));
      resolve();
    });
  });
}

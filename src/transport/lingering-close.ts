// Lingering close, as nginx's lingering_close: a client connection the agent ends after its last answer is not
// closed outright once that answer is handed to the kernel ('finish'). close(2) with bytes of the client unread,
// or bytes arriving after it, makes the kernel answer RST and drop what of the answer is still in its send queue
// (a slow reader loses the tail; a client still uploading a refused body gets "connection reset" instead of the
// answer). So the write side is shut (FIN, TLS close_notify) and the client's bytes are read and dropped — never
// parsed or forwarded — until its FIN, then the connection is closed; bounded: no byte for `lingerTimeoutMs`, or
// `lingerTimeMs` after the answer went out at the latest, also closes it (a client that never closes, or keeps
// trickling, must not hold its slot).
import type { Duplex } from 'node:stream';

/** No byte from the client for this long while lingering: closed (nginx's lingering_timeout; [limits] linger_timeout_ms). */
export const DEFAULT_LINGER_TIMEOUT_MS = 5_000;
/** Longest linger after the answer went out, bytes arriving or not (nginx's lingering_time; [limits] linger_time_ms). */
export const DEFAULT_LINGER_TIME_MS = 30_000;

export interface LingerLimits {
  /** What was written is not flushed to the kernel within this (the client does not read it): cut. */
  flushTimeoutMs: number;
  /** Once flushed: no byte from the client for this long → closed. */
  lingerTimeoutMs: number;
  /** Once flushed: closed this long after at the latest. */
  lingerTimeMs: number;
}

/**
 * The bounds of a refusal's close (the local API's and the egress proxy's, [limits] linger_timeout_ms /
 * linger_time_ms): its answer is a few hundred bytes, so it must also be flushed within the linger timeout.
 */
export function refusalLinger(lingerTimeoutMs = DEFAULT_LINGER_TIMEOUT_MS, lingerTimeMs = DEFAULT_LINGER_TIME_MS): LingerLimits {
  return { flushTimeoutMs: lingerTimeoutMs, lingerTimeoutMs, lingerTimeMs };
}

/**
 * Ends `socket` once what was written is flushed, reads and drops whatever the client still sends, and destroys
 * the socket at the client's EOF or at a bound of `limits`. The caller has stopped using the socket's bytes (its
 * 'data' listeners off, pipes undone); its 'error' and 'close' listeners stay.
 */
export function closeLingering(socket: Duplex, limits: LingerLimits): void {
  if (socket.destroyed) return;
  const timers: NodeJS.Timeout[] = [];
  const cutAfter = (ms: number): NodeJS.Timeout => {
    const t = setTimeout(() => socket.destroy(), ms);
    t.unref();
    timers.push(t);
    return t;
  };
  let idle: NodeJS.Timeout | null = null;
  socket.on('data', () => idle?.refresh());
  socket.once('close', () => {
    for (const t of timers) clearTimeout(t);
  });
  // The client's EOF: nothing more can come. Closed now, unless the answer is still being flushed.
  socket.once('end', () => {
    if (socket.writableFinished) socket.destroy();
  });
  let flush: NodeJS.Timeout | null = null;
  const linger = (): void => {
    if (flush !== null) clearTimeout(flush);
    if (socket.readableEnded) {
      socket.destroy();
      return;
    }
    idle = cutAfter(limits.lingerTimeoutMs);
    cutAfter(limits.lingerTimeMs);
  };
  if (socket.writable) socket.end();
  if (socket.writableFinished) linger();
  else {
    flush = cutAfter(limits.flushTimeoutMs);
    socket.once('finish', linger);
  }
  // A paused socket leaves the client's bytes in the kernel: close(2) would then reset.
  socket.resume();
}

// Copies bytes both ways between two streams until both directions are done: end of one side's input is
// passed on as a half-close (end() = shutdown(SHUT_WR)), so a request/response over a half-closed socket
// works; an error or reset on either side destroys both. Writes to anything but a kernel TCP/UNIX socket are cut
// to ≤ 32 KiB (vsock single writes above that wedge on Nitro kernels, EGRESS.md §3.2; the vsock stream also
// issues one send() ≤ 32 KiB per call itself, src/transport/native-stream.ts). Backpressure pauses the reading
// side once MAX_BUFFERED bytes wait on the writing side (not at the 16 KiB default mark: pausing on nearly
// every 64 KiB read halved bulk throughput).
// When both sides are kernel sockets and no byte limit applies, the addon's splice(2) relay does the copying
// instead, with the same half-close, reset and ≤ 32 KiB rules (src/egress/native-splice.ts); this JS relay
// serves everything else, and every flow when the addon is not built.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { spliceNative } from './native-splice.ts';

export const MAX_WRITE = 32 * 1024;
export const MAX_BUFFERED = 512 * 1024;

export interface SpliceResult {
  /** Bytes copied a → b and b → a. */
  readonly aToB: number;
  readonly bToA: number;
  /** True when both directions ended with a clean half-close (no error, reset or destroy). */
  readonly clean: boolean;
}

export interface Splice {
  readonly done: Promise<SpliceResult>;
  /** Bytes so far, a → b and b → a. */
  counts(): { aToB: number; bToA: number };
  /** Ends both sides at once (drain deadline, shutdown). */
  destroy(): void;
}

/** Keeps half-open sockets half-open: net.Socket ends its writable side when its readable side ends unless told. */
export function allowHalfOpen(s: Duplex): void {
  (s as { allowHalfOpen: boolean }).allowHalfOpen = true;
}

function abort(s: Duplex): void {
  if (s.destroyed) return;
  // A reset, not a FIN: the peer must not take a truncated transfer for a complete one. Only TCP handles can
  // reset; on a UNIX socket (the dialer link in the local stack) resetAndDestroy throws, so that one is closed.
  if (s instanceof net.Socket && !s.connecting && s.remoteFamily !== undefined) {
    try {
      s.resetAndDestroy();
      return;
    } catch {
      // not a TCP handle after all
    }
  }
  s.destroy();
}

export interface SpliceOptions {
  /** Copy at most this many bytes a → b and drop the rest (a plain-HTTP request's body, nothing after it). */
  maxAToB?: number;
}

export function splice(a: Duplex, b: Duplex, opts: SpliceOptions = {}): Splice {
  allowHalfOpen(a);
  allowHalfOpen(b);
  if (opts.maxAToB === undefined) {
    const native = spliceNative(a, b, { fallback: (x, y) => spliceJs(x, y), abort });
    if (native !== null) return native;
  }
  return spliceJs(a, b, opts);
}

function spliceJs(a: Duplex, b: Duplex, opts: SpliceOptions = {}): Splice {
  let aToB = 0;
  let bToA = 0;
  let ended = 0;
  let failed = false;
  let resolveDone!: (r: SpliceResult) => void;
  const done = new Promise<SpliceResult>((resolve) => (resolveDone = resolve));
  let closed = 0;

  const pump = (from: Duplex, to: Duplex, add: (n: number) => void, limit = Infinity): void => {
    const slice = !(to instanceof net.Socket);
    let left = limit;
    from.on('data', (data: Buffer) => {
      const chunk = data.length <= left ? data : data.subarray(0, left);
      left -= chunk.length;
      if (chunk.length === 0) return;
      add(chunk.length);
      if (slice && chunk.length > MAX_WRITE) for (let off = 0; off < chunk.length; off += MAX_WRITE) to.write(chunk.subarray(off, off + MAX_WRITE));
      else to.write(chunk);
      if (to.writableLength > MAX_BUFFERED && !to.destroyed) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    from.once('end', () => {
      ended++;
      // Each side closes itself (autoDestroy) once its input ended and its output finished.
      if (!to.destroyed) to.end();
    });
  };
  pump(a, b, (n) => (aToB += n), opts.maxAToB);
  pump(b, a, (n) => (bToA += n));

  const onFail = (): void => {
    if (ended === 2) return;
    failed = true;
    abort(a);
    abort(b);
  };
  const onClose = (): void => {
    // A side that closes before both directions ended was reset or destroyed: take the other one down too.
    if (ended < 2) onFail();
    if (++closed === 2) resolveDone({ aToB, bToA, clean: !failed && ended === 2 });
  };
  for (const s of [a, b]) {
    s.on('error', onFail);
    s.once('close', onClose);
    if (s.closed) queueMicrotask(onClose);
    else s.resume();
  }
  return {
    done,
    counts: () => ({ aToB, bToA }),
    destroy: onFail,
  };
}

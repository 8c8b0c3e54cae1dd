// Copies bytes both ways between two streams until both directions are done: end of one side's input is
// passed on as a half-close (end() = shutdown(SHUT_WR)), so a request/response over a half-closed socket
// works; an error or reset on either side destroys both. Writes to anything but a kernel TCP/UNIX socket are cut
// to ≤ 32 KiB (vsock single writes above that wedge on Nitro kernels, EGRESS.md §3.2; the vsock stream also
// issues one send() ≤ 32 KiB per call itself, src/transport/native-stream.ts). Backpressure pauses the reading
// side once MAX_BUFFERED bytes wait on the writing side (not at the 16 KiB default mark: pausing on nearly
// every 64 KiB read halved bulk throughput).
// When both sides are kernel sockets and no byte limit applies, a flow that has moved NATIVE_AFTER bytes is handed
// to the addon's splice(2) relay (src/egress/native-splice.ts): the same half-close and reset rules, ≤ 32 KiB per
// splice into a vsock or UNIX socket; a hand-off whose write queues do not drain in time leaves the flow to JS.
// Not from the start: setting a relay up (a thread, pipes, dups) costs ~0.4 ms of CPU on this VM, several times
// what the JS relay spends on a small request, and it would sit on the connect path; past ~1 MiB the native relay
// has paid for itself. This JS relay serves everything else, and every flow when the addon is not built.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { MAX_WRITE } from '../wire/frames.ts';
import { nativeRelayPossible, spliceNative, type EndedDirections, type NativeSpliceDeps } from './native-splice.ts';

export const MAX_BUFFERED = 512 * 1024;
/** Bytes (both ways together) a flow moves through the JS relay before it is handed to the native relay. */
export const NATIVE_AFTER = 1024 * 1024;

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
  /** Hand the flow to the native relay after this many bytes (both ways); 0: at once. Default NATIVE_AFTER. */
  nativeAfter?: number;
  /** How long the hand-off may wait for write queues to drain (default HANDOFF_DEADLINE_MS). */
  handoffDeadlineMs?: number;
}

const nativeDeps = (opts: SpliceOptions): NativeSpliceDeps => ({
  fallback: (x, y, ended) => spliceJs(x, y, {}, undefined, ended),
  abort,
  ...(opts.handoffDeadlineMs === undefined ? {} : { handoffDeadlineMs: opts.handoffDeadlineMs }),
});

export function splice(a: Duplex, b: Duplex, opts: SpliceOptions = {}): Splice {
  allowHalfOpen(a);
  allowHalfOpen(b);
  if (opts.maxAToB !== undefined || !nativeRelayPossible(a, b)) return spliceJs(a, b, opts);
  const after = opts.nativeAfter ?? NATIVE_AFTER;
  if (after <= 0) return spliceNative(a, b, nativeDeps(opts)) ?? spliceJs(a, b, opts);
  return spliceThenNative(a, b, after, nativeDeps(opts));
}

/** The JS relay until `after` bytes, then (when both directions are still open) the native relay. */
function spliceThenNative(a: Duplex, b: Duplex, after: number, deps: NativeSpliceDeps): Splice {
  let resolveDone!: (r: SpliceResult) => void;
  const done = new Promise<SpliceResult>((resolve) => (resolveDone = resolve));
  let current!: Splice;
  /** Bytes moved by the relays before `current`. */
  let before = { aToB: 0, bToA: 0 };
  const follow = (s: Splice): void => {
    current = s;
    void s.done.then((r) => {
      if (current === s) resolveDone({ aToB: before.aToB + r.aToB, bToA: before.bToA + r.bToA, clean: r.clean });
    });
  };
  let tried = false;
  const js: JsRelay = spliceJs(a, b, {}, (total) => {
    if (tried || total < after) return;
    tried = true;
    // After the 'data' handlers of this turn: detaching from inside one is fine, but nothing is gained by it.
    queueMicrotask(() => {
      if (current !== js) return;
      const moved = js.counts();
      const ended = js.detach();
      if (ended === null) return; // both directions ended, or a side failed: the JS relay finishes the flow
      before = moved;
      follow(spliceNative(a, b, deps, ended) ?? spliceJs(a, b, {}, undefined, ended));
    });
  });
  follow(js);
  return {
    done,
    counts() {
      const c = current.counts();
      return { aToB: before.aToB + c.aToB, bToA: before.bToA + c.bToA };
    },
    destroy: () => current.destroy(),
  };
}

interface JsRelay extends Splice {
  /**
   * Stops relaying while a direction is still open and nothing failed: both sides are left paused (their unread
   * bytes buffered), with this relay's listeners removed, and `done` never resolves. Answers the directions that
   * had already ended (EOF passed on as end()); null (nothing changed) when it cannot.
   */
  detach(): EndedDirections | null;
}

/** `already`: directions a relay before this one finished (a re-attached JS relay after a refused hand-off). */
function spliceJs(a: Duplex, b: Duplex, opts: SpliceOptions = {}, onBytes?: (total: number) => void, already?: EndedDirections): JsRelay {
  let aToB = 0;
  let bToA = 0;
  let ended = 0;
  let failed = false;
  let resolveDone!: (r: SpliceResult) => void;
  const done = new Promise<SpliceResult>((resolve) => (resolveDone = resolve));
  let closed = 0;
  /** What detach() removes. */
  const listeners: { s: Duplex; event: string; fn: () => void }[] = [];
  const drains = new Map<Duplex, () => void>();
  const endedDirs: EndedDirections = { aToB: false, bToA: false };

  const pump = (from: Duplex, to: Duplex, add: (n: number) => void, dir: keyof EndedDirections, limit = Infinity): void => {
    if (already?.[dir]) {
      endedDirs[dir] = true;
      ended++;
      return;
    }
    const slice = !(to instanceof net.Socket);
    let left = limit;
    const onData = (data: Buffer): void => {
      const chunk = data.length <= left ? data : data.subarray(0, left);
      left -= chunk.length;
      // Bytes past the limit are a next request on a one-request connection: dropped. Once the upstream has
      // answered, `to` is half-closed too (below): an upstream that ignores `connection: close` then still ends
      // the flow (the client retries on a new connection) instead of the client waiting for an answer that
      // cannot come. Not before it answered: a pipelined request arrives with the first, and a server that
      // closes on a half-close would drop the first one's answer.
      if (chunk.length > 0) {
        add(chunk.length);
        if (slice && chunk.length > MAX_WRITE) for (let off = 0; off < chunk.length; off += MAX_WRITE) to.write(chunk.subarray(off, off + MAX_WRITE));
        else to.write(chunk);
      }
      if (chunk.length < data.length && dir === 'aToB' && bToA > 0 && !to.writableEnded && !to.destroyed) to.end();
      if (chunk.length === 0) return;
      if (to.writableLength > MAX_BUFFERED && !to.destroyed) {
        from.pause();
        const onDrain = (): void => {
          drains.delete(to);
          from.resume();
        };
        drains.set(to, onDrain);
        to.once('drain', onDrain);
      }
      onBytes?.(aToB + bToA);
    };
    const onEnd = (): void => {
      endedDirs[dir] = true;
      ended++;
      // Each side closes itself (autoDestroy) once its input ended and its output finished.
      if (!to.destroyed && !to.writableEnded) to.end();
    };
    from.on('data', onData);
    listeners.push({ s: from, event: 'data', fn: onData as () => void });
    // Its 'end' may have fired already: a hand-off that read the last bytes and the EOF, then was refused.
    if (from.readableEnded) onEnd();
    else {
      from.once('end', onEnd);
      listeners.push({ s: from, event: 'end', fn: onEnd });
    }
  };
  pump(a, b, (n) => (aToB += n), 'aToB', opts.maxAToB);
  pump(b, a, (n) => (bToA += n), 'bToA');

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
    listeners.push({ s, event: 'error', fn: onFail }, { s, event: 'close', fn: onClose });
    if (s.closed) queueMicrotask(onClose);
    else s.resume();
  }
  return {
    done,
    counts: () => ({ aToB, bToA }),
    destroy: onFail,
    detach() {
      if (ended === 2 || failed || closed > 0 || a.destroyed || b.destroyed) return null;
      // Paused first: a 'data' event with no listener left would lose its bytes.
      a.pause();
      b.pause();
      for (const { s, event, fn } of listeners) s.off(event, fn);
      for (const [to, fn] of drains) to.off('drain', fn);
      return { ...endedDirs };
    },
  };
}

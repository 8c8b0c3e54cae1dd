// The native relay for an egress flow whose two ends are kernel sockets (net.Socket over TCP/UNIX, or a
// NativeStream over vsock/UNIX): the addon's splice(2) thread (native/src/splice.c) moves the bytes, so no JS
// runs per chunk and no buffer is allocated — the JS relay costs a read, a write, a 64 KiB Buffer and GC per
// hop, which made the egress path CPU-bound at ~0.3× a direct connection.
// splice() hands a flow over once the JS relay has moved 1 MiB of it (src/egress/splice.ts says why).
// The hand-off: stop JS reading on both sides (the kernel keeps what arrives next), pass on what JS had already
// read (a request head's tail, bytes behind a frame) and wait until both sides' JS write queues are empty, then
// start the relay thread. The relay half-closes like the JS relay; on its end both sockets are destroyed (reset
// first when it failed or was cancelled). When the addon refuses up front (not built, relay limit, not a stream
// socket) nothing has been touched and the caller runs the JS relay; if the thread cannot start after the
// hand-off, JS reading is restored and the JS relay takes over from there.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { NativeStream } from '../transport/native-stream.ts';
import { loadNative, nativeAvailable, type NativeBinding, type NativeSpliceOutcome, type NativeSpliceRelay } from '../transport/native.ts';
import { MAX_WRITE } from '../wire/frames.ts';
import type { Splice, SpliceResult } from './splice.ts';

/**
 * How long the hand-off may wait for the write queues it flushes while JS reads neither side; past it the JS
 * relay carries on (a peer that reads only after writing everything would otherwise never drain its queue).
 */
export const HANDOFF_DEADLINE_MS = 1_000;
const EMPTY = Buffer.alloc(0);

export interface NativeSpliceDeps {
  /** The JS relay, for when the thread cannot start after the hand-off (`ended`: directions already finished). */
  fallback(a: Duplex, b: Duplex, ended: EndedDirections): Splice;
  /** Resets (TCP) or destroys a side. */
  abort(s: Duplex): void;
  /** Default HANDOFF_DEADLINE_MS. */
  handoffDeadlineMs?: number;
}

/** A side whose fd the relay can take: its fd, and how to stop and restore JS reading of it. */
interface Endpoint {
  readonly fd: number;
  /** Stops JS reading; the returned function restores it. */
  pauseReading(): () => void;
}

interface StreamHandle {
  fd?: unknown;
  reading?: boolean;
  readStop?: () => number;
}

function netEndpoint(s: net.Socket): Endpoint | null {
  // A TLS socket's handle answers the fd of the TCP socket under it: its bytes are not the stream's bytes. Told by
  // tls.TLSSocket's `encrypted` (true on every one), not instanceof: egress runs in every agent, and importing
  // node:tls here loaded it into agents that have no TLS at all.
  if ((s as { encrypted?: unknown }).encrypted === true || s.connecting) return null;
  const h = (s as unknown as { _handle?: StreamHandle | null })._handle;
  if (h == null || typeof h.fd !== 'number' || h.fd < 0 || typeof h.readStop !== 'function') return null;
  const handle = h as Required<StreamHandle>;
  return {
    fd: h.fd,
    pauseReading() {
      s.pause();
      // A read outstanding (the stream asked, libuv reads): the stream will not ask again until it gets data.
      const wasReading = handle.reading;
      if (wasReading) {
        handle.reading = false; // what net.Socket itself does when a push() says stop
        handle.readStop();
      }
      // Readable.read() would call _read(), which restarts libuv reading: note the call instead, replay it on restore.
      const own = s as unknown as { _read?: (n: number) => void };
      let asked = false;
      own._read = () => {
        asked = true;
      };
      return () => {
        delete own._read;
        if ((asked || wasReading) && !s.destroyed) s._read(s.readableHighWaterMark);
      };
    },
  };
}

/** `writing`: the relay will write to `s` (the direction into it is not finished yet). */
function endpoint(s: Duplex, writing: boolean): Endpoint | null {
  if (s.destroyed || (writing && s.writableEnded)) return null;
  if (s instanceof NativeStream) {
    const fd = s.fd;
    if (fd < 0) return null;
    return {
      fd,
      pauseReading() {
        s.pauseReading();
        return () => s.resumeReading();
      },
    };
  }
  if (s instanceof net.Socket) return netEndpoint(s);
  return null;
}

let binding: NativeBinding | null | undefined;

function addon(): NativeBinding | null {
  if (binding === undefined) binding = nativeAvailable() ? loadNative() : null;
  return binding;
}

/** Whether spliceNative() would take this flow now (the addon is loaded, both sides are kernel sockets). */
export function nativeRelayPossible(a: Duplex, b: Duplex): boolean {
  return addon() !== null && endpoint(a, true) !== null && endpoint(b, true) !== null;
}

/** Resolves once everything written to `s` so far is in the kernel, its end() included (or `s` is gone). */
function flushed(s: Duplex, chunk: Buffer | null): Promise<void> {
  if (s.writableEnded) {
    // ended by the JS relay (the direction into s is finished): 'finish' comes after the shutdown(SHUT_WR)
    if (s.writableFinished) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        s.off('close', done);
        s.off('finish', done);
        resolve();
      };
      s.once('close', done);
      s.once('finish', done);
    });
  }
  if (chunk === null && s.writableLength === 0) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      s.off('close', done);
      resolve();
    };
    s.once('close', done);
    s.write(chunk ?? EMPTY, done); // writes complete in order: this one's callback comes after all before it
  });
}

function closed(s: Duplex): Promise<void> {
  return s.closed ? Promise.resolve() : new Promise((resolve) => s.once('close', () => resolve()));
}

/** Directions the JS relay already finished (EOF read and passed on as end()) before handing the flow over. */
export interface EndedDirections {
  aToB: boolean;
  bToA: boolean;
}

/**
 * Relays a ↔ b with the native splice relay, or returns null (nothing touched) when it cannot: no addon, a side
 * that is not a kernel socket, the relay limit. Both sides must already allow half-open.
 */
export function spliceNative(a: Duplex, b: Duplex, deps: NativeSpliceDeps, ended: EndedDirections = { aToB: false, bToA: false }): Splice | null {
  const native = addon();
  if (native === null) return null;
  const ea = endpoint(a, !ended.bToA);
  const eb = endpoint(b, !ended.aToB);
  if (ea === null || eb === null) return null;
  let relay: NativeSpliceRelay;
  try {
    relay = native.spliceRelay(ea.fd, eb.fd, MAX_WRITE, (ended.aToB ? 1 : 0) | (ended.bToA ? 2 : 0));
  } catch {
    return null; // the limit of native relays, EMFILE, or not a stream socket: the JS relay serves this flow
  }

  let phase: 'handoff' | 'native' | 'js' | 'done' = 'handoff';
  let failed = false;
  let js: Splice | null = null;
  let result: SpliceResult | null = null;
  // Bytes JS had already read when it handed off, passed on by JS.
  let preAToB = 0;
  let preBToA = 0;
  let resolveDone!: (r: SpliceResult) => void;
  const done = new Promise<SpliceResult>((resolve) => (resolveDone = resolve));

  const fail = (): void => {
    if (phase === 'native') relay.cancel(); // the thread ends; onEnd then resets both
    else if (phase === 'handoff') {
      failed = true;
      deps.abort(a);
      deps.abort(b);
    }
  };
  // While the relay runs, JS does no I/O on either side, so an error or a close comes from someone destroying a
  // side (a drain deadline, the dialer closing): end the relay, which resets the other side.
  a.on('error', fail);
  b.on('error', fail);
  a.once('close', fail);
  b.once('close', fail);
  const detach = (): void => {
    a.off('error', fail);
    b.off('error', fail);
    a.off('close', fail);
    b.off('close', fail);
  };
  const finish = async (clean: boolean, aToB: number, bToA: number): Promise<void> => {
    phase = 'done';
    detach();
    // errors from here on (a reset while closing) are expected: keep a listener so none is uncaught
    a.on('error', () => {});
    b.on('error', () => {});
    if (clean) {
      a.destroy();
      b.destroy();
    } else {
      deps.abort(a);
      deps.abort(b);
    }
    await Promise.all([closed(a), closed(b)]);
    result = { aToB, bToA, clean };
    resolveDone(result);
  };

  const onEnd = (o: NativeSpliceOutcome): void => {
    void finish(o.clean, preAToB + o.aToB, preBToA + o.bToA);
  };

  const restoreA = ea.pauseReading();
  const restoreB = eb.pauseReading();
  // (a finished direction has nothing buffered: its 'end' was emitted)
  const fromA = !ended.aToB && a.readableLength > 0 ? (a.read() as Buffer | null) : null;
  const fromB = !ended.bToA && b.readableLength > 0 ? (b.read() as Buffer | null) : null;
  preAToB = fromA?.length ?? 0;
  preBToA = fromB?.length ?? 0;
  /** JS relays from here, after the bytes it already passed on (queued in order ahead of anything new). */
  const toJs = (): void => {
    phase = 'js';
    detach();
    restoreA();
    restoreB();
    const s = deps.fallback(a, b, ended);
    js = s;
    void s.done.then((r) => {
      phase = 'done';
      result = { aToB: preAToB + r.aToB, bToA: preBToA + r.bToA, clean: r.clean };
      resolveDone(result);
    });
  };
  const deadline = setTimeout(() => {
    if (phase !== 'handoff' || failed) return;
    relay.cancel();
    toJs();
  }, deps.handoffDeadlineMs ?? HANDOFF_DEADLINE_MS);
  void Promise.all([flushed(b, fromA), flushed(a, fromB)]).then(() => {
    clearTimeout(deadline);
    if (phase !== 'handoff') return; // the deadline passed: the JS relay has the flow
    if (failed || a.destroyed || b.destroyed) {
      relay.cancel();
      void finish(false, preAToB, preBToA);
      return;
    }
    try {
      relay.start(onEnd);
      phase = 'native';
    } catch {
      toJs(); // no thread (EAGAIN)
    }
  });

  return {
    done,
    counts() {
      if (result !== null) return { aToB: result.aToB, bToA: result.bToA };
      const c = phase === 'js' && js !== null ? js.counts() : phase === 'native' ? relay.counts() : { aToB: 0, bToA: 0 };
      return { aToB: preAToB + c.aToB, bToA: preBToA + c.bToA };
    },
    destroy() {
      if (phase === 'js') js?.destroy();
      else fail();
    },
  };
}

/** Process-wide counters of the native relay (tests: proof that flows took the native path). */
export function nativeSpliceStats(): ReturnType<NativeBinding['spliceStats']> | null {
  return addon()?.spliceStats() ?? null;
}

// Streams to the host dialer opened ahead of need: a flow takes one that is already connected and already
// accepted on the host (whose dialer is waiting for the request on it), so the flow's connect path saves the
// stream connect and the host's accept turn. Each stream still carries exactly one flow (the protocol is
// unchanged). A stream is replaced when the flow that took it closes: the host dialer is one event loop, and a
// replacement opened when the flow got its answer (tried first) delayed that flow's first bytes by as much as
// it saved on the connect. An idle enclave holds at most `size` streams, each for at most `maxIdleMs` (well
// under the host's 5 s wait for a request), then closes them without a byte: the first flow after a quiet
// spell connects afresh. A stream the host closed or wrote to while idle is dropped, never handed out.
import type { Duplex } from 'node:stream';
import type { DialerConnect } from './flow-client.ts';

export const POOL_SIZE = 2;
export const POOL_MAX_IDLE_MS = 2_000;

export interface DialerPool {
  /** A connected stream: a pre-opened one when there is one, else a fresh connect. */
  readonly connect: DialerConnect;
  /** Idle streams held now. */
  readonly idle: number;
  /** Closes the idle streams and stops opening new ones. */
  close(): void;
}

interface Idle {
  stream: Duplex;
  timer: NodeJS.Timeout;
  drop: () => void;
}

export function dialerPool(open: DialerConnect, opts: { size?: number; maxIdleMs?: number } = {}): DialerPool {
  const size = opts.size ?? POOL_SIZE;
  const maxIdleMs = opts.maxIdleMs ?? POOL_MAX_IDLE_MS;
  const idle: Idle[] = [];
  let opening = 0;
  let closed = false;

  const release = (entry: Idle): void => {
    clearTimeout(entry.timer);
    entry.stream.off('readable', entry.drop);
    entry.stream.off('close', entry.drop);
    entry.stream.off('error', entry.drop);
    const i = idle.indexOf(entry);
    if (i >= 0) idle.splice(i, 1);
  };

  /** Closes an unused stream cleanly (no byte sent, the host logs nothing); a reset meanwhile is not a crash. */
  const retire = (entry: Idle): void => {
    release(entry);
    entry.stream.on('error', () => {});
    entry.stream.end();
  };

  const keep = (stream: Duplex): void => {
    if (closed || stream.destroyed) {
      stream.destroy();
      return;
    }
    const entry: Idle = {
      stream,
      // Idle too long: retired.
      timer: setTimeout(() => retire(entry), maxIdleMs),
      // Anything from the host before a request (its close, its timeout) makes the stream unusable.
      drop: () => {
        release(entry);
        stream.destroy();
      },
    };
    entry.timer.unref();
    stream.once('readable', entry.drop);
    stream.once('close', entry.drop);
    stream.once('error', entry.drop);
    idle.push(entry);
  };

  const refill = (): void => {
    while (!closed && idle.length + opening < size) {
      opening++;
      open().then(
        (s) => {
          opening--;
          keep(s);
        },
        () => {
          // The host is unreachable: the next flow's own connect reports it.
          opening--;
        },
      );
    }
  };

  return {
    get idle() {
      return idle.length;
    },
    connect: async () => {
      const entry = idle.shift();
      if (entry !== undefined) release(entry);
      const stream = entry !== undefined && !entry.stream.destroyed && entry.stream.readableLength === 0 ? entry.stream : (entry?.stream.destroy(), await open());
      // Replaced once its flow is over (see above), after the close has been handled.
      stream.once('close', () => setImmediate(refill));
      return stream;
    },
    close() {
      closed = true;
      for (const entry of idle.slice()) retire(entry);
    },
  };
}

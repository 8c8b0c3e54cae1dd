// Streams to the host dialer opened ahead of need: a flow takes one that is already connected and already
// accepted on the host (whose dialer is waiting for the request on it), so the flow's connect path saves the
// stream connect and the host's accept turn — about a third of the latency egress adds to a connect. Each
// stream still carries exactly one flow (the protocol is unchanged). Streams are opened only to replace one
// taken, so an idle enclave holds at most `size` of them, each for at most `maxIdleMs` (well under the host's
// 5 s wait for a request), then closes them without a byte: the first flow after a quiet spell connects
// afresh. A stream the host closed or wrote to while idle is dropped, never handed out.
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

  const keep = (stream: Duplex): void => {
    if (closed || stream.destroyed) {
      stream.destroy();
      return;
    }
    const entry: Idle = {
      stream,
      // Idle too long: close it cleanly (no byte sent, the host logs nothing).
      timer: setTimeout(() => {
        release(entry);
        stream.end();
      }, maxIdleMs),
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
      // Replace it once its flow has the host's answer (or is gone), and only after the answer has been handled
      // (setImmediate: after the microtasks that pass it on to the app): opened any earlier, the replacement's
      // connect and the host's accept would run ahead of this flow's request and answer on both sides.
      const replace = (): void => {
        stream.off('readable', replace);
        stream.off('close', replace);
        setImmediate(refill);
      };
      stream.once('readable', replace);
      stream.once('close', replace);
      return stream;
    },
    close() {
      closed = true;
      for (const entry of idle.slice()) {
        release(entry);
        entry.stream.end();
      }
    },
  };
}

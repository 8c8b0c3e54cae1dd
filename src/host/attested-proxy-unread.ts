// The bytes `enclave-agent proxy` holds for local clients that do not read their answers. The protocol has no
// per-stream flow control (src/client/buffer-cap.ts): the enclave sends, and what a local client does not take
// waits in memory — up to the SDK's 64 MiB per stream, 64 streams to a session, before this. Pausing the whole
// session instead would stall every other local client behind the slow one (and the agent closes a session it
// cannot write to), so answers are read as they arrive and bounded twice, by local connection:
// - each connection at most `maxBytesPerConnection`: past it that connection is closed, whatever the others hold,
//   so one slow client takes at most that much of the room the others share;
// - all of them together at most `maxBytes` (the memory bound: local connections are not counted otherwise):
//   past it the connection holding the most is closed.
// An answer counts until its local client has read it (the sink flushed), not only until the enclave finished it.
import type { Writable } from 'node:stream';

export interface UnreadLimits {
  /** All connections together. */
  maxBytes: number;
  /** One local connection (its answers, or its upgraded stream). */
  maxBytesPerConnection: number;
}

/** Which bound closed a connection: its own, or the total. */
export type UnreadScope = 'connection' | 'all';

export interface UnreadBudget {
  /**
   * Copies `source` into `sink` as it arrives, not waiting for the sink to drain; ends the sink after the last
   * byte, destroys it when the source fails, cancels the source when the sink closes. Resolves once the sink
   * has flushed (or is gone). `conn`: the local connection the sink writes to (the unit of the bounds).
   */
  relay(source: ReadableStream<Uint8Array>, sink: Writable, conn: object): Promise<void>;
  /** Bytes waiting unread now, all answers together. */
  held(): number;
}

interface Relay {
  sink: Writable;
  reader: ReadableStreamDefaultReader<Uint8Array>;
  conn: object;
}

/** `onEvict(held, total, scope)` is told each connection closed: its unread bytes, everyone's, and which bound. */
export function unreadBudget(limits: UnreadLimits, onEvict: (held: number, total: number, scope: UnreadScope) => void): UnreadBudget {
  const relays = new Set<Relay>();
  const held = (): number => {
    let total = 0;
    for (const r of relays) total += r.sink.writableLength;
    return total;
  };
  const heldBy = (): Map<object, number> => {
    const by = new Map<object, number>();
    for (const r of relays) by.set(r.conn, (by.get(r.conn) ?? 0) + r.sink.writableLength);
    return by;
  };
  const release = (r: Relay): void => {
    if (relays.delete(r)) void r.reader.cancel().catch(() => {});
  };
  /** Closes every answer of `conn` (destroying one answer's sink closes its connection anyway). */
  const close = (conn: object): void => {
    for (const r of [...relays]) {
      if (r.conn !== conn) continue;
      release(r);
      r.sink.destroy();
    }
  };
  const enforce = (conn: object): void => {
    const by = heldBy();
    let total = 0;
    for (const n of by.values()) total += n;
    const mine = by.get(conn) ?? 0;
    if (mine > limits.maxBytesPerConnection) {
      onEvict(mine, total, 'connection');
      close(conn);
      by.delete(conn);
      total -= mine;
    }
    while (total > limits.maxBytes) {
      let largest: object | null = null;
      let most = -1;
      for (const [c, n] of by) if (n > most) [largest, most] = [c, n];
      if (largest === null) return;
      onEvict(most, total, 'all');
      close(largest);
      by.delete(largest);
      total -= most;
    }
  };
  return {
    held,
    async relay(source, sink, conn) {
      const r: Relay = { sink, reader: source.getReader(), conn };
      relays.add(r);
      const gone = (): void => release(r);
      sink.once('close', gone);
      try {
        for (;;) {
          const { done, value } = await r.reader.read();
          if (!relays.has(r) || sink.destroyed) return; // closed here, or the local client left
          if (done) {
            sink.end();
            await flushed(sink); // counted (and closable) until the local client has taken it
            return;
          }
          sink.write(value);
          enforce(conn);
        }
      } catch {
        sink.destroy(); // the enclave stream failed (connection lost, reset): the answer is cut, not completed
      } finally {
        relays.delete(r);
        sink.off('close', gone);
      }
    },
  };
}

/** Resolves once `sink` has handed all it was given to the kernel ('finish'), or is gone. */
function flushed(sink: Writable): Promise<void> {
  if (sink.writableFinished || sink.destroyed) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      sink.off('finish', done);
      sink.off('close', done);
      resolve();
    };
    sink.on('finish', done);
    sink.on('close', done);
  });
}

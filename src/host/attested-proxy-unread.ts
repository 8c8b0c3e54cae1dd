// The bytes `enclave-agent proxy` holds for local clients that do not read their answers, bounded across all of
// them. The protocol has no per-stream flow control (src/client/buffer-cap.ts): the enclave sends, and what a local
// client does not take waits in memory — up to the SDK's 64 MiB per stream, 64 streams to a session, before this.
// Pausing the whole session instead would stall every other local client behind the slow one (and the agent closes
// a session it cannot write to), so answers are read as they arrive and, when all that waits unread passes the
// budget, the answer holding the most is closed: the slow client loses its own answer, the others keep theirs.
import type { Writable } from 'node:stream';

export interface UnreadBudget {
  /**
   * Copies `source` into `sink` as it arrives, not waiting for the sink to drain; ends the sink after the last
   * byte, destroys it when the source fails, cancels the source when the sink closes. Resolves when done.
   */
  relay(source: ReadableStream<Uint8Array>, sink: Writable): Promise<void>;
  /** Bytes waiting unread now, all answers together. */
  held(): number;
}

interface Relay {
  sink: Writable;
  reader: ReadableStreamDefaultReader<Uint8Array>;
}

/** `onEvict(held, total)` is told each answer closed over the budget: its own unread bytes and everyone's. */
export function unreadBudget(maxBytes: number, onEvict: (held: number, total: number) => void): UnreadBudget {
  const relays = new Set<Relay>();
  const held = (): number => {
    let total = 0;
    for (const r of relays) total += r.sink.writableLength;
    return total;
  };
  const release = (r: Relay): void => {
    if (relays.delete(r)) void r.reader.cancel().catch(() => {});
  };
  const enforce = (): void => {
    let total = held();
    while (total > maxBytes) {
      let largest: Relay | null = null;
      for (const r of relays) if (largest === null || r.sink.writableLength > largest.sink.writableLength) largest = r;
      if (largest === null) return;
      const bytes = largest.sink.writableLength;
      onEvict(bytes, total);
      release(largest);
      largest.sink.destroy();
      total -= bytes;
    }
  };
  return {
    held,
    async relay(source, sink) {
      const r: Relay = { sink, reader: source.getReader() };
      relays.add(r);
      const gone = (): void => release(r);
      sink.once('close', gone);
      try {
        for (;;) {
          const { done, value } = await r.reader.read();
          if (!relays.has(r) || sink.destroyed) return; // closed here, or the local client left
          if (done) {
            sink.end();
            return;
          }
          sink.write(value);
          enforce();
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

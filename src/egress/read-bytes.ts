// Reads exactly n bytes from a stream in paused mode (the egress frames), leaving everything after them in
// the stream for the raw phase. Rejects on EOF before n bytes, on error/close, and after timeoutMs.
import type { Duplex } from 'node:stream';
import { EgressError } from './errors.ts';

/** The stream ended before n bytes; `received` says how many came (0: closed without a byte). */
export class StreamEndedEarly extends EgressError {
  constructor(
    readonly received: number,
    message: string,
  ) {
    super('EGRESS_BAD_FRAME', message);
  }
}

export function readBytes(stream: Duplex, n: number, timeoutMs: number, what: string): Promise<Buffer> {
  if (n === 0) return Promise.resolve(Buffer.alloc(0));
  // Already buffered (a frame's body behind its header): no listeners, no timer.
  if (stream.readableLength >= n) return Promise.resolve(stream.read(n) as Buffer);
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err: EgressError | null, buf?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.off('readable', tryRead);
      stream.off('end', onEnd);
      stream.off('error', onEnd);
      stream.off('close', onEnd);
      if (err) reject(err);
      else resolve(buf!);
    };
    const onEnd = (): void => {
      const rest = stream.read() as Buffer | null;
      finish(new StreamEndedEarly(rest?.length ?? 0, `stream ended after ${rest?.length ?? 0} of the ${n} bytes of the ${what}`));
    };
    const tryRead = (): void => {
      const buf = stream.read(n) as Buffer | null;
      if (buf === null) return;
      if (buf.length < n) finish(new StreamEndedEarly(buf.length, `stream ended after ${buf.length} of the ${n} bytes of the ${what}`));
      else finish(null, buf);
    };
    const timer = setTimeout(() => finish(new EgressError('EGRESS_FRAME_TIMEOUT', `no complete ${what} within ${timeoutMs} ms`)), timeoutMs);
    stream.on('readable', tryRead);
    stream.once('end', onEnd);
    stream.once('error', onEnd);
    stream.once('close', onEnd);
    if (stream.readableEnded || stream.destroyed) onEnd();
    else tryRead();
  });
}

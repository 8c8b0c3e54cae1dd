// The transaction log and the operational log of a session worker, while the main thread does not take them
// (its side of the port is not read: a stalled main thread): what is in flight stays under the bound, what
// does not fit is dropped and counted, and once the main thread reads again everything accepted arrives,
// new records flow again and the count is logged as a warning on the main thread.
import { Writable } from 'node:stream';
import { MessageChannel } from 'node:worker_threads';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { createMemoryLogSink, recordLine } from '../../../src/http/log-sink.ts';
import { MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_RECORDS } from '../../../src/runtime/worker-services/in-flight.ts';
import { LOG_DROPPED_MESSAGE, serveWorkerLogs, workerLogger } from '../../../src/runtime/worker-services/log-proxy.ts';
import { remoteLogSink, serveLogSink, TRX_DROPPED_MESSAGE } from '../../../src/runtime/worker-services/trx-proxy.ts';
import { counting, turns, until } from './helpers.ts';

const closers: (() => void)[] = [];
afterAll(() => {
  for (const c of closers) c();
});

function memoryLogger(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level: 'info' }, out), lines };
}

/** What crossed the port as batches: characters of lines, or records. */
function crossed(posts: unknown[]): number {
  let n = 0;
  for (const p of posts as { m?: string; v?: unknown }[]) {
    if (p.m === 'lines' && typeof p.v === 'string') n += p.v.length;
    if (p.m === 'records' && Array.isArray(p.v)) n += p.v.length;
  }
  return n;
}

/** A transaction record of about 200 characters as a JSON line. */
const trx = (i: number): object => ({ kind: 'trx', i, path: `/orders/${'x'.repeat(150)}`, status: 200 });

describe('worker → main log queues are bounded', () => {
  it('transaction lines: under the bound while the main side is stalled, drops counted and logged, flowing again after', async () => {
    const { port1, port2 } = new MessageChannel();
    const { port, posts } = counting(port2);
    const remote = remoteLogSink(port, { lines: true });
    const lineChars = recordLine(trx(0)).length;
    // 40 turns of 500 records (~4 MiB): the main side reads nothing meanwhile.
    let written = 0;
    for (let t = 0; t < 40; t++) {
      for (let i = 0; i < 500; i++) remote.writeLines!(recordLine(trx(written++)));
      await turns(1);
      expect(crossed(posts)).toBeLessThanOrEqual(MAX_IN_FLIGHT_BYTES);
    }
    expect(remote.outstanding).toBeLessThanOrEqual(MAX_IN_FLIGHT_BYTES);
    expect(remote.outstanding).toBeGreaterThan(MAX_IN_FLIGHT_BYTES - 2 * lineChars);
    expect(remote.dropped).toBeGreaterThan(0);
    const accepted = written - remote.dropped;

    // The main thread reads again: everything accepted arrives, in order, and the room comes back.
    const main = createMemoryLogSink();
    const log = memoryLogger();
    const served = serveLogSink(port1, main, log.logger);
    closers.push(() => served.close());
    await until(() => main.records.length === accepted && remote.outstanding === 0);
    expect(main.records.map((r) => r.i)).toEqual(Array.from({ length: accepted }, (_, i) => i));
    const droppedWhileStalled = remote.dropped;
    for (let i = 0; i < 10; i++) remote.writeLines!(recordLine(trx(written++)));
    await until(() => main.records.length === accepted + 10 && remote.outstanding === 0);
    expect(remote.dropped).toBe(droppedWhileStalled);
    // The count crossed with the first batch after the stall, and is one warning on the main thread.
    expect(served.dropped).toBe(droppedWhileStalled);
    await remote.close();
    await until(() => log.lines.some((l) => l.msg === TRX_DROPPED_MESSAGE));
    expect(log.lines.filter((l) => l.msg === TRX_DROPPED_MESSAGE)).toEqual([expect.objectContaining({ level: 40, dropped: droppedWhileStalled, total: droppedWhileStalled })]);
  });

  it('transaction records (a main sink without writeLines): at most MAX_IN_FLIGHT_RECORDS in flight, the rest counted', async () => {
    const { port1, port2 } = new MessageChannel();
    const { port, posts } = counting(port2);
    const remote = remoteLogSink(port, { lines: false });
    for (let t = 0; t < 10; t++) {
      remote.writeBatch(Array.from({ length: 1_000 }, (_, i) => trx(t * 1_000 + i)));
      await turns(1);
      expect(crossed(posts)).toBeLessThanOrEqual(MAX_IN_FLIGHT_RECORDS);
    }
    expect({ outstanding: remote.outstanding, dropped: remote.dropped }).toEqual({ outstanding: MAX_IN_FLIGHT_RECORDS, dropped: 10_000 - MAX_IN_FLIGHT_RECORDS });
    const got: object[] = [];
    const served = serveLogSink(port1, { write: (r) => void got.push(r), writeBatch: (rs) => void got.push(...rs), async close() {} });
    closers.push(() => served.close());
    await until(() => got.length === MAX_IN_FLIGHT_RECORDS && remote.outstanding === 0);
    remote.write(trx(-1));
    await until(() => got.length === MAX_IN_FLIGHT_RECORDS + 1 && served.dropped === 10_000 - MAX_IN_FLIGHT_RECORDS);
    await remote.close();
  });

  it('operational log lines: under the bound while the main side is stalled, drops counted and logged, flowing again after', async () => {
    const { port1, port2 } = new MessageChannel();
    const { port, posts } = counting(port2);
    const worker = workerLogger(port, { level: 'info', bindings: { worker: 3 } });
    let written = 0;
    for (let t = 0; t < 40; t++) {
      for (let i = 0; i < 500; i++) worker.info({ session: 'ab12', n: written++, detail: 'y'.repeat(150) }, 'session closed');
      await turns(1);
      expect(crossed(posts)).toBeLessThanOrEqual(MAX_IN_FLIGHT_BYTES);
    }
    expect(worker.linesOutstanding()).toBeLessThanOrEqual(MAX_IN_FLIGHT_BYTES);
    expect(worker.linesDropped()).toBeGreaterThan(0);
    const accepted = written - worker.linesDropped();

    const main = memoryLogger();
    const served = serveWorkerLogs(port1, main.logger);
    closers.push(() => served.close());
    await until(() => main.lines.length === accepted && worker.linesOutstanding() === 0);
    expect(main.lines.map((l) => l.n)).toEqual(Array.from({ length: accepted }, (_, i) => i));
    const droppedWhileStalled = worker.linesDropped();
    worker.info({ n: written++ }, 'after');
    await until(() => main.lines.some((l) => l.msg === 'after') && served.droppedInWorker === droppedWhileStalled);
    expect(worker.linesDropped()).toBe(droppedWhileStalled);
    served.close(); // the pending warning is written when the port closes (else at the end of its interval)
    expect(main.lines.filter((l) => l.msg === LOG_DROPPED_MESSAGE)).toEqual([expect.objectContaining({ level: 40, dropped: droppedWhileStalled, total: droppedWhileStalled })]);
  });
});

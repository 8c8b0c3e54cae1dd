// log-proxy: a worker's pino lines re-emitted by the main logger at the same level with the same fields,
// batched per turn, with garbage dropped and counted.
import { Writable } from 'node:stream';
import { MessageChannel } from 'node:worker_threads';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { serveWorkerLogs, workerLogger } from '../../../src/runtime/worker-services/log-proxy.ts';
import { counting, until } from './helpers.ts';

const closers: (() => void)[] = [];
afterAll(() => {
  for (const c of closers) c();
});

/** A main logger as the runtime makes one (base name, level), writing to memory. */
function mainLogger(level = 'info'): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level, base: { name: 'enclave-agent' } }, out), lines };
}

function over(level = 'info'): { worker: pino.Logger; main: ReturnType<typeof mainLogger>; posts: unknown[] } {
  const main = mainLogger(level);
  const { port1, port2 } = new MessageChannel();
  const served = serveWorkerLogs(port1, main.logger);
  const { port, posts } = counting(port2);
  const worker = workerLogger(port, { level, bindings: { worker: 1 } });
  expect(posts).toEqual([{ k: 'note', m: 'inflight', v: expect.any(SharedArrayBuffer) }]); // once, at the start
  posts.length = 0;
  closers.push(() => served.close());
  return { worker, main, posts };
}

describe('workerLogger / serveWorkerLogs', () => {
  it('re-emits a warn line at warn with its fields and the main logger’s base, not the worker’s pid/hostname/time', async () => {
    const { worker, main } = over();
    worker.warn({ session: 'ab12', reason: 'write-stall', stats: { framesIn: 3 } }, 'session closed');
    await until(() => main.lines.length === 1);
    const line = main.lines[0]!;
    expect(line).toMatchObject({ level: 40, name: 'enclave-agent', worker: 1, session: 'ab12', reason: 'write-stall', stats: { framesIn: 3 }, msg: 'session closed' });
    expect(typeof line.time).toBe('number');
    // One of each field: pino's own fields come from the main logger only.
    expect(Object.keys(line).filter((k) => k === 'level' || k === 'time')).toHaveLength(2);
  });

  it('posts one message per turn and keeps the order and levels of the lines', async () => {
    const { worker, main, posts } = over('debug');
    worker.debug('one');
    worker.info({ n: 2 }, 'two');
    worker.error({ err: new TypeError('bad thing') }, 'three');
    worker.fatal('four');
    expect(posts).toHaveLength(0);
    await new Promise((r) => setImmediate(r));
    expect(posts).toHaveLength(1);
    await until(() => main.lines.length === 4);
    expect(main.lines.map((l) => [l.level, l.msg])).toEqual([
      [20, 'one'],
      [30, 'two'],
      [50, 'three'],
      [60, 'four'],
    ]);
    // The error was serialized once, in the worker: type and message survive the main logger.
    expect(main.lines[2]!.err).toMatchObject({ type: 'TypeError', message: 'bad thing' });
  });

  it('flush() sends what is gathered at once', async () => {
    const { worker, main, posts } = over();
    worker.info('now');
    worker.flush();
    expect(posts).toHaveLength(1);
    await until(() => main.lines.length === 1);
  });

  it('drops and counts lines that are not JSON objects at a known level', async () => {
    const main = mainLogger();
    const { port1, port2 } = new MessageChannel();
    const served = serveWorkerLogs(port1, main.logger);
    closers.push(() => served.close());
    port2.postMessage({ k: 'note', m: 'lines', v: 'not json\n[1,2]\n{"level":99,"msg":"x"}\n{"level":"loud"}\n{"msg":"no level"}\n\n{"level":30,"msg":"fine"}\n' });
    port2.postMessage({ k: 'note', m: 'lines', v: 42 });
    await until(() => served.dropped === 6 && main.lines.length === 1);
    expect(main.lines[0]).toMatchObject({ level: 30, msg: 'fine' });
  });
});

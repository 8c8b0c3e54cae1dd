// trx-proxy: the transaction log of a worker written to the main thread's sink: one message per turn,
// lines in order, nothing lost at close, and what each kind of main sink expects (lines in one call, one
// line per call, or records).
import { MessageChannel } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { createMemoryLogSink, recordLine, type LogSink } from '../../../src/http/log-sink.ts';
import { logSinkCapabilities, remoteLogSink, serveLogSink } from '../../../src/runtime/worker-services/trx-proxy.ts';
import { counting, until } from './helpers.ts';

const closers: (() => void)[] = [];
afterAll(() => {
  for (const c of closers) c();
});

function over(sink: LogSink, caps = logSinkCapabilities(sink)): { remote: ReturnType<typeof remoteLogSink>; posts: unknown[] } {
  const { port1, port2 } = new MessageChannel();
  const served = serveLogSink(port1, sink);
  const { port, posts } = counting(port2);
  const remote = remoteLogSink(port, caps);
  expect(posts).toEqual([{ k: 'note', m: 'inflight', v: expect.any(SharedArrayBuffer) }]); // once, at the start
  posts.length = 0;
  closers.push(() => served.close());
  return { remote, posts };
}

describe('remoteLogSink / serveLogSink', () => {
  it('posts what one turn writes as one message, and every line arrives in order once close() resolves', async () => {
    const main = createMemoryLogSink();
    const { remote, posts } = over(main);
    expect(remote.writeLines).toBeTypeOf('function');
    for (let i = 0; i < 50; i++) remote.writeLines!(recordLine({ kind: 'trx', i }));
    remote.write({ kind: 'trx', i: 50 });
    remote.writeBatch([{ kind: 'trx', i: 51 }, { kind: 'trx', i: 52 }]);
    expect(posts).toHaveLength(0); // nothing crosses before the turn ends
    await new Promise((r) => setImmediate(r));
    expect(posts).toHaveLength(1);
    for (let i = 53; i < 100; i++) remote.writeLines!(recordLine({ kind: 'trx', i }));
    await remote.close(); // the last 47 were never flushed by a turn: close() sends them and waits
    expect(main.records.map((r) => r.i)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(main.records[0]).toEqual({ level: 'info', kind: 'trx', i: 0 });
    remote.writeLines!(recordLine({ after: 'close' }));
    await new Promise((r) => setImmediate(r));
    expect(main.records).toHaveLength(100);
  });

  it('hands a batching main sink the worker’s lines byte for byte, one batch per call (the main thread parses nothing)', async () => {
    const calls: string[] = [];
    const main: LogSink = { write() {}, writeBatch() {}, writeLines: (l) => void calls.push(l), async close() {} };
    const { remote } = over(main);
    const lines = recordLine({ kind: 'trx', txid: 'a', path: '/x?y="z"', ua: 'é\u2028' }) + recordLine({ kind: 'trx', txid: 'b', status: 204 });
    remote.writeLines!(lines);
    await remote.close();
    expect(calls).toEqual([lines]);
  });

  it('hands a main sink without writeBatch one line per call (the vsock stream’s contract)', async () => {
    const calls: string[] = [];
    const main: LogSink = { write() {}, writeLines: (l) => void calls.push(l), async close() {} };
    const { remote } = over(main);
    remote.writeLines!(recordLine({ i: 1 }) + recordLine({ i: 2 }));
    remote.write({ i: 3 });
    await remote.close();
    expect(calls).toEqual([recordLine({ i: 1 }), recordLine({ i: 2 }), recordLine({ i: 3 })]);
  });

  it('has no writeLines when the main sink has none, and sends the records to its writeBatch or write', async () => {
    const batches: object[][] = [];
    const batching: LogSink = { write: (r) => void batches.push([r]), writeBatch: (rs) => void batches.push([...rs]), async close() {} };
    const a = over(batching);
    expect(a.remote.writeLines).toBeUndefined();
    a.remote.write({ i: 1 });
    a.remote.writeBatch([{ i: 2 }, { i: 3, nested: { ok: true } }]);
    await a.remote.close();
    expect(batches).toEqual([[{ i: 1 }, { i: 2 }, { i: 3, nested: { ok: true } }]]);

    const singles: object[] = [];
    const b = over({ write: (r) => void singles.push(r), async close() {} });
    b.remote.writeBatch([{ i: 1 }, { i: 2 }]);
    // A record that cannot be cloned is dropped and counted; the others still arrive.
    b.remote.write({ i: 3, f: () => 1 });
    b.remote.write({ i: 4 });
    await b.remote.close();
    expect(singles).toEqual([{ i: 1 }, { i: 2 }, { i: 4 }]);
    expect(b.remote.dropped).toBe(1);
  });

  it('does not lose lines sent to a sink without writeLines (capabilities not given): they are parsed back', async () => {
    const got: object[] = [];
    const { remote } = over({ write: (r) => void got.push(r), async close() {} }, { lines: true });
    remote.writeLines!(recordLine({ i: 1 }) + 'not json\n' + recordLine({ i: 2 }));
    await remote.close();
    expect(got).toEqual([{ i: 1 }, { i: 2 }]);
  });

  it('never closes the main sink (the main thread and the other workers share it), and close() resolves when the main side is gone', async () => {
    let closed = 0;
    const main: LogSink = { write() {}, writeLines() {}, writeBatch() {}, close: () => (closed++, Promise.resolve()) };
    const { port1, port2 } = new MessageChannel();
    const served = serveLogSink(port1, main);
    const remote = remoteLogSink(port2, logSinkCapabilities(main));
    remote.writeLines!('{"level":"info"}\n');
    served.close();
    await until(() => true);
    await remote.close();
    expect(closed).toBe(0);
  });
});

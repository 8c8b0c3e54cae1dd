import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createFileLogSink } from '../../src/http/log-sink.ts';

describe('log sinks', () => {
  it('appends one JSON line per record to a file sink', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'trx-'));
    try {
      const file = path.join(dir, 'sub', 'trx.log');
      const sink = createFileLogSink(file);
      sink.write({ kind: 'trx', txid: 'a' });
      sink.write({ kind: 'trx', txid: 'b' });
      await sink.close();
      const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(lines.map((l) => l.txid)).toEqual(['a', 'b']);
      expect(lines[0]).toMatchObject({ kind: 'trx', level: 'info' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('record lines', () => {
  it('writes each record as the exact line pino wrote for it ({"level":"info",...record})', async () => {
    const pino = (await import('pino')).default;
    const { recordLine } = await import('../../src/http/log-sink.ts');
    const record = { kind: 'trx', txid: 'a"b\\c', n: 1.5, nothing: null, skipped: undefined, h: { 'x-a': ['1', '2'], host: 'h\u00e9' } };
    let line = '';
    const logger = pino({ base: null, timestamp: false, formatters: { level: (label) => ({ level: label }) } }, { write: (l: string) => void (line = l) });
    logger.info(record);
    expect(recordLine(record)).toBe(line);
    expect(recordLine({})).toBe('{"level":"info"}\n');
  });

  it('writes a batch as one write of whole lines, and a backed-up stream sink counts every record of a dropped batch', async () => {
    const { createStreamLogSink } = await import('../../src/http/log-sink.ts');
    const { Writable } = await import('node:stream');
    const writes: string[] = [];
    const open = new Writable({
      write(chunk: Buffer, _enc, cb) {
        writes.push(chunk.toString());
        cb();
      },
    });
    const sink = createStreamLogSink(open);
    sink.writeBatch([{ txid: 'a' }, { txid: 'b' }]);
    expect(writes).toEqual(['{"level":"info","txid":"a"}\n{"level":"info","txid":"b"}\n']);
    await sink.close();

    // A stream that never takes its writes: past maxQueuedBytes, whole batches are dropped and counted per record.
    const stuck = new Writable({ write() {} });
    const backed = createStreamLogSink(stuck, { maxQueuedBytes: 10 });
    backed.writeBatch([{ txid: 'x'.repeat(64) }]);
    backed.writeBatch([{ txid: 'c' }, { txid: 'd' }, { txid: 'e' }]);
    backed.write({ txid: 'f' });
    expect(backed.dropped).toBe(4);
    stuck.destroy();
    await backed.close();
  });
});

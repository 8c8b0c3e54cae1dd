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

// What the activity page's tests start it on: a store and a reader on a fresh file, and a log the test reads back
// (pino's JSON lines as objects). Everything opened is closed by `cleanup`, last first.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { openActivityReader } from '../../src/host/activity-reader.ts';
import { openActivityStore } from '../../src/host/activity-store.ts';

export interface ActivityFixture {
  store: ReturnType<typeof openActivityStore>;
  reader: ReturnType<typeof openActivityReader>;
  /** The log lines written to `out`, parsed. */
  lines: Record<string, unknown>[];
  /** A pino destination: `pino({ level: 'info' }, out)`. */
  out: Writable;
}

export async function activityFixture(prefix: string, cleanup: (() => Promise<void> | void)[]): Promise<ActivityFixture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const store = openActivityStore({ file: path.join(dir, 'a.db') });
  cleanup.push(() => store.close());
  const reader = openActivityReader(path.join(dir, 'a.db'));
  cleanup.push(() => reader.close());
  const lines: Record<string, unknown>[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { store, reader, lines, out };
}

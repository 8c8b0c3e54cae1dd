// The writing side of the activity database (host, parent instance): transaction records arrive from the log
// sink one at a time and are inserted in batches — one SQLite transaction per batch, flushed when the batch is
// full or after a short timer — so ingest costs a few microseconds per record. WAL mode: the page reads from
// its own connection (a worker thread, activity-reader.ts) without ever blocking this writer. A record is
// dropped only when the queue is full (the disk cannot keep up) or SQLite refuses the batch (disk full): both
// are counted and shown on the page, never silent. Retention (age and row count) deletes the oldest rows in
// small chunks on a timer, so a large purge never holds the event loop for long.
import { closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import pino, { type Logger } from 'pino';
import { activityRow, parseLine, type ActivityRow } from './activity-record.ts';
import { ActivityStoreError, ensureSchema } from './activity-schema.ts';

export interface ActivityStoreOptions {
  file: string;
  /** Rows older than this many days are deleted. Default 7. */
  retainDays?: number;
  /** At most this many rows are kept (the oldest go first). Default 1,000,000. */
  retainRows?: number;
  /** A batch is written when it has this many records... Default 2000. */
  batchSize?: number;
  /** ...or this long after its first record. Default 100 ms. */
  flushMs?: number;
  /** Records waiting beyond this are dropped (counted). Default 200,000. */
  maxPending?: number;
  /** How often retention runs. Default 10 s. */
  retentionEveryMs?: number;
  logger?: Logger;
  /** The clock for retention by age (tests). */
  now?: () => number;
}

/** A stored record as the listing and the live tail show it (no headers). */
export type ActivitySummary = { id: number } & Pick<
  ActivityRow,
  'ts' | 'txid' | 'method' | 'path' | 'status' | 'elapsedMs' | 'bytesIn' | 'bytesOut' | 'remoteIp' | 'decryptedFields' | 'error'
>;

export interface ActivityStoreStats {
  /** Records inserted since the store opened. */
  inserted: number;
  /** Records dropped: queue full or a failed batch. */
  dropped: number;
  /** Lines that were JSON but not a transaction record the store can keep (operational logs are not counted). */
  rejected: number;
  /** Rows deleted by retention. */
  expired: number;
  /** Rows in the table now (kept up to date without COUNT(*)). */
  rows: number;
  pending: number;
}

export interface ActivityStore {
  readonly file: string;
  readonly stats: Readonly<ActivityStoreStats>;
  readonly retainDays: number;
  readonly retainRows: number;
  /** Queues a row; false when it was dropped (queue full). */
  add(row: ActivityRow): boolean;
  /** A parsed record: queued when it is a transaction record; 'other' for any other line (operational log). */
  addRecord(record: Record<string, unknown>): 'queued' | 'dropped' | 'rejected' | 'other';
  /** A JSON line (newline optional). */
  addLine(line: string): 'queued' | 'dropped' | 'rejected' | 'other' | 'invalid';
  /** Called after every written batch with the rows as stored (ids assigned). */
  onInserted(listener: (rows: ActivitySummary[]) => void): () => void;
  /** Writes what is queued now. */
  flush(): void;
  /** Runs retention to completion now (tests, the benchmark). */
  expireNow(): void;
  close(): void;
}

function positive(name: string, v: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isFinite(v) || v <= 0 || v > max) throw new ActivityStoreError('ACTIVITY_STORE_BAD_OPTIONS', `${name}: expected a positive number up to ${max}, found ${String(v)}`);
  return v;
}

const DELETE_CHUNK = 5000;

export function openActivityStore(opts: ActivityStoreOptions): ActivityStore {
  const retainDays = positive('retainDays', opts.retainDays ?? 7, 36_500);
  const retainRows = Math.floor(positive('retainRows', opts.retainRows ?? 1_000_000, 1e12));
  const batchSize = Math.floor(positive('batchSize', opts.batchSize ?? 2000, 1e6));
  const flushMs = positive('flushMs', opts.flushMs ?? 100, 60_000);
  const maxPending = Math.floor(positive('maxPending', opts.maxPending ?? 200_000, 1e8));
  const retentionEveryMs = positive('retentionEveryMs', opts.retentionEveryMs ?? 10_000, 86_400_000);
  const logger = opts.logger ?? pino({ enabled: false });
  const now = opts.now ?? Date.now;
  const file = opts.file;

  let db: Database.Database;
  try {
    // Created owner-only before SQLite opens it (the WAL and shm files take the database file's mode).
    closeSync(openSync(file, 'a', 0o600));
    db = new Database(file);
  } catch (err) {
    throw new ActivityStoreError('ACTIVITY_STORE_OPEN_FAILED', `cannot open the activity database ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 50');
    // The request-id and path indexes take inserts and retention's deletes at random places: at 1,000,000 rows
    // they outgrow SQLite's default 16 MiB page cache, and every batch then rereads pages (measured: ~1.4×).
    db.pragma('cache_size = -65536');
    ensureSchema(db, file);
  } catch (err) {
    db.close();
    if (err instanceof ActivityStoreError) throw err;
    throw new ActivityStoreError('ACTIVITY_STORE_OPEN_FAILED', `cannot use ${file} as an activity database: ${(err as Error).message}`, { cause: err });
  }

  const insert = db.prepare(
    `INSERT INTO trx (ts, txid, method, path, status, status_class, elapsed_ms, bytes_in, bytes_out, remote_ip, decrypted_fields, type, session_id, user_agent, error, request_headers, response_headers)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const deleteOlder = db.prepare(`DELETE FROM trx WHERE id IN (SELECT id FROM trx WHERE ts < ? ORDER BY ts LIMIT ${DELETE_CHUNK})`);
  const deleteOldest = db.prepare('DELETE FROM trx WHERE id IN (SELECT id FROM trx ORDER BY id LIMIT ?)');

  const stats: ActivityStoreStats = { inserted: 0, dropped: 0, rejected: 0, expired: 0, rows: (db.prepare('SELECT count(*) AS n FROM trx').get() as { n: number }).n, pending: 0 };
  const listeners = new Set<(rows: ActivitySummary[]) => void>();
  let queue: ActivityRow[] = [];
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const writeBatch = db.transaction((rows: ActivityRow[]): ActivitySummary[] => {
    const out: ActivitySummary[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      const info = insert.run(
        r.ts, r.txid, r.method, r.path, r.status, Math.floor(r.status / 100), r.elapsedMs, r.bytesIn, r.bytesOut, r.remoteIp,
        r.decryptedFields, r.type, r.sessionId, r.userAgent, r.error, r.requestHeaders, r.responseHeaders,
      );
      out[i] = {
        id: Number(info.lastInsertRowid), ts: r.ts, txid: r.txid, method: r.method, path: r.path, status: r.status, elapsedMs: r.elapsedMs,
        bytesIn: r.bytesIn, bytesOut: r.bytesOut, remoteIp: r.remoteIp, decryptedFields: r.decryptedFields, error: r.error,
      };
    }
    return out;
  });

  const flush = (): void => {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (queue.length === 0 || closed) return;
    const rows = queue;
    queue = [];
    stats.pending = 0;
    let stored: ActivitySummary[];
    try {
      stored = writeBatch(rows);
    } catch (err) {
      stats.dropped += rows.length;
      logger.error({ err: (err as { code?: string }).code ?? (err as Error).message, records: rows.length }, 'activity batch not stored; records dropped');
      return;
    }
    stats.inserted += stored.length;
    stats.rows += stored.length;
    for (const l of listeners) {
      try {
        l(stored);
      } catch (err) {
        logger.error({ err: (err as Error).message }, 'activity listener failed');
      }
    }
  };

  const add = (row: ActivityRow): boolean => {
    if (closed || queue.length >= maxPending) {
      stats.dropped++;
      return false;
    }
    queue.push(row);
    stats.pending = queue.length;
    if (queue.length >= batchSize) flush();
    else timer ??= setTimeout(flush, flushMs);
    return true;
  };

  const addRecord = (record: Record<string, unknown>): 'queued' | 'dropped' | 'rejected' | 'other' => {
    if (record.kind !== 'trx') return 'other';
    const row = activityRow(record);
    if (row === null) {
      stats.rejected++;
      return 'rejected';
    }
    return add(row) ? 'queued' : 'dropped';
  };

  /** One chunk of retention; true when there is more to delete. */
  const expireChunk = (): boolean => {
    try {
      let deleted = deleteOlder.run(now() - retainDays * 86_400_000).changes;
      const over = stats.rows - deleted - retainRows;
      if (over > 0) deleted += deleteOldest.run(Math.min(over, DELETE_CHUNK)).changes;
      stats.rows -= deleted;
      stats.expired += deleted;
      return deleted >= DELETE_CHUNK;
    } catch (err) {
      logger.error({ err: (err as { code?: string }).code ?? (err as Error).message }, 'activity retention failed');
      return false;
    }
  };
  const retention = (): void => {
    if (closed) return;
    // One chunk per turn: ingest (socket reads, batches) runs between chunks.
    if (expireChunk()) setImmediate(retention);
  };
  const retentionTimer = setInterval(retention, retentionEveryMs);
  retentionTimer.unref();
  setImmediate(retention);

  return {
    file,
    stats,
    retainDays,
    retainRows,
    add,
    addRecord,
    addLine(line) {
      const record = parseLine(line);
      return record === null ? 'invalid' : addRecord(record);
    },
    onInserted(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    flush,
    expireNow() {
      while (expireChunk());
    },
    close() {
      if (closed) return;
      flush();
      closed = true;
      clearInterval(retentionTimer);
      try {
        db.pragma('optimize');
      } catch {
        // best effort: statistics for the next open
      }
      db.close();
    },
  };
}

// The writing side of the activity database (host, parent instance): transaction records arrive from the log
// sink one at a time and are inserted in batches — one SQLite transaction per batch, flushed when the batch is
// full or after a short timer. WAL mode: the page reads from its own connection (a worker thread,
// activity-reader.ts) without ever blocking this writer. A record is dropped only when the queue is full (the
// disk cannot keep up) or SQLite refuses the batch (disk full): both are counted and shown on the page, never
// silent. Rows go into the newest partition (activity-schema.ts) until it holds ⌈retainRows / 32⌉, then a new
// one starts. Retention: by row count, the oldest partition is dropped whole as soon as the rows exceed
// retainRows (so between retainRows − ⌈retainRows / 32⌉ and retainRows are kept); by age, exactly: every row
// older than retainDays goes (a partition all older is dropped, otherwise rows are deleted in 5,000-row
// chunks). One drop or one chunk per event-loop turn, so a large purge never holds the loop for long.
import { closeSync, openSync, renameSync } from 'node:fs';
import Database from 'better-sqlite3';
import pino, { type Logger } from 'pino';
import { activityRow, parseLine, type ActivityRow } from './activity-record.ts';
import { ActivityStoreError, ensureSchema, listPartitions, partitionDdl, partitionName, partitionRows, schemaVersion, SCHEMA_VERSION } from './activity-schema.ts';

export interface ActivityStoreOptions {
  file: string;
  /** Rows older than this many days are deleted. Default 7. */
  retainDays?: number;
  /** At most this many rows are kept (the oldest go first, a partition of ⌈retainRows / 32⌉ at a time). Default 1,000,000. */
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

/** One partition as the writer tracks it. */
interface Part {
  k: number;
  name: string;
  rows: number;
  /** Its smallest id; null while empty. */
  first: number | null;
  insert: Database.Statement | null;
}

const INSERT_COLUMNS =
  'id, ts, txid, method, path, status, status_class, elapsed_ms, bytes_in, bytes_out, remote_ip, decrypted_fields, type, session_id, user_agent, error, request_headers, response_headers';

function openFile(file: string): Database.Database {
  try {
    // Created owner-only before SQLite opens it (the WAL and shm files take the database file's mode).
    closeSync(openSync(file, 'a', 0o600));
    return new Database(file);
  } catch (err) {
    throw new ActivityStoreError('ACTIVITY_STORE_OPEN_FAILED', `cannot open the activity database ${file}: ${(err as Error).message}`, { cause: err });
  }
}

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
  const perPartition = partitionRows(retainRows);

  let db = openFile(file);
  try {
    // The database is a cache of the agent's stream, so a file of the old one-table schema is moved aside
    // (kept, not converted: a million rows would take minutes to copy) and a new one started.
    if (schemaVersion(db) === 1) {
      db.close();
      const old = `${file}.schema-1`;
      renameSync(file, old);
      logger.warn({ file, movedTo: old, schema: SCHEMA_VERSION }, 'activity database of schema 1 moved aside; a new one is started (delete the old file when done with it)');
      db = openFile(file);
    }
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 50');
    // The newest partition's indexes take every batch; the page cache keeps them (and the other partitions'
    // upper levels) in memory.
    db.pragma('cache_size = -65536');
    ensureSchema(db, file);
  } catch (err) {
    if (db.open) db.close();
    if (err instanceof ActivityStoreError) throw err;
    throw new ActivityStoreError('ACTIVITY_STORE_OPEN_FAILED', `cannot use ${file} as an activity database: ${(err as Error).message}`, { cause: err });
  }

  let parts: Part[] = [];
  let nextId = 1;
  /** Reads the partitions, their row counts and the next id from the database (at open, and after a failed batch). */
  const load = (): void => {
    parts = listPartitions(db).map(({ k, name }) => {
      const r = db.prepare(`SELECT count(*) AS n, min(id) AS first, max(id) AS last FROM ${name}`).get() as { n: number; first: number | null; last: number | null };
      nextId = Math.max(nextId, (r.last ?? 0) + 1);
      return { k, name, rows: r.n, first: r.first, insert: null };
    });
  };
  load();
  const current = (): Part => parts[parts.length - 1]!;
  const newPartition = (): Part => {
    const k = current().k + 1;
    db.exec(partitionDdl(k));
    const p: Part = { k, name: partitionName(k), rows: 0, first: null, insert: null };
    parts.push(p);
    return p;
  };

  const stats: ActivityStoreStats = { inserted: 0, dropped: 0, rejected: 0, expired: 0, rows: parts.reduce((n, p) => n + p.rows, 0), pending: 0 };
  const listeners = new Set<(rows: ActivitySummary[]) => void>();
  let queue: ActivityRow[] = [];
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const writeBatch = db.transaction((rows: ActivityRow[]): ActivitySummary[] => {
    const out: ActivitySummary[] = new Array(rows.length);
    let part = current();
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      if (part.first !== null && nextId - part.first >= perPartition) part = newPartition();
      part.insert ??= db.prepare(`INSERT INTO ${part.name} (${INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
      const id = nextId;
      part.insert.run(
        id, r.ts, r.txid, r.method, r.path, r.status, Math.floor(r.status / 100), r.elapsedMs, r.bytesIn, r.bytesOut, r.remoteIp,
        r.decryptedFields, r.type, r.sessionId, r.userAgent, r.error, r.requestHeaders, r.responseHeaders,
      );
      nextId++;
      part.first ??= id;
      part.rows++;
      out[i] = {
        id, ts: r.ts, txid: r.txid, method: r.method, path: r.path, status: r.status, elapsedMs: r.elapsedMs,
        bytesIn: r.bytesIn, bytesOut: r.bytesOut, remoteIp: r.remoteIp, decryptedFields: r.decryptedFields, error: r.error,
      };
    }
    return out;
  });

  let retentionQueued = false;
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
      // The transaction was rolled back (a partition it created included): count again from the database.
      try {
        load();
      } catch {
        // the next batch fails the same way, and is counted the same way
      }
      return;
    }
    stats.inserted += stored.length;
    stats.rows += stored.length;
    if (stats.rows > retainRows && !retentionQueued) {
      retentionQueued = true;
      setImmediate(retention);
    }
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

  const drop = (p: Part): void => {
    db.exec(`DROP TABLE ${p.name}`);
    parts = parts.filter((q) => q !== p);
    stats.rows -= p.rows;
    stats.expired += p.rows;
  };
  const deleted = (p: Part, n: number): void => {
    p.rows -= n;
    stats.rows -= n;
    stats.expired += n;
  };
  const one = (sql: string, ...args: number[]): number | null => (db.prepare(sql).pluck().get(...args) as number | null | undefined) ?? null;

  /** One step of retention (one partition dropped or one chunk deleted); true when it did something. */
  const expireChunk = (): boolean => {
    try {
      // By age, exactly: late records can put old timestamps in newer partitions, so every partition is looked at.
      const cutoff = now() - retainDays * 86_400_000;
      const newest = current();
      for (const p of parts) {
        if (p !== newest && p.rows === 0) {
          drop(p);
          return true;
        }
        const oldest = one(`SELECT min(ts) FROM ${p.name}`);
        if (oldest === null || oldest >= cutoff) continue;
        if (p !== newest && one(`SELECT max(ts) FROM ${p.name}`)! < cutoff) drop(p);
        else deleted(p, db.prepare(`DELETE FROM ${p.name} WHERE id IN (SELECT id FROM ${p.name} WHERE ts < ? ORDER BY ts LIMIT ${DELETE_CHUNK})`).run(cutoff).changes);
        return true;
      }
      // By row count: the oldest partition whole; the newest (never dropped) only when it alone is over (a
      // smaller --retain-rows than the partitions were sized for), oldest rows first.
      if (stats.rows <= retainRows) return false;
      if (parts.length > 1) drop(parts[0]!);
      else deleted(newest, db.prepare(`DELETE FROM ${newest.name} WHERE id IN (SELECT id FROM ${newest.name} ORDER BY id LIMIT ?)`).run(Math.min(stats.rows - retainRows, DELETE_CHUNK)).changes);
      return true;
    } catch (err) {
      logger.error({ err: (err as { code?: string }).code ?? (err as Error).message }, 'activity retention failed');
      return false;
    }
  };
  const retention = (): void => {
    retentionQueued = false;
    if (closed) return;
    // One step per turn: ingest (socket reads, batches) runs between steps.
    if (expireChunk() && !retentionQueued) {
      retentionQueued = true;
      setImmediate(retention);
    }
  };
  const retentionTimer = setInterval(() => {
    if (!retentionQueued) retention();
  }, retentionEveryMs);
  retentionTimer.unref();
  retentionQueued = true;
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

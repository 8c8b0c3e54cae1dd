// The activity database's schema, shared by the writer (activity-store.ts) and the page's reader
// (activity-queries.ts). Transaction records live in partitions: tables `trx_<k>` (k = 1, 2, …) of consecutive
// ids, each with its own indexes, the newest taking the inserts. Why: the request-id and path indexes take
// every insert at a random place; in one table of 1,000,000 rows each batch rewrote pages all over both
// (measured: two thirds of ingest time went to writing those pages to the WAL), while a partition's indexes
// are small enough that a batch touches few pages. Retention by row count then drops a whole partition
// (`DROP TABLE`) instead of deleting rows through four indexes. `id` is global (the insertion order, unique
// across partitions) and, with `ts`, the keyset cursor of the newest-first listing. The indexes serve the
// page's four ways in: request id (exact), time (the listing and the traffic aggregates), status class
// (+ time: a 5xx filter stays a keyset walk), path (prefix).
import type Database from 'better-sqlite3';
import { AgentError } from '../errors.ts';

export type ActivityStoreErrorCode = 'ACTIVITY_STORE_OPEN_FAILED' | 'ACTIVITY_STORE_BAD_OPTIONS' | 'ACTIVITY_STORE_WRONG_SCHEMA';

export class ActivityStoreError extends AgentError {
  declare readonly code: ActivityStoreErrorCode;
  constructor(code: ActivityStoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** 1: one `trx` table. 2: partitions `trx_<k>`. */
export const SCHEMA_VERSION = 2;

/** The row-count retention works in this many partitions: a partition holds ⌈retainRows / 32⌉ rows. */
export const PARTITIONS_PER_RETENTION = 32;

/** Rows per partition for a row-count retention (the granularity of `--retain-rows`). */
export function partitionRows(retainRows: number): number {
  return Math.max(1, Math.ceil(retainRows / PARTITIONS_PER_RETENTION));
}

export interface Partition {
  k: number;
  /** The table's name, `trx_<k>` (safe to splice into SQL: built here from an integer). */
  name: string;
}

export function partitionName(k: number): string {
  if (!Number.isSafeInteger(k) || k < 1) throw new RangeError(`partition number: ${k}`);
  return `trx_${k}`;
}

export function partitionDdl(k: number): string {
  const t = partitionName(k);
  return `
CREATE TABLE ${t} (
  id INTEGER PRIMARY KEY,
  ts INTEGER NOT NULL,
  txid TEXT NOT NULL,
  method TEXT NOT NULL,
  path TEXT NOT NULL,
  status INTEGER NOT NULL,
  status_class INTEGER NOT NULL,
  elapsed_ms REAL NOT NULL,
  bytes_in INTEGER NOT NULL,
  bytes_out INTEGER NOT NULL,
  remote_ip TEXT,
  decrypted_fields INTEGER NOT NULL,
  type TEXT NOT NULL,
  session_id TEXT NOT NULL,
  user_agent TEXT,
  error TEXT,
  request_headers TEXT NOT NULL,
  response_headers TEXT NOT NULL
);
CREATE INDEX ${t}_ts ON ${t} (ts);
CREATE INDEX ${t}_txid ON ${t} (txid);
CREATE INDEX ${t}_status ON ${t} (status_class, ts);
CREATE INDEX ${t}_path ON ${t} (path);
`;
}

/** The partitions, oldest first (read inside a transaction, it is that snapshot's list). */
export function listPartitions(db: Database.Database): Partition[] {
  const names = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name GLOB 'trx_[1-9]*'").pluck().all() as string[];
  const out: Partition[] = [];
  for (const name of names) {
    const m = /^trx_([1-9][0-9]{0,14})$/.exec(name);
    if (m !== null) out.push({ k: Number(m[1]), name });
  }
  return out.sort((a, b) => a.k - b.k);
}

/** The database's schema version: 0 for a new (empty) file. */
export function schemaVersion(db: Database.Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/** Creates the schema (one empty partition) in a new file; refuses a database written by another schema version. */
export function ensureSchema(db: Database.Database, file: string): void {
  const version = schemaVersion(db);
  if (version !== 0 && version !== SCHEMA_VERSION) {
    throw new ActivityStoreError('ACTIVITY_STORE_WRONG_SCHEMA', `${file}: activity schema version ${SCHEMA_VERSION} expected, found ${version}`);
  }
  db.transaction(() => {
    if (listPartitions(db).length === 0) db.exec(partitionDdl(1));
    if (version === 0) db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}

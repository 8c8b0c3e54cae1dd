// The activity database's schema, shared by the writer (activity-store.ts) and the page's reader
// (activity-queries.ts). One table of transaction records; `id` is the insertion order and, with `ts`, the
// keyset cursor of the newest-first listing. The indexes serve the page's four ways in: request id (exact),
// time (the listing and the traffic aggregates), status class (+ time: a 5xx filter stays a keyset walk),
// path (prefix).
import type Database from 'better-sqlite3';
import { AgentError } from '../errors.ts';

export type ActivityStoreErrorCode = 'ACTIVITY_STORE_OPEN_FAILED' | 'ACTIVITY_STORE_BAD_OPTIONS' | 'ACTIVITY_STORE_WRONG_SCHEMA';

export class ActivityStoreError extends AgentError {
  declare readonly code: ActivityStoreErrorCode;
  constructor(code: ActivityStoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export const SCHEMA_VERSION = 1;

const DDL = `
CREATE TABLE IF NOT EXISTS trx (
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
CREATE INDEX IF NOT EXISTS trx_ts ON trx (ts);
CREATE INDEX IF NOT EXISTS trx_txid ON trx (txid);
CREATE INDEX IF NOT EXISTS trx_status ON trx (status_class, ts);
CREATE INDEX IF NOT EXISTS trx_path ON trx (path);
`;

/** Creates the schema (idempotent) and refuses a database written by another schema version. */
export function ensureSchema(db: Database.Database, file: string): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version !== 0 && version !== SCHEMA_VERSION) {
    throw new ActivityStoreError('ACTIVITY_STORE_WRONG_SCHEMA', `${file}: activity schema version ${SCHEMA_VERSION} expected, found ${version}`);
  }
  db.exec(DDL);
  if (version === 0) db.pragma(`user_version = ${SCHEMA_VERSION}`);
}

// The page's questions to the activity database, answered in SQL: a newest-first listing walked by keyset
// (ts, id) — never OFFSET, so page 1000 costs what page 1 does at 1,000,000 rows — with search by request id
// (exact) and path (prefix) and filters by status class, method and time range; one record's detail; and the
// traffic aggregates (requests/s, p50/p95/p99 latency, error rate) bucketed by time in SQL, so only one row
// per bucket leaves the database. Runs on the reader's read-only connection (activity-reader-worker.ts).
// The records live in partitions (activity-schema.ts): each question is asked of every partition at once, as
// one compound SELECT (UNION ALL) ordered on the outside — SQLite merges the partitions' index-ordered
// streams, so a newest-first page still reads about as many rows as it shows — inside one read transaction,
// so the list of partitions and the rows are the same snapshot while the writer drops and creates them.
import type Database from 'better-sqlite3';
import { listPartitions } from './activity-schema.ts';
import type { ActivitySummary } from './activity-store.ts';

export interface ListQuery {
  /** Cursor from the previous page ("<ts>.<id>"): rows strictly older. */
  before?: string;
  limit?: number;
  txid?: string;
  pathPrefix?: string;
  /** 1..5 (1xx..5xx), or 0 for "no response". */
  statusClass?: number;
  method?: string;
  /** Time range, ms since the epoch: from inclusive, to exclusive. */
  from?: number;
  to?: number;
}

export interface ListResult {
  records: ActivitySummary[];
  /** The cursor of the next (older) page; null at the end. */
  next: string | null;
}

export interface ActivityDetail extends ActivitySummary {
  type: string;
  sessionId: string;
  userAgent: string | null;
  requestHeaders: Record<string, string | string[]>;
  responseHeaders: Record<string, string | string[]>;
}

export interface TrafficQuery {
  from: number;
  to: number;
  /** Wanted number of buckets (the bucket width is rounded to a whole second). */
  buckets?: number;
}

export interface TrafficPoint {
  /** Bucket start, ms since the epoch. */
  t: number;
  requests: number;
  /** Responses with status ≥ 500 or none at all. */
  errors: number;
  p50: number;
  p95: number;
  p99: number;
}

export interface TrafficResult {
  from: number;
  to: number;
  bucketMs: number;
  points: TrafficPoint[];
  total: { requests: number; errors: number; p50: number | null; p95: number | null; p99: number | null };
}

export const MAX_PAGE = 200;

const SUMMARY_COLUMNS =
  'id, ts, txid, method, path, status, elapsed_ms AS elapsedMs, bytes_in AS bytesIn, bytes_out AS bytesOut, remote_ip AS remoteIp, decrypted_fields AS decryptedFields, error';

/** Parses "<ts>.<id>" (ts is negative for a record stamped before 1970); null when malformed. */
export function parseCursor(cursor: string): { ts: number; id: number } | null {
  const m = /^(-?\d{1,16})\.(\d{1,16})$/.exec(cursor);
  return m === null ? null : { ts: Number(m[1]), id: Number(m[2]) };
}

/** Runs `fn` with the partitions' table names, in one read transaction (one snapshot). */
function withPartitions<T>(db: Database.Database, fn: (tables: string[]) => T): T {
  return db.transaction(() => fn(listPartitions(db).map((p) => p.name)))();
}

/** The same SELECT over every partition: `arm(table)` is one partition's; its `args` are bound once per partition. */
function union(tables: string[], arm: (table: string) => string, args: readonly (string | number)[]): { sql: string; args: (string | number)[] } {
  return { sql: tables.map(arm).join(' UNION ALL '), args: tables.flatMap(() => args) };
}

export function listRecords(db: Database.Database, q: ListQuery): ListResult {
  return withPartitions(db, (tables) => list(db, tables, q));
}

function list(db: Database.Database, tables: string[], q: ListQuery): ListResult {
  if (tables.length === 0) return { records: [], next: null };
  const where: string[] = [];
  const args: (string | number)[] = [];
  if (q.txid !== undefined) {
    where.push('txid = ?');
    args.push(q.txid);
  }
  if (q.pathPrefix !== undefined && q.pathPrefix !== '') {
    // A range on the path index: every string that starts with the prefix sorts in [prefix, prefix + U+10FFFF).
    where.push('path >= ? AND path < ?');
    args.push(q.pathPrefix, `${q.pathPrefix}\u{10ffff}`);
  }
  if (q.statusClass !== undefined) {
    where.push('status_class = ?');
    args.push(q.statusClass);
  }
  if (q.method !== undefined) {
    where.push('method = ?');
    args.push(q.method);
  }
  if (q.from !== undefined) {
    where.push('ts >= ?');
    args.push(q.from);
  }
  if (q.to !== undefined) {
    where.push('ts < ?');
    args.push(q.to);
  }
  const cursor = q.before === undefined ? null : parseCursor(q.before);
  if (cursor !== null) {
    where.push('(ts, id) < (?, ?)');
    args.push(cursor.ts, cursor.id);
  }
  const limit = Math.max(1, Math.min(MAX_PAGE, Math.floor(q.limit ?? 50)));
  const cond = where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '';
  const u = union(tables, (t) => `SELECT ${SUMMARY_COLUMNS} FROM ${t}${cond}`, args);
  const rows = db.prepare(`${u.sql} ORDER BY ts DESC, id DESC LIMIT ${limit + 1}`).all(...u.args) as ActivitySummary[];
  const more = rows.length > limit;
  if (more) rows.pop();
  const last = rows.at(-1);
  return { records: rows, next: more && last !== undefined ? `${last.ts}.${last.id}` : null };
}

interface DetailRow extends ActivitySummary {
  type: string;
  sessionId: string;
  userAgent: string | null;
  requestHeaders: string;
  responseHeaders: string;
}

function headerMap(json: string): Record<string, string | string[]> {
  try {
    const v: unknown = JSON.parse(json);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, string | string[]>) : {};
  } catch {
    return {};
  }
}

export function getRecord(db: Database.Database, id: number): ActivityDetail | null {
  const row = withPartitions(db, (tables) => {
    if (tables.length === 0) return undefined;
    const u = union(
      tables,
      (t) => `SELECT ${SUMMARY_COLUMNS}, type, session_id AS sessionId, user_agent AS userAgent, request_headers AS requestHeaders, response_headers AS responseHeaders FROM ${t} WHERE id = ?`,
      [id],
    );
    return db.prepare(u.sql).get(...u.args) as DetailRow | undefined;
  });
  if (row === undefined) return null;
  return { ...row, requestHeaders: headerMap(row.requestHeaders), responseHeaders: headerMap(row.responseHeaders) };
}

/** A bucket width of whole seconds giving about `buckets` buckets over the range. */
export function bucketWidth(from: number, to: number, buckets: number): number {
  const raw = Math.max(1, to - from) / Math.max(1, buckets);
  return Math.max(1000, Math.ceil(raw / 1000) * 1000);
}

export function traffic(db: Database.Database, q: TrafficQuery): TrafficResult {
  const bucketMs = bucketWidth(q.from, q.to, Math.min(500, q.buckets ?? 120));
  // Bucket starts are aligned to the bucket width, so the same bucket means the same instants in every query.
  const from = Math.floor(q.from / bucketMs) * bucketMs;
  const to = q.to;
  const empty = { requests: 0, errors: 0, p50: null, p95: null, p99: null };
  return withPartitions(db, (tables) => {
    if (tables.length === 0) return { from, to, bucketMs, points: [], total: empty };
    // Only the three columns the aggregates need leave each partition.
    const rows = union(tables, (t) => `SELECT ts, status, elapsed_ms FROM ${t} WHERE ts >= ? AND ts < ?`, [from, to]);
    const points = db
      .prepare(
        `SELECT (ts / CAST(? AS INTEGER)) * CAST(? AS INTEGER) AS t, count(*) AS requests, sum(status >= 500 OR status = 0) AS errors,
                percentile(elapsed_ms, 50) AS p50, percentile(elapsed_ms, 95) AS p95, percentile(elapsed_ms, 99) AS p99
         FROM (${rows.sql}) GROUP BY t ORDER BY t`,
      )
      .all(bucketMs, bucketMs, ...rows.args) as TrafficPoint[];
    const total = db
      .prepare(
        `SELECT count(*) AS requests, coalesce(sum(status >= 500 OR status = 0), 0) AS errors,
                percentile(elapsed_ms, 50) AS p50, percentile(elapsed_ms, 95) AS p95, percentile(elapsed_ms, 99) AS p99
         FROM (${rows.sql})`,
      )
      .get(...rows.args) as TrafficResult['total'];
    return { from, to, bucketMs, points, total };
  });
}

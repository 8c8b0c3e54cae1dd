// The page's questions to the activity database, answered in SQL: a newest-first listing walked by keyset
// (ts, id) — never OFFSET, so page 1000 costs what page 1 does at 1,000,000 rows — with search by request id
// (exact) and path (prefix) and filters by status class, method and time range; one record's detail; and the
// traffic aggregates (requests/s, p50/p95/p99 latency, error rate) bucketed by time in SQL, so only one row
// per bucket leaves the database. Runs on the reader's read-only connection (activity-reader-worker.ts).
import type Database from 'better-sqlite3';
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

/** Parses "<ts>.<id>"; null when malformed. */
export function parseCursor(cursor: string): { ts: number; id: number } | null {
  const m = /^(\d{1,16})\.(\d{1,16})$/.exec(cursor);
  return m === null ? null : { ts: Number(m[1]), id: Number(m[2]) };
}

export function listRecords(db: Database.Database, q: ListQuery): ListResult {
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
  const sql = `SELECT ${SUMMARY_COLUMNS} FROM trx ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY ts DESC, id DESC LIMIT ${limit + 1}`;
  const rows = db.prepare(sql).all(...args) as ActivitySummary[];
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
  const row = db
    .prepare(`SELECT ${SUMMARY_COLUMNS}, type, session_id AS sessionId, user_agent AS userAgent, request_headers AS requestHeaders, response_headers AS responseHeaders FROM trx WHERE id = ?`)
    .get(id) as DetailRow | undefined;
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
  const points = db
    .prepare(
      `SELECT (ts / CAST(? AS INTEGER)) * CAST(? AS INTEGER) AS t, count(*) AS requests, sum(status >= 500 OR status = 0) AS errors,
              percentile(elapsed_ms, 50) AS p50, percentile(elapsed_ms, 95) AS p95, percentile(elapsed_ms, 99) AS p99
       FROM trx WHERE ts >= ? AND ts < ? GROUP BY t ORDER BY t`,
    )
    .all(bucketMs, bucketMs, from, to) as TrafficPoint[];
  const total = db
    .prepare(
      `SELECT count(*) AS requests, coalesce(sum(status >= 500 OR status = 0), 0) AS errors,
              percentile(elapsed_ms, 50) AS p50, percentile(elapsed_ms, 95) AS p95, percentile(elapsed_ms, 99) AS p99
       FROM trx WHERE ts >= ? AND ts < ?`,
    )
    .get(from, to) as TrafficResult['total'];
  return { from, to, bucketMs, points, total };
}

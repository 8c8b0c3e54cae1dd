// One transaction record (src/http/stages/trx-log.ts, ENCRYPTION.md §4) as the activity store keeps it: the
// columns the page searches, filters and draws, plus the two header maps as the agent wrote them (already
// masked in the enclave). Nothing else of a line is kept: a field the record does not define is not stored,
// so the database never holds more than the record already held. The agent is not trusted to send
// well-formed records: anything that is not one is refused here (null), and counted by the caller.

/** A row of the `trx` table, before insertion (no id yet). */
export interface ActivityRow {
  /** Start of the exchange, ms since the epoch. */
  ts: number;
  txid: string;
  method: string;
  path: string;
  /** 0: no response was sent. */
  status: number;
  elapsedMs: number;
  bytesIn: number;
  bytesOut: number;
  remoteIp: string | null;
  decryptedFields: number;
  type: string;
  sessionId: string;
  userAgent: string | null;
  error: string | null;
  /** JSON text of the masked header maps. */
  requestHeaders: string;
  responseHeaders: string;
}

const MAX_TEXT = 2048;
const MAX_HEADERS_JSON = 32 * 1024;

function text(v: unknown, max = MAX_TEXT): string | null {
  return typeof v === 'string' ? (v.length > max ? v.slice(0, max) : v) : null;
}

function count(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : null;
}

/** The header map as JSON when it is a flat object of strings / string arrays (what the agent writes), else '{}'. */
function headers(v: unknown): string {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return '{}';
  const map = v as Record<string, unknown>;
  for (const k in map) {
    const val = map[k];
    if (typeof val !== 'string' && !(Array.isArray(val) && val.every((x) => typeof x === 'string'))) return '{}';
  }
  const json = JSON.stringify(map);
  return json.length > MAX_HEADERS_JSON ? '{}' : json;
}

/** The row for a parsed record, or null when it is not a transaction record the store can keep. */
export function activityRow(record: Record<string, unknown>): ActivityRow | null {
  if (record.kind !== 'trx') return null;
  const txid = text(record.txid, 256);
  const ts = typeof record.ts === 'string' ? Date.parse(record.ts) : NaN;
  const status = count(record.status);
  const elapsed = count(record.elapsed_ms);
  if (txid === null || txid === '' || !Number.isFinite(ts) || status === null || !Number.isInteger(status) || status > 999 || elapsed === null) return null;
  return {
    ts,
    txid,
    method: text(record.method, 32) ?? '',
    path: text(record.path) ?? '',
    status,
    elapsedMs: elapsed,
    bytesIn: count(record.bytes_in) ?? 0,
    bytesOut: count(record.bytes_out) ?? 0,
    remoteIp: text(record.remote_ip, 64),
    decryptedFields: count(record.decrypted_fields) ?? 0,
    type: text(record.type, 16) ?? 'HTTP',
    sessionId: text(record.session_id, 128) ?? '',
    userAgent: text(record.user_agent, 512),
    error: text(record.error, 256),
    requestHeaders: headers(record.request_headers),
    responseHeaders: headers(record.response_headers),
  };
}

/** Parses one JSON line; null when it is not a JSON object. */
export function parseLine(line: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

// Stage: transaction log (ENCRYPTION.md §4). One record per request, written when the exchange is over
// (response sent, failed, or the client gone), errors included. Header values are masked as `***` unless
// the header is in the safe allow-list or in `trusted_headers` (a trailing `*` makes a prefix);
// credentials (authorization, cookie, api-key, ...) are masked whatever the configuration says. Query
// values are masked in the path. Bodies are never logged.
// `error` on a record with status 0 (nothing sent): CLIENT_GONE, the client left before its answer (the
// default when no other code was set); DRAINING, the request was read ahead on a keep-alive connection and
// never sent to the app because the agent was shutting down (drain(): the close tells the client).
// `abandoned_requests` (only there): past the first few requests read ahead and dropped on one connection, one
// record — the first of the rest's — stands for all the rest, and says how many they were; `abandoned_outcomes`
// beside it, how many came to each status and error (abandoned-records.ts: a bounded list).
import type { Exchange, Stage } from '../exchange.ts';
import type { AbandonedOutcome, AbandonedSummary } from '../abandoned-records.ts';
import type { HeaderList } from '../headers.ts';
import { jsonString, recordLine } from '../log-sink.ts';
import type { LogSink } from '../log-sink.ts';
import { maskUserinfo } from '../../util/url-userinfo.ts';

/** Headers whose values are logged as they are. */
const SAFE_HEADERS = new Set([
  'accept',
  'accept-charset',
  'accept-encoding',
  'accept-language',
  'accept-ranges',
  'access-control-allow-origin',
  'age',
  'cache-control',
  'connection',
  'content-encoding',
  'content-language',
  'content-length',
  'content-range',
  'content-type',
  'date',
  'etag',
  'expires',
  'host',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-unmodified-since',
  'last-modified',
  'origin',
  'pragma',
  'range',
  'sec-websocket-extensions',
  'sec-websocket-version',
  'server',
  'transfer-encoding',
  'upgrade',
  'user-agent',
  'vary',
  'via',
  'x-forwarded-proto',
]);

/** Never logged in clear, even when listed in trusted_headers. */
const ALWAYS_MASKED = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'api-key', 'x-api-key', 'api_key', 'x_api_key']);

const MASK = '***';
const MAX_CACHED_NAMES = 512;
const MAX_VALUE_CHARS = 512;

export interface HeaderMasker {
  (list: HeaderList): Record<string, string | string[]>;
  /**
   * The JSON text JSON.stringify gives for `mask(list)`, built without the object; null when it cannot be
   * built that way (a name an object would put first: an array index; very long lists).
   */
  json?(list: HeaderList): string | null;
}

interface NameEntry {
  lower: string;
  visible: boolean;
  /** `"lower":` as JSON, or null when an object key would not keep its place (an array index). */
  key: string | null;
}

/** Object keys JavaScript orders before the others (array indices). */
const ODD_KEY = /^(?:0|[1-9][0-9]*)$/;
/** Past this many fields the object path (with its map) is used. */
const MAX_JSON_FIELDS = 64;

/** Builds the masking function for an allow-list of extra trusted names (`x-trace-*` = prefix). */
export function createHeaderMasker(trustedHeaders: readonly string[] = [], extraSafe: readonly string[] = []): HeaderMasker {
  const exact = new Set([...SAFE_HEADERS, ...extraSafe.map((h) => h.toLowerCase())]);
  const prefixes: string[] = [];
  for (const h of trustedHeaders) {
    const lower = h.toLowerCase();
    if (lower.endsWith('*')) prefixes.push(lower.slice(0, -1));
    else exact.add(lower);
  }
  const visible = (name: string): boolean => !ALWAYS_MASKED.has(name) && (exact.has(name) || prefixes.some((p) => name.startsWith(p)));
  // Header names repeat from request to request: remember each spelling's lower-case form and verdict
  // (bounded: past MAX_CACHED_NAMES spellings, new ones are worked out every time).
  const known = new Map<string, NameEntry>();
  const lookup = (raw: string): NameEntry => {
    let entry = known.get(raw);
    if (entry === undefined) {
      const lower = raw.toLowerCase();
      entry = { lower, visible: visible(lower), key: ODD_KEY.test(lower) ? null : `${jsonString(lower)}:` };
      if (known.size < MAX_CACHED_NAMES) known.set(raw, entry);
    }
    return entry;
  };
  const mask: HeaderMasker = (list) => {
    // No prototype: a header called `constructor` or `__proto__` is a field like any other.
    const out = Object.create(null) as Record<string, string | string[]>;
    for (let i = 0; i < list.length; i += 2) {
      const entry = lookup(list[i]!);
      const name = entry.lower;
      const value = entry.visible ? truncate(list[i + 1]!) : MASK;
      const prev = out[name];
      if (prev === undefined) out[name] = value;
      else if (Array.isArray(prev)) prev.push(value);
      else out[name] = [prev, value];
    }
    return out;
  };
  const entries = new Array<NameEntry>(MAX_JSON_FIELDS);
  mask.json = (list) => {
    const n = list.length >> 1;
    if (n === 0) return '{}';
    if (n > MAX_JSON_FIELDS) return null;
    let repeated = false;
    for (let k = 0; k < n; k++) {
      const entry = lookup(list[2 * k]!);
      if (entry.key === null) return null;
      for (let j = 0; j < k && !repeated; j++) if (entries[j]!.lower === entry.lower) repeated = true;
      entries[k] = entry;
    }
    let out = '{';
    for (let k = 0; k < n; k++) {
      const entry = entries[k]!;
      if (repeated) {
        // A name seen before was written with its first occurrence; a repeated name becomes an array
        // there, in order (as the object path does).
        let earlier = false;
        for (let j = 0; j < k && !earlier; j++) if (entries[j]!.lower === entry.lower) earlier = true;
        if (earlier) continue;
        let values: string | null = null;
        for (let j = k + 1; j < n; j++) {
          if (entries[j]!.lower !== entry.lower) continue;
          values = `${values ?? jsonValue(entry, list[2 * k + 1]!)},${jsonValue(entry, list[2 * j + 1]!)}`;
        }
        if (values !== null) {
          out += `${out.length > 1 ? ',' : ''}${entry.key!}[${values}]`;
          continue;
        }
      }
      out += `${out.length > 1 ? ',' : ''}${entry.key!}${jsonValue(entry, list[2 * k + 1]!)}`;
    }
    return `${out}}`;
  };
  return mask;
}

function jsonValue(entry: NameEntry, value: string): string {
  return entry.visible ? jsonString(truncate(value)) : MASKED_JSON;
}

const MASKED_JSON = JSON.stringify(MASK);

function truncate(v: string): string {
  return v.length > MAX_VALUE_CHARS ? v.slice(0, MAX_VALUE_CHARS) + '…' : v;
}

/**
 * The request target with every query value replaced by `***` (names kept), userinfo masked, fragment dropped. A query part
 * without `=` may be a bare token (`?s3cr3t`): it is masked whole.
 */
export function maskedPath(url: string): string {
  const hash = url.indexOf('#');
  // An absolute-form target may carry credentials (`http://user:pw@host/`): the userinfo becomes `***`.
  const target = maskUserinfo(hash >= 0 ? url.slice(0, hash) : url);
  const q = target.indexOf('?');
  if (q < 0) return truncate(target);
  const params = target
    .slice(q + 1)
    .split('&')
    .map((p) => {
      const eq = p.indexOf('=');
      return eq < 0 ? (p === '' ? p : MASK) : `${p.slice(0, eq)}=${MASK}`;
    });
  return truncate(`${target.slice(0, q)}?${params.join('&')}`);
}

export interface TrxRecordInput {
  txid: string;
  startedAt: number;
  elapsedMs: number;
  sessionId: string;
  type: 'HTTP' | 'WebSocket' | 'TCP';
  method: string;
  url: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  remoteIp: string | undefined;
  requestHeaders: HeaderList;
  responseHeaders: HeaderList;
  decryptedFields: number;
  error: string | undefined;
  /** A record standing for this many requests read ahead and never sent (itself and the ones after it). */
  abandonedRequests?: number | undefined;
  /** With abandonedRequests: how many of them came to each status and error code. */
  abandonedOutcomes?: AbandonedSummary['outcomes'] | undefined;
}

let isoAt = NaN;
let isoText = '';

/** `new Date(ms).toISOString()`, remembered for the last millisecond asked (records come in bursts). */
function isoTime(ms: number): string {
  if (ms !== isoAt) {
    isoAt = ms;
    isoText = new Date(ms).toISOString();
  }
  return isoText;
}

/** The record ENCRYPTION.md §4 describes, as one flat JSON object. */
export function trxRecord(input: TrxRecordInput, mask: HeaderMasker): Record<string, unknown> {
  let userAgent: string | undefined;
  for (let i = 0; i < input.requestHeaders.length; i += 2) {
    if (input.requestHeaders[i]!.toLowerCase() === 'user-agent') {
      userAgent = truncate(input.requestHeaders[i + 1]!);
      break;
    }
  }
  return {
    kind: 'trx',
    txid: input.txid,
    ts: isoTime(input.startedAt),
    session_id: input.sessionId,
    type: input.type,
    method: input.method,
    path: maskedPath(input.url),
    status: input.status,
    status_group: input.status === 0 ? 'none' : `${Math.floor(input.status / 100)}xx`,
    elapsed_ms: Math.round(input.elapsedMs * 1000) / 1000,
    bytes_in: input.bytesIn,
    bytes_out: input.bytesOut,
    remote_ip: input.remoteIp ?? null,
    user_agent: userAgent ?? null,
    decrypted_fields: input.decryptedFields,
    request_headers: mask(input.requestHeaders),
    response_headers: mask(input.responseHeaders),
    ...(input.error !== undefined ? { error: input.error } : {}),
    ...(input.abandonedRequests !== undefined ? { abandoned_requests: input.abandonedRequests } : {}),
    ...(input.abandonedOutcomes !== undefined ? { abandoned_outcomes: input.abandonedOutcomes.map((o) => ({ status: o.status, ...(o.error !== undefined ? { error: o.error } : {}), requests: o.requests })) } : {}),
  };
}

/** A JSON number as JSON.stringify writes it, or null for anything but a finite number. */
function jsonNumber(n: unknown): string | null {
  return typeof n === 'number' && Number.isFinite(n) ? String(n) : null;
}

/**
 * The record's line, exactly `recordLine(trxRecord(input, mask))`, written directly (no record object, no
 * JSON.stringify of the whole) when the masker can write its headers as JSON; else through the record.
 */
export function trxLine(input: TrxRecordInput, mask: HeaderMasker): string {
  const reqHeaders = mask.json?.(input.requestHeaders) ?? null;
  const resHeaders = reqHeaders === null ? null : (mask.json?.(input.responseHeaders) ?? null);
  const status = jsonNumber(input.status);
  const elapsed = jsonNumber(Math.round(input.elapsedMs * 1000) / 1000);
  const bytesIn = jsonNumber(input.bytesIn);
  const bytesOut = jsonNumber(input.bytesOut);
  const fields = jsonNumber(input.decryptedFields);
  const abandoned = input.abandonedRequests === undefined ? '' : jsonNumber(input.abandonedRequests);
  // A summary's outcomes (at most one record per connection close) take the record's way.
  if (resHeaders === null || reqHeaders === null || status === null || elapsed === null || bytesIn === null || bytesOut === null || fields === null || abandoned === null || input.abandonedOutcomes !== undefined) {
    return recordLine(trxRecord(input, mask));
  }
  let userAgent = 'null';
  const req = input.requestHeaders;
  for (let i = 0; i < req.length; i += 2) {
    if (req[i]!.toLowerCase() === 'user-agent') {
      userAgent = jsonString(truncate(req[i + 1]!));
      break;
    }
  }
  const group = input.status === 0 ? '"none"' : `"${Math.floor(input.status / 100)}xx"`;
  const remoteIp = input.remoteIp === undefined ? 'null' : jsonString(input.remoteIp);
  const error = input.error === undefined ? '' : `,"error":${jsonString(input.error)}`;
  const summary = abandoned === '' ? '' : `,"abandoned_requests":${abandoned}`;
  return (
    `{"level":"info","kind":"trx","txid":${jsonString(input.txid)},"ts":${jsonString(isoTime(input.startedAt))},` +
    `"session_id":${jsonString(input.sessionId)},"type":${jsonString(input.type)},"method":${jsonString(input.method)},` +
    `"path":${jsonString(maskedPath(input.url))},"status":${status},"status_group":${group},"elapsed_ms":${elapsed},` +
    `"bytes_in":${bytesIn},"bytes_out":${bytesOut},"remote_ip":${remoteIp},"user_agent":${userAgent},` +
    `"decrypted_fields":${fields},"request_headers":${reqHeaders},"response_headers":${resHeaders}${error}${summary}}\n`
  );
}

export interface TrxLogOptions {
  enabled: boolean;
  sink: LogSink;
  mask: HeaderMasker;
  /** Called if building or writing a record throws (a broken sink must not break requests). */
  onError?: (err: unknown) => void;
}

/** What the record of `ex` is made of (`endedAt`: performance.now() when it was over). */
function exchangeInput(ex: Exchange, endedAt: number): TrxRecordInput {
  // A record of its own carries no summary; one standing for others does (abandoned-records.ts).
  const summary = ex.abandoned !== undefined && ex.abandoned.requests > 1 ? ex.abandoned : undefined;
  const fields = typeof ex.decryptedFields === 'function' ? ex.decryptedFields() : ex.decryptedFields;
  return {
    txid: ex.requestId,
    startedAt: ex.startedAt,
    elapsedMs: endedAt - ex.started,
    sessionId: ex.conn.sessionId,
    type: ex.type,
    method: ex.req.method ?? '',
    url: ex.req.url ?? '',
    status: ex.sentStatus,
    bytesIn: ex.bytesIn,
    bytesOut: ex.bytesOut,
    remoteIp: ex.remoteIp,
    requestHeaders: ex.req.rawHeaders,
    responseHeaders: ex.sentHeaders,
    decryptedFields: fields,
    error: recordedError(ex),
    ...(summary === undefined ? {} : { abandonedRequests: summary.requests, abandonedOutcomes: summary.outcomes }),
  };
}

/** The record's error code: the exchange's, or CLIENT_GONE when nothing was sent. */
function recordedError(ex: Exchange): string | undefined {
  return ex.errorCode ?? (ex.sentStatus === 0 ? 'CLIENT_GONE' : undefined);
}

/** What the exchange's record says it came to (status and error): counted in a summary of abandoned requests. */
export function recordedOutcome(ex: Exchange): AbandonedOutcome {
  return { status: ex.sentStatus, error: recordedError(ex) };
}

/** The exchange's record (`endedAt`: performance.now() when it was over; default now). */
export function exchangeRecord(ex: Exchange, mask: HeaderMasker, endedAt = performance.now()): Record<string, unknown> {
  return trxRecord(exchangeInput(ex, endedAt), mask);
}

/** Writes the exchange's record (`endedAt`: performance.now() when it was over; default now). */
export function logExchange(ex: Exchange, opts: TrxLogOptions, endedAt = performance.now()): void {
  try {
    const sink = opts.sink;
    if (sink.writeLines !== undefined) sink.writeLines(trxLine(exchangeInput(ex, endedAt), opts.mask));
    else sink.write(exchangeRecord(ex, opts.mask, endedAt));
  } catch (err) {
    opts.onError?.(err);
  }
}

/**
 * Records are built and written after the exchange, in a batch per event-loop turn (setImmediate): the
 * serialization and the sink's write are off the path of the response, which is already on its way to the
 * client when the exchange ends, and a sink that writes to a file descriptor makes one write per batch
 * (LogSink.writeBatch / writeLines) instead of one per record. A sink with writeLines gets lines built
 * directly (trxLine): all of a batch in one call when it batches (has writeBatch), one line per call when
 * not. The elapsed time is taken when the exchange ends. Whoever closes the sink lets one setImmediate pass
 * first (immediates run in order), so no record is lost at shutdown.
 */
export function trxLogStage(opts: TrxLogOptions): Stage {
  if (!opts.enabled) return (_ex, next) => next();
  let queue: Exchange[] = [];
  let ends: number[] = [];
  const flush = (): void => {
    const batch = queue;
    const endedAt = ends;
    queue = [];
    ends = [];
    const sink = opts.sink;
    if (sink.writeBatch === undefined || batch.length === 1) {
      for (let i = 0; i < batch.length; i++) logExchange(batch[i]!, opts, endedAt[i]);
      return;
    }
    if (sink.writeLines !== undefined) {
      let lines = '';
      for (let i = 0; i < batch.length; i++) {
        try {
          lines += trxLine(exchangeInput(batch[i]!, endedAt[i]!), opts.mask);
        } catch (err) {
          opts.onError?.(err);
        }
      }
      try {
        sink.writeLines(lines);
      } catch (err) {
        opts.onError?.(err);
      }
      return;
    }
    const records: Record<string, unknown>[] = [];
    for (let i = 0; i < batch.length; i++) {
      try {
        records.push(exchangeRecord(batch[i]!, opts.mask, endedAt[i]));
      } catch (err) {
        opts.onError?.(err);
      }
    }
    try {
      sink.writeBatch.call(sink, records);
    } catch (err) {
      opts.onError?.(err);
    }
  };
  return (ex, next) => {
    ex.onDone(() => {
      if (queue.length === 0) setImmediate(flush);
      queue.push(ex);
      ends.push(performance.now());
    });
    return next();
  };
}

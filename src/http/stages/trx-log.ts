// Stage: transaction log (ENCRYPTION.md §4). One record per request, written when the exchange is over
// (response sent, failed, or the client gone), errors included. Header values are masked as `***` unless
// the header is in the safe allow-list or in `trusted_headers` (a trailing `*` makes a prefix);
// credentials (authorization, cookie, api-key, ...) are masked whatever the configuration says. Query
// values are masked in the path. Bodies are never logged.
import type { Exchange, Stage } from '../exchange.ts';
import type { HeaderList } from '../headers.ts';
import type { LogSink } from '../log-sink.ts';

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
const ALWAYS_MASKED = new Set(['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'api-key', 'x-api-key']);

const MASK = '***';
const MAX_CACHED_NAMES = 512;
const MAX_VALUE_CHARS = 512;

export interface HeaderMasker {
  (list: HeaderList): Record<string, string | string[]>;
}

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
  const known = new Map<string, { lower: string; visible: boolean }>();
  const lookup = (raw: string): { lower: string; visible: boolean } => {
    let entry = known.get(raw);
    if (entry === undefined) {
      const lower = raw.toLowerCase();
      entry = { lower, visible: visible(lower) };
      if (known.size < MAX_CACHED_NAMES) known.set(raw, entry);
    }
    return entry;
  };
  return (list) => {
    const out: Record<string, string | string[]> = {};
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
}

function truncate(v: string): string {
  return v.length > MAX_VALUE_CHARS ? v.slice(0, MAX_VALUE_CHARS) + '…' : v;
}

/** The request target with every query value replaced by `***` (names kept), fragment dropped. */
export function maskedPath(url: string): string {
  const hash = url.indexOf('#');
  const target = hash >= 0 ? url.slice(0, hash) : url;
  const q = target.indexOf('?');
  if (q < 0) return truncate(target);
  const params = target
    .slice(q + 1)
    .split('&')
    .map((p) => {
      const eq = p.indexOf('=');
      return eq < 0 ? p : `${p.slice(0, eq)}=${MASK}`;
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
  };
}

export interface TrxLogOptions {
  enabled: boolean;
  sink: LogSink;
  mask: HeaderMasker;
  /** Called if building or writing a record throws (a broken sink must not break requests). */
  onError?: (err: unknown) => void;
}

/** The exchange's record (`endedAt`: performance.now() when it was over; default now). */
export function exchangeRecord(ex: Exchange, mask: HeaderMasker, endedAt = performance.now()): Record<string, unknown> {
  const fields = typeof ex.decryptedFields === 'function' ? ex.decryptedFields() : ex.decryptedFields;
  return trxRecord(
    {
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
      error: ex.errorCode ?? (ex.sentStatus === 0 ? 'CLIENT_GONE' : undefined),
    },
    mask,
  );
}

/** Writes the exchange's record (`endedAt`: performance.now() when it was over; default now). */
export function logExchange(ex: Exchange, opts: TrxLogOptions, endedAt = performance.now()): void {
  try {
    opts.sink.write(exchangeRecord(ex, opts.mask, endedAt));
  } catch (err) {
    opts.onError?.(err);
  }
}

/**
 * Records are built and written after the exchange, in a batch per event-loop turn (setImmediate): the
 * serialization and the sink's write are off the path of the response, which is already on its way to the
 * client when the exchange ends, and a sink that writes to a file descriptor makes one write per batch
 * (LogSink.writeBatch) instead of one per record. The elapsed time is taken when the exchange ends. Whoever
 * closes the sink lets one setImmediate pass first (immediates run in order), so no record is lost at
 * shutdown.
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
    const writeBatch = opts.sink.writeBatch;
    if (writeBatch === undefined || batch.length === 1) {
      for (let i = 0; i < batch.length; i++) logExchange(batch[i]!, opts, endedAt[i]);
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
      writeBatch.call(opts.sink, records);
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

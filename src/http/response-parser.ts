// An incremental, strict parser for the app's HTTP/1.1 responses on the lean upstream path (app-client.ts).
// It implements the framing rules of RFC 9112 §6.3 for a client that sends one request at a time:
//   - no body for a response to HEAD and for 1xx, 204 and 304; interim 1xx responses are skipped (101 is an
//     error: the lean path never asks for an upgrade); after a response to HEAD, or a 204/304 declaring a body
//     (Content-Length > 0, Transfer-Encoding), `keepAlive` is false: a body sent anyway must not reach the
//     connection's next request;
//   - `Transfer-Encoding: chunked` (exactly that coding: another transfer coding could not be relayed, the
//     agent re-frames bodies) with chunk extensions ignored and trailers dropped;
//   - else one `Content-Length` of digits;
//   - else the body runs to the end of the connection.
// Refused as malformed (the client gets a 502 and the connection is not reused): a status line or header
// line outside the grammar (obs-fold, bare CR or LF, controls, whitespace before the colon), Transfer-Encoding
// with Content-Length, a repeated or non-numeric Content-Length, a head larger than `maxHeadBytes`, a chunk
// size line that is not hex. Values keep their bytes (latin1 strings,
// obs-text included), as undici hands them over.
import { HttpModeError } from './errors.ts';
import type { HeaderList } from './headers.ts';

export interface ResponseEvents {
  /** The final response's head (interim 1xx responses are not reported). */
  head(status: number, headers: HeaderList): void;
  /** A piece of the body (a view of the bytes fed in). */
  body(chunk: Buffer): void;
  /** The response is complete. */
  complete(): void;
}

/**
 * Name, colon, optional whitespace, value (obs-text allowed, no leading/trailing whitespace), optional whitespace.
 * The trailing whitespace belongs to the optional value group, so an empty value does not leave two adjacent
 * `[\t ]*` (which backtrack quadratically on a long run of blanks before a refused byte).
 */
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*(?:([\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)[\t ]*)?$/;
const DIGITS = /^[0-9]{1,15}$/;
/** Chunk size (hex, at most 12 digits: below 2^48), then optional extensions (ignored). */
const CHUNK_LINE = /^([0-9A-Fa-f]{1,12})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/;
const KEEP_ALIVE_TIMEOUT = /(?:^|[,;\s])timeout=(\d{1,9})/i;
const CRLF_CRLF = Buffer.from('\r\n\r\n', 'latin1');
/** Longest chunk-size line (with extensions) and the trailer section. */
const MAX_LINE_BYTES = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;

const enum State {
  Head,
  Length,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
  Done,
}

const bad = (what: string): HttpModeError => new HttpModeError('HTTP_APP_BAD_RESPONSE', 502, `the app sent a malformed response (${what})`);

export class ResponseParser {
  #state = State.Head;
  /** Bytes of an unfinished head or line, kept across execute() calls. */
  #pending: Buffer | null = null;
  #remaining = 0;
  #trailerBytes = 0;
  /** Whether any byte of a response was received. */
  started = false;
  /** The connection may carry another request after this response. */
  keepAlive = false;
  /** The app's `Keep-Alive: timeout=N`, in ms (null: none given). */
  keepAliveHintMs: number | null = null;
  readonly #noBody: boolean;
  readonly #maxHead: number;
  readonly #events: ResponseEvents;

  /** `isHead`: the request was HEAD (no body follows whatever the headers say). */
  constructor(isHead: boolean, maxHeadBytes: number, events: ResponseEvents) {
    this.#noBody = isHead;
    this.#maxHead = maxHeadBytes;
    this.#events = events;
  }

  get done(): boolean {
    return this.#state === State.Done;
  }

  /**
   * Feeds bytes from the connection; returns how many belong to the response (fewer than given = bytes
   * after its end, which the caller must treat as a broken connection). Throws an HttpModeError (502) on a
   * malformed response.
   */
  execute(chunk: Buffer): number {
    if (chunk.length > 0) this.started = true;
    let at = 0;
    while (at < chunk.length && this.#state !== State.Done) {
      switch (this.#state) {
        case State.Head:
          at = this.#head(chunk, at);
          break;
        case State.Length: {
          const n = Math.min(this.#remaining, chunk.length - at);
          this.#remaining -= n;
          this.#events.body(chunk.subarray(at, at + n));
          at += n;
          if (this.#remaining === 0) this.#complete();
          break;
        }
        case State.ChunkSize:
          at = this.#chunkSize(chunk, at);
          break;
        case State.ChunkData: {
          const n = Math.min(this.#remaining, chunk.length - at);
          this.#remaining -= n;
          this.#events.body(chunk.subarray(at, at + n));
          at += n;
          if (this.#remaining === 0) {
            this.#state = State.ChunkDataEnd;
            this.#remaining = 2;
          }
          break;
        }
        case State.ChunkDataEnd:
          // The CRLF after a chunk's data, possibly split across reads.
          if (chunk[at] !== (this.#remaining === 2 ? 0x0d : 0x0a)) throw bad('chunk data not followed by CRLF');
          at++;
          if (--this.#remaining === 0) this.#state = State.ChunkSize;
          break;
        case State.Trailers:
          at = this.#trailers(chunk, at);
          break;
        case State.UntilClose:
          this.#events.body(at === 0 ? chunk : chunk.subarray(at));
          at = chunk.length;
          break;
      }
    }
    return at;
  }

  /** The connection ended: completes a body delimited by the close; throws if the response is cut short. */
  finish(): void {
    if (this.#state === State.Done) return;
    if (this.#state === State.UntilClose) {
      this.#complete();
      return;
    }
    throw bad(this.started ? 'connection closed before the end of the response' : 'connection closed without a response');
  }

  #complete(): void {
    this.#state = State.Done;
    this.#events.complete();
  }

  /** Appends to the pending bytes (one unfinished head or line), bounded by `max`. */
  #hold(chunk: Buffer, at: number, max: number, what: string): void {
    const rest = chunk.subarray(at);
    const held = this.#pending === null ? Buffer.from(rest) : Buffer.concat([this.#pending, rest]);
    if (held.length > max) throw bad(what);
    this.#pending = held;
  }

  /**
   * Finds the end of a head or line (`sep`) in the pending bytes plus `chunk` from `at`. Returns the whole
   * text as a Buffer and the offset in `chunk` just past it, or null when more bytes are needed.
   */
  #take(chunk: Buffer, at: number, sep: Buffer, max: number, what: string): { text: Buffer; next: number } | null {
    if (this.#pending === null) {
      const end = chunk.indexOf(sep, at);
      if (end >= 0 && end - at <= max) return { text: chunk.subarray(at, end), next: end + sep.length };
      if (end >= 0) throw bad(what);
      this.#hold(chunk, at, max + sep.length, what);
      return null;
    }
    const prev = this.#pending.length;
    // The separator may straddle the two pieces: search from just before the join.
    const joined = Buffer.concat([this.#pending, chunk.subarray(at)]);
    const end = joined.indexOf(sep, Math.max(0, prev - sep.length + 1));
    if (end < 0) {
      if (joined.length > max + sep.length) throw bad(what);
      this.#pending = joined;
      return null;
    }
    if (end > max) throw bad(what);
    this.#pending = null;
    return { text: joined.subarray(0, end), next: at + (end + sep.length - prev) };
  }

  #head(chunk: Buffer, at: number): number {
    const found = this.#take(chunk, at, CRLF_CRLF, this.#maxHead, `head larger than ${this.#maxHead} bytes`);
    if (found === null) return chunk.length;
    const { status, http10, headers } = scanHead(found.text);
    let length: number | null = null;
    let chunked = false;
    let close = http10;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      switch (name.length) {
        case 10: {
          const lower = name.toLowerCase();
          if (lower === 'connection') {
            if (/(?:^|,)[\t ]*close[\t ]*(?:,|$)/i.test(value)) close = true;
          } else if (lower === 'keep-alive') {
            const t = KEEP_ALIVE_TIMEOUT.exec(value);
            if (t !== null) this.keepAliveHintMs = Number(t[1]) * 1000;
          }
          break;
        }
        case 14:
          if (name.toLowerCase() === 'content-length') {
            if (length !== null) throw bad('more than one Content-Length');
            if (!DIGITS.test(value)) throw bad('Content-Length');
            length = Number(value);
          }
          break;
        case 17:
          if (name.toLowerCase() === 'transfer-encoding') {
            if (chunked || http10 || value.toLowerCase() !== 'chunked') throw bad('a transfer coding other than chunked');
            chunked = true;
          }
          break;
        default:
          break;
      }
    }
    if (chunked && length !== null) throw bad('both Transfer-Encoding and Content-Length');
    if (status < 200) {
      if (status === 101) throw bad('101 Switching Protocols without an upgrade request');
      // An interim response: the final one follows on the same connection.
      this.keepAliveHintMs = null;
      return found.next;
    }
    this.keepAlive = !close;
    const noBody = this.#noBody || status === 204 || status === 304;
    // Complete at its head, yet the app may send a body anyway (HEAD handled as GET, a 204/304 with a length)
    // in a later read, which the next request on the connection would take for its answer: no reuse after
    // any response to HEAD, nor after a 204/304 that declares a body.
    if (noBody && (this.#noBody || chunked || (length !== null && length > 0))) this.keepAlive = false;
    this.#events.head(status, headers);
    if (noBody) this.#complete();
    else if (chunked) this.#state = State.ChunkSize;
    else if (length !== null) {
      this.#remaining = length;
      if (length === 0) this.#complete();
      else this.#state = State.Length;
    } else {
      this.keepAlive = false;
      this.#state = State.UntilClose;
    }
    return found.next;
  }

  #chunkSize(chunk: Buffer, at: number): number {
    const found = this.#take(chunk, at, CRLF_CRLF.subarray(0, 2), MAX_LINE_BYTES, 'chunk size line too long');
    if (found === null) return chunk.length;
    const m = CHUNK_LINE.exec(found.text.toString('latin1'));
    if (m === null) throw bad('chunk size line');
    const size = parseInt(m[1]!, 16);
    if (size === 0) {
      this.#state = State.Trailers;
      this.#trailerBytes = 0;
    } else {
      this.#state = State.ChunkData;
      this.#remaining = size;
    }
    return found.next;
  }

  /** Trailer lines up to the empty line; dropped (the agent does not relay trailers). */
  #trailers(chunk: Buffer, at: number): number {
    const found = this.#take(chunk, at, CRLF_CRLF.subarray(0, 2), MAX_TRAILER_BYTES - this.#trailerBytes, 'trailers too large');
    if (found === null) return chunk.length;
    if (found.text.length === 0) {
      this.#complete();
      return found.next;
    }
    if (HEADER_LINE.exec(found.text.toString('latin1')) === null) throw bad('trailer line');
    this.#trailerBytes += found.text.length + 2;
    return found.next;
  }
}

/** tchar (RFC 9110 §5.6.2): 1; else 0. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;
/** Bytes a field value or reason phrase may hold: HTAB, SP, VCHAR, obs-text. */
const VALUE_BYTE = new Uint8Array(256);
VALUE_BYTE[0x09] = 1;
for (let b = 0x20; b <= 0xff; b++) if (b !== 0x7f) VALUE_BYTE[b] = 1;
const HTTP_1_ = Buffer.from('HTTP/1.', 'latin1');

const isDigit = (b: number | undefined): boolean => b !== undefined && b >= 0x30 && b <= 0x39;

/**
 * The status line and header lines of a head (`text`: up to, not including, the blank line), scanned byte
 * by byte in one pass (no string of the whole head, no split, no match object per line):
 * `HTTP/1.0|1` SP 3DIGIT (first 1-9) [SP reason of HTAB/SP/VCHAR/obs-text], then lines of the HEADER_LINE
 * grammar, each after a CRLF. test/fuzz/response.fuzz.test.ts holds it to the regular-expression form.
 */
function scanHead(text: Buffer): { status: number; http10: boolean; headers: HeaderList } {
  const n = text.length;
  if (n < 12 || text.compare(HTTP_1_, 0, 7, 0, 7) !== 0) throw bad('status line');
  const minor = text[7];
  const d0 = text[9]!;
  if ((minor !== 0x30 && minor !== 0x31) || text[8] !== 0x20 || d0 < 0x31 || d0 > 0x39 || !isDigit(text[10]) || !isDigit(text[11])) throw bad('status line');
  const status = (d0 - 0x30) * 100 + (text[10]! - 0x30) * 10 + (text[11]! - 0x30);
  let i = 12;
  if (i < n && text[i] !== 0x0d) {
    if (text[i] !== 0x20) throw bad('status line');
    for (i++; i < n && text[i] !== 0x0d; i++) if (VALUE_BYTE[text[i]!] === 0) throw bad('status line');
  }
  const headers: HeaderList = [];
  // Each header line starts after a CRLF.
  while (i < n) {
    if (text[i + 1] !== 0x0a) throw bad('header line');
    i += 2;
    const nameStart = i;
    while (i < n && TCHAR[text[i]!] === 1) i++;
    if (i === nameStart || i >= n || text[i] !== 0x3a) throw bad('header line');
    const name = text.toString('latin1', nameStart, i);
    i++;
    while (i < n && (text[i] === 0x20 || text[i] === 0x09)) i++;
    const valueStart = i;
    let valueEnd = i;
    for (; i < n; i++) {
      const b = text[i]!;
      if (b === 0x0d) break;
      if (VALUE_BYTE[b] === 0) throw bad('header line');
      if (b !== 0x20 && b !== 0x09) valueEnd = i + 1;
    }
    headers.push(name, text.toString('latin1', valueStart, valueEnd));
  }
  return { status, http10: minor === 0x30, headers };
}

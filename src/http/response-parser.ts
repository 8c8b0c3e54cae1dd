// An incremental, strict parser for the app's HTTP/1.1 responses on the lean upstream path (app-client.ts).
// It implements the framing rules of RFC 9112 §6.3 for a client that sends one request at a time:
//   - no body for a response to HEAD and for 1xx, 204 and 304; interim 1xx responses are skipped (101 is an
//     error: the lean path never asks for an upgrade);
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

const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?$/;
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
    const lines = found.text.toString('latin1').split('\r\n');
    const m = STATUS_LINE.exec(lines[0]!);
    if (m === null) throw bad('status line');
    const status = Number(m[2]);
    const http10 = m[1] === '0';
    const headers: HeaderList = new Array<string>((lines.length - 1) * 2);
    let length: number | null = null;
    let chunked = false;
    let close = http10;
    for (let i = 1; i < lines.length; i++) {
      const h = HEADER_LINE.exec(lines[i]!);
      if (h === null) throw bad('header line');
      const name = h[1]!;
      const value = h[2] ?? '';
      headers[2 * i - 2] = name;
      headers[2 * i - 1] = value;
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
    this.#events.head(status, headers);
    if (this.#noBody || status === 204 || status === 304) this.#complete();
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

// HTTP/1.1 on the client side of the tunnel. Browser-safe.
//
// Requests are serialised exactly like the Enclavia reference client does (WIRE.md §7):
//   `METHOD path HTTP/1.1` CRLF
//   `Host: <url host>` first, unless the caller gave a Host header
//   the caller's headers, in the caller's order and spelling
//   `Connection: close`, unless the caller gave a Connection header (not added for upgrades)
//   `Content-Length: n` when a body is set and the caller gave no Content-Length
//   CRLF, then the raw body.
// Where the reference client trusts its input, we refuse what would let a value escape its field: CR/LF/NUL in
// a header, whitespace in the method or path, a caller Content-Length that contradicts the body.
//
// Responses: an incremental head parser (≤ 64 headers, ≤ 64 KiB, like the reference's httparse buffer) and a body
// decoder for the three framings a stream-delivered response can use (Content-Length, chunked, until EOF).
import { utf8 } from '../util/bytes.ts';
import { textShape } from '../util/text-shape.ts';
import { ClientError } from './errors.ts';

export type HeaderList = [name: string, value: string][];

export const MAX_RESPONSE_HEADERS = 64;
export const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;
/** Longest chunk-size line (size + extensions) and trailer section we accept. */
const MAX_CHUNK_LINE = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\r\n\0]/;
/** A character past U+00FF (not one byte). */
const NOT_BYTE = /[\u0100-\u{10ffff}]/u;
// eslint-disable-next-line no-control-regex
const BAD_TARGET = /[\x00-\x20\x7f]/;

function bad(message: string): ClientError {
  return new ClientError('CLIENT_BAD_OPTIONS', message);
}

function protocol(message: string): ClientError {
  return new ClientError('CLIENT_PROTOCOL', message);
}

function hasHeader(headers: HeaderList, lower: string): boolean {
  return headers.some(([k]) => k.toLowerCase() === lower);
}

export function headerValues(headers: HeaderList, lower: string): string[] {
  return headers.filter(([k]) => k.toLowerCase() === lower).map(([, v]) => v);
}

export interface RequestHeadInput {
  method: string;
  /** The request target as sent: "/path?query" (origin form) or "*". */
  path: string;
  /** The URL's host (no port: the reference client sends `host_str()`). */
  host: string;
  headers: HeaderList;
  /**
   * The body: its length (Content-Length is added unless given), 'chunked' (Transfer-Encoding: chunked is added
   * unless the caller framed it), or undefined for no body.
   */
  body?: number | 'chunked';
  /** Add `Connection: close` unless the caller gave a Connection header. Default true; false for upgrade(). */
  connectionClose?: boolean;
}

export function checkMethod(method: string): void {
  if (typeof method !== 'string' || !TOKEN.test(method)) throw bad(`method: expected an HTTP token, found ${JSON.stringify(String(method)).slice(0, 40)}`);
}

export function checkPath(path: string): void {
  if (typeof path !== 'string' || path.length === 0) throw bad('path: expected a non-empty request target');
  if (BAD_TARGET.test(path)) throw bad('path: must not contain whitespace or control characters (percent-encode them)');
  // Not quoted: a path may carry a token.
  if (path[0] !== '/' && path !== '*') throw bad(`path: expected a target starting with "/", found ${textShape(path)}`);
}

export function checkHeader(name: string, value: string): void {
  if (typeof name !== 'string' || !TOKEN.test(name)) throw bad(`header name: expected an HTTP token, found ${JSON.stringify(String(name)).slice(0, 40)}`);
  if (typeof value !== 'string' || BAD_VALUE.test(value)) throw bad(`header ${name}: value must be text without CR, LF or NUL`);
  // A ByteString, as fetch's Headers (and the https:// path, undici) take it: one byte per character.
  if (NOT_BYTE.test(value)) throw bad(`header ${name}: value must be a byte string (characters up to U+00FF, one byte each, as in fetch)`);
}

/** The header list the request goes out with (Host, Connection, framing added as the reference client does). */
export function requestHeaders(input: RequestHeadInput): HeaderList {
  checkMethod(input.method);
  checkPath(input.path);
  const headers: HeaderList = [];
  for (const [k, v] of input.headers) {
    checkHeader(k, v);
    headers.push([k, v]);
  }
  if (!hasHeader(headers, 'host')) headers.unshift(['Host', input.host]);
  if (input.connectionClose !== false && !hasHeader(headers, 'connection')) headers.push(['Connection', 'close']);
  const body = input.body;
  if (typeof body === 'number') {
    const given = headerValues(headers, 'content-length');
    if (given.length > 0) {
      if (given.some((v) => v.trim() !== String(body))) {
        throw bad(`Content-Length ${JSON.stringify(given.join(', '))} contradicts the body of ${body} bytes`);
      }
    } else if (!hasHeader(headers, 'transfer-encoding')) {
      headers.push(['Content-Length', String(body)]);
    }
  } else if (body === 'chunked') {
    if (!hasHeader(headers, 'content-length') && !hasHeader(headers, 'transfer-encoding')) headers.push(['Transfer-Encoding', 'chunked']);
  }
  return headers;
}

/** The request head bytes, up to and including the blank line. */
export function encodeRequestHead(input: RequestHeadInput): Uint8Array {
  const headers = requestHeaders(input);
  // The request line in UTF-8 (a raw non-ASCII path, as browsers and curl send it); header values are byte
  // strings, one byte per character (latin1), as the response head is read and as undici writes them.
  const line = utf8.encode(`${input.method} ${input.path} HTTP/1.1\r\n`);
  let text = '';
  for (const [k, v] of headers) text += `${k}: ${v}\r\n`;
  text += '\r\n';
  const out = new Uint8Array(line.length + text.length);
  out.set(line, 0);
  for (let i = 0; i < text.length; i++) out[line.length + i] = text.charCodeAt(i);
  return out;
}

/** Whether a request with these headers frames its own body with chunked encoding (the caller wrote the chunks). */
export function callerFramesChunked(headers: HeaderList): boolean {
  return hasHeader(headers, 'transfer-encoding');
}

/** One chunk of a chunked body: `hex(len) CRLF data CRLF`. */
export function encodeChunk(data: Uint8Array): Uint8Array {
  const size = utf8.encode(`${data.length.toString(16)}\r\n`);
  const out = new Uint8Array(size.length + data.length + 2);
  out.set(size, 0);
  out.set(data, size.length);
  out[out.length - 2] = 13;
  out[out.length - 1] = 10;
  return out;
}

export const LAST_CHUNK = utf8.encode('0\r\n\r\n');

// ---------------------------------------------------------------------------------------------------------
// Responses

export interface ResponseHead {
  status: number;
  statusText: string;
  /** "HTTP/1.1" or "HTTP/1.0". */
  version: string;
  headers: HeaderList;
  /** Bytes of the head, blank line included. */
  headLength: number;
}

function latin1(bytes: Uint8Array, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end; i += 8192) s += String.fromCharCode(...bytes.subarray(i, Math.min(end, i + 8192)));
  return s;
}

/** Index just past the blank line ending the head (CRLFCRLF, or bare LFs as httparse accepts), or -1. */
function headEnd(b: Uint8Array, from: number): number {
  for (let i = Math.max(0, from); i < b.length; i++) {
    if (b[i] !== 10) continue;
    if (b[i + 1] === 10) return i + 2;
    if (b[i + 1] === 13 && b[i + 2] === 10) return i + 3;
  }
  return -1;
}

/** Parses a complete head `b[0, end)`. Throws CLIENT_PROTOCOL on anything malformed. */
function parseHead(b: Uint8Array, end: number): ResponseHead {
  const lines = latin1(b, 0, end).split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const statusLine = lines.shift() ?? '';
  const m = /^(HTTP\/1\.[01]) (\d{3})(?: ([^\0\r\n]*))?$/.exec(statusLine);
  // Errors name the fault, lengths and positions only: these are the app's decrypted bytes, and the message is
  // logged by callers, printed by the CLI and sent in the proxy's 502 body.
  if (m === null) throw protocol(`response: expected a status line "HTTP/1.x NNN reason"; the first line (${statusLine.length} bytes) is not one`);
  if (lines.length > MAX_RESPONSE_HEADERS) throw protocol(`response: more than ${MAX_RESPONSE_HEADERS} headers (${lines.length})`);
  const headers: HeaderList = [];
  for (const [i, line] of lines.entries()) {
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon) : '';
    if (!TOKEN.test(name)) {
      const why = line[0] === ' ' || line[0] === '\t' ? 'obsolete line folding' : colon < 0 ? 'no colon' : 'the name is not an HTTP token';
      throw protocol(`response: malformed header line ${i + 1} (${line.length} bytes: ${why})`);
    }
    const value = trimOws(line, colon + 1);
    if (value.includes('\0')) throw protocol(`response: header line ${i + 1} contains NUL`);
    if (value.includes('\r')) throw protocol(`response: header line ${i + 1} contains a bare CR`); // fetch's Headers would quote it
    headers.push([name, value]);
  }
  return { version: m[1]!, status: Number(m[2]), statusText: m[3] ?? '', headers, headLength: end };
}

/**
 * `line` from `start` without leading and trailing SP/HTAB. By index, not `/[ \t]+$/`: that pattern retries at
 * every blank of a long run that does not end the line (quadratic: seconds for a 40 KB header value).
 */
function trimOws(line: string, start: number): string {
  let a = start;
  let b = line.length;
  while (a < b && (line.charCodeAt(a) === 0x20 || line.charCodeAt(a) === 0x09)) a++;
  while (b > a && (line.charCodeAt(b - 1) === 0x20 || line.charCodeAt(b - 1) === 0x09)) b--;
  return line.slice(a, b);
}

/**
 * Accumulates response bytes until one complete head is there. `push()` returns the head and the bytes after
 * it once complete, else null. Interim 1xx heads (other than 101) are skipped when `skipInterim` is set.
 */
export class HeadParser {
  #buf: Uint8Array = new Uint8Array(0);
  #scanned = 0;
  /** Bytes of interim heads already skipped: they count toward the limit, so an endless run of 1xx is refused. */
  #skipped = 0;
  readonly #skipInterim: boolean;
  readonly #maxBytes: number;

  constructor(opts: { skipInterim?: boolean; maxBytes?: number } = {}) {
    this.#skipInterim = opts.skipInterim ?? true;
    this.#maxBytes = opts.maxBytes ?? MAX_RESPONSE_HEAD_BYTES;
  }

  push(chunk: Uint8Array): { head: ResponseHead; rest: Uint8Array } | null {
    if (chunk.length > 0) {
      const next = new Uint8Array(this.#buf.length + chunk.length);
      next.set(this.#buf, 0);
      next.set(chunk, this.#buf.length);
      this.#buf = next;
    }
    for (;;) {
      const end = headEnd(this.#buf, this.#scanned - 2);
      if (end < 0) {
        if (this.#skipped + this.#buf.length > this.#maxBytes) throw protocol(`response head exceeds ${this.#maxBytes} bytes`);
        this.#scanned = this.#buf.length;
        return null;
      }
      if (this.#skipped + end > this.#maxBytes) throw protocol(`response head exceeds ${this.#maxBytes} bytes`);
      const head = parseHead(this.#buf, end);
      const rest = this.#buf.subarray(end);
      if (this.#skipInterim && head.status >= 100 && head.status < 200 && head.status !== 101) {
        this.#skipped += end;
        this.#buf = rest; // a view: copying the rest for every interim head was quadratic in the reply
        this.#scanned = 0;
        continue;
      }
      this.#buf = new Uint8Array(0);
      return { head, rest };
    }
  }

  /** Bytes buffered without a complete head. */
  get buffered(): number {
    return this.#buf.length;
  }
}

export type BodyFraming = { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' } | { kind: 'eof' };

/** How the body of `head` is delimited (RFC 9112 §6.3), for a request with `method`. */
export function bodyFraming(head: ResponseHead, method: string): BodyFraming {
  const s = head.status;
  if (method.toUpperCase() === 'HEAD' || (s >= 100 && s < 200) || s === 204 || s === 304) return { kind: 'none' };
  const te = headerValues(head.headers, 'transfer-encoding');
  if (te.length > 0) {
    const codings = te.join(',').split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '');
    return codings[codings.length - 1] === 'chunked' ? { kind: 'chunked' } : { kind: 'eof' };
  }
  const cl = headerValues(head.headers, 'content-length');
  if (cl.length > 0) {
    const values = new Set(cl.join(',').split(',').map((v) => v.trim()));
    const [only] = [...values];
    if (values.size !== 1 || only === undefined || !/^\d{1,15}$/.test(only)) {
      throw protocol(`response: invalid Content-Length (${values.size === 1 ? 'not a decimal length of at most 15 digits' : `${values.size} different values`})`);
    }
    return { kind: 'length', length: Number(only) };
  }
  return { kind: 'eof' };
}

type ChunkState = 'size' | 'data' | 'data-crlf' | 'trailers' | 'done';

/**
 * Decodes a body with the given framing. `push()` returns the body bytes contained in `chunk` (views, in
 * order); `done` turns true at the end of a length/chunked body (bytes after it are ignored and counted in
 * `excess`). `end()` is the end of the byte stream: throws CLIENT_PROTOCOL when the body is incomplete.
 */
export class BodyDecoder {
  readonly framing: BodyFraming;
  #remaining: number;
  #state: ChunkState = 'size';
  #line = '';
  /** Chunk-size lines read so far (errors name the chunk, never its bytes). */
  #chunks = 0;
  #trailerBytes = 0;
  #done: boolean;
  excess = 0;

  constructor(framing: BodyFraming) {
    this.framing = framing;
    this.#remaining = framing.kind === 'length' ? framing.length : 0;
    this.#done = framing.kind === 'none' || (framing.kind === 'length' && framing.length === 0);
  }

  get done(): boolean {
    return this.#done;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.#done) {
      this.excess += chunk.length;
      return [];
    }
    switch (this.framing.kind) {
      case 'eof':
        return chunk.length > 0 ? [chunk] : [];
      case 'length': {
        const take = Math.min(this.#remaining, chunk.length);
        this.#remaining -= take;
        if (this.#remaining === 0) {
          this.#done = true;
          this.excess += chunk.length - take;
        }
        return take > 0 ? [chunk.subarray(0, take)] : [];
      }
      case 'chunked':
        return this.#chunked(chunk);
      default:
        return [];
    }
  }

  end(): void {
    if (this.#done || this.framing.kind === 'eof') {
      this.#done = true;
      return;
    }
    if (this.framing.kind === 'length') throw protocol(`response body ended after ${this.framing.length - this.#remaining} of ${this.framing.length} bytes (Content-Length)`);
    throw protocol('response body ended inside its chunked encoding');
  }

  #chunked(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let i = 0;
    while (i < chunk.length && !this.#done) {
      switch (this.#state) {
        case 'size':
        case 'trailers': {
          const lf = chunk.indexOf(10, i);
          const end = lf < 0 ? chunk.length : lf;
          this.#line += latin1(chunk, i, end);
          if (this.#state === 'trailers') this.#trailerBytes += end - i + (lf < 0 ? 0 : 1);
          if (this.#line.length > MAX_CHUNK_LINE || this.#trailerBytes > MAX_TRAILER_BYTES) throw protocol('response: chunk-size line or trailers too long');
          i = lf < 0 ? chunk.length : lf + 1;
          if (lf < 0) break;
          const line = this.#line.endsWith('\r') ? this.#line.slice(0, -1) : this.#line;
          this.#line = '';
          if (this.#state === 'trailers') {
            if (line === '') {
              this.#done = true;
              this.excess += chunk.length - i;
            }
            break;
          }
          const m = /^([0-9A-Fa-f]{1,12})[ \t]*(?:;.*)?$/.exec(line);
          this.#chunks++;
          if (m === null) throw protocol(`response: invalid chunk-size line (${line.length} bytes) for chunk ${this.#chunks}`);
          const size = parseInt(m[1]!, 16);
          if (size === 0) this.#state = 'trailers';
          else {
            this.#remaining = size;
            this.#state = 'data';
          }
          break;
        }
        case 'data': {
          const take = Math.min(this.#remaining, chunk.length - i);
          out.push(chunk.subarray(i, i + take));
          i += take;
          this.#remaining -= take;
          if (this.#remaining === 0) this.#state = 'data-crlf';
          break;
        }
        case 'data-crlf': {
          // CRLF (or a bare LF) after the chunk data.
          const c = chunk[i]!;
          if (c === 13 && this.#line === '') {
            this.#line = '\r';
            i++;
          } else if (c === 10) {
            this.#line = '';
            this.#state = 'size';
            i++;
          } else throw protocol('response: missing CRLF after chunk data');
          break;
        }
        default:
          i = chunk.length;
      }
    }
    return out;
  }
}

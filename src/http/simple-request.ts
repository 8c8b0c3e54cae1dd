// The fast path for one-shot `Data` requests. A Data message carries one complete HTTP request and the
// session ends the connection right after writing it, so for the common case there is nothing for an
// http.Server to do but parse one head: this file takes those requests past the in-process server (no
// duplex pair, no per-connection parser, IncomingMessage or ServerResponse) and runs them through the same
// stages with a small response writer.
//
// Only requests that are plainly simple take it. `parseSimpleRequest` accepts a strict subset of what Node's
// parser accepts, and answers null — "let the http.Server decide" — for anything else:
//   - request line `METHOD SP /origin-form SP HTTP/1.1` with a common method and a target of visible ASCII;
//   - header lines `token ":" OWS value OWS`, value bytes HTAB / SP / VCHAR only (no obs-text, no obs-fold,
//     no bare CR or LF anywhere), at most MAX_FAST_HEADERS of them, the head no larger than the server's cap;
//   - exactly one Host; no Transfer-Encoding or Upgrade; no Expect but a single `100-continue` (the body is
//     all there: the expectation is met without an interim 100, which would start the Data reply, and the
//     field is not forwarded); at most one Content-Length of plain digits, and exactly that many bytes after
//     the head (nothing pipelined, nothing missing);
//   - not under /.well-known/ (the agent's own endpoints stay on the full path).
// Everything refused here (smuggling attempts, malformed or unusual heads, pipelined requests, chunked
// bodies, upgrades, HTTP/1.0) goes to the http.Server exactly as before, which gives its own answer (400 and
// a closed connection for a malformed request). So the fast path never accepts something the server would
// refuse, and never decides what a malformed request means.
// The keep-alive fast path (keep-alive-connection.ts, TLS ingress) reads heads with the same `parseSimpleHead`,
// with its own rules for the body, `Expect` and /.well-known/ (see there).
import type { IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import type { RequestHead } from './exchange.ts';

/** More header lines than this → the full path. */
export const MAX_FAST_HEADERS = 64;

export const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');
const REQUEST_LINE = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (\/[\x21-\x7e]*) HTTP\/1\.1$/;
/**
 * Name, colon, optional whitespace, value (no leading/trailing whitespace), optional whitespace. The trailing
 * whitespace sits inside the optional value group: two adjacent `[\t ]*` around an empty value backtrack
 * quadratically on a long run of blanks before a refused byte (16 KiB of spaces cost ~0.4 s per request).
 */
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*(?:([\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)[\t ]*)?$/;
/** Any byte outside HTAB, CR, LF, SP..~ (controls, DEL, obs-text). */
const UNUSUAL_BYTE = /[^\t\r\n\x20-\x7e]/;
/** A Content-Length the fast path takes: no sign, no leading zeros, at most 15 digits. */
const DIGITS = /^(?:0|[1-9][0-9]{0,14})$/;

export interface SimpleRequest {
  method: string;
  url: string;
  rawHeaders: string[];
  /** Declared body length (null: no Content-Length header). */
  contentLength: number | null;
  /** The body bytes (exactly contentLength of them), or null when there is none. */
  body: Buffer | null;
}

/** The head of a plainly simple request (see the file comment), as parseSimpleHead reads it. */
export interface SimpleHead {
  method: string;
  url: string;
  rawHeaders: string[];
  /** Declared body length (null: no Content-Length header). */
  contentLength: number | null;
  /** The request carries `Expect: 100-continue` (its only accepted expectation). */
  expectContinue: boolean;
  /** Where the body starts in the buffer (just past the head's CRLFCRLF). */
  bodyStart: number;
}

/**
 * The head at the start of `bytes`, which ends at `end` (the index of its CRLFCRLF), if it is plainly simple
 * (see the file comment: request line, header grammar, one Host, no Transfer-Encoding or Upgrade, at most one
 * plain Content-Length, no Expect but `100-continue`); else null. The caller checks the size cap and the body,
 * and decides about `/.well-known` and `Expect` (a Data request refuses both; a keep-alive connection serves
 * the agent's endpoints like any request and leaves a client that waits for a 100 to the server).
 */
export function parseSimpleHead(bytes: Buffer, end: number): SimpleHead | null {
  const head = bytes.toString('latin1', 0, end);
  if (UNUSUAL_BYTE.test(head)) return null;
  const lines = head.split('\r\n');
  if (lines.length - 1 > MAX_FAST_HEADERS) return null;
  const first = REQUEST_LINE.exec(lines[0]!);
  if (first === null) return null;
  const rawHeaders: string[] = new Array<string>((lines.length - 1) * 2);
  let hosts = 0;
  let expects = 0;
  let contentLength: number | null = null;
  for (let i = 1; i < lines.length; i++) {
    // A bare CR or LF left inside a line fails the pattern (neither is in its character classes).
    const m = HEADER_LINE.exec(lines[i]!);
    if (m === null) return null;
    const name = m[1]!;
    const value = m[2] ?? '';
    rawHeaders[2 * i - 2] = name;
    rawHeaders[2 * i - 1] = value;
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host') hosts++;
        break;
      case 6:
        if (name.toLowerCase() === 'expect' && (++expects > 1 || value.toLowerCase() !== '100-continue')) return null;
        break;
      case 7:
        if (name.toLowerCase() === 'upgrade') return null;
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          if (contentLength !== null || !DIGITS.test(value)) return null;
          contentLength = Number(value);
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') return null;
        break;
      default:
        break;
    }
  }
  if (hosts !== 1) return null;
  return { method: first[1]!, url: first[2]!, rawHeaders, contentLength, expectContinue: expects > 0, bodyStart: end + HEAD_END.length };
}

/**
 * The request in `bytes` if it is one plainly simple HTTP/1.1 request (see the file comment), else null.
 * `maxHeadBytes` is the server's head cap: a larger head is left to the server (431).
 */
export function parseSimpleRequest(bytes: Buffer, maxHeadBytes: number): SimpleRequest | null {
  const end = bytes.indexOf(HEAD_END);
  if (end < 0 || end + HEAD_END.length > maxHeadBytes) return null;
  const head = parseSimpleHead(bytes, end);
  if (head === null || head.url.startsWith('/.well-known')) return null;
  const { contentLength, bodyStart } = head;
  if (bytes.length - bodyStart !== (contentLength ?? 0)) return null;
  return {
    method: head.method,
    url: head.url,
    rawHeaders: head.rawHeaders,
    contentLength,
    body: contentLength !== null && contentLength > 0 ? bytes.subarray(bodyStart) : null,
  };
}

/** The request as the stages see it on the fast path. */
export class FastRequest implements RequestHead {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly complete = true;
  #headers: IncomingHttpHeaders | null = null;

  constructor(r: Pick<SimpleRequest, 'method' | 'url' | 'rawHeaders'>) {
    this.method = r.method;
    this.url = r.url;
    this.rawHeaders = r.rawHeaders;
  }

  /** Lower-cased names, repeated fields joined with ", " (set-cookie as a list), built on first use. */
  get headers(): IncomingHttpHeaders {
    if (this.#headers !== null) return this.#headers;
    const out: Record<string, string | string[]> = {};
    for (let i = 0; i < this.rawHeaders.length; i += 2) {
      const name = this.rawHeaders[i]!.toLowerCase();
      const value = this.rawHeaders[i + 1]!;
      const prev = out[name];
      if (name === 'set-cookie') out[name] = prev === undefined ? [value] : [...(prev as string[]), value];
      else out[name] = prev === undefined ? value : `${prev as string}, ${value}`;
    }
    this.#headers = out as IncomingHttpHeaders;
    return this.#headers;
  }
}

/**
 * A request body already in memory, as a Readable for the stages that read bodies; the forward stage sends
 * `buffer` directly when nothing read it (`takeBuffer()`). `onConsumed` learns the byte count once, either way.
 */
export class BufferBody extends Readable {
  readonly buffer: Buffer;
  #taken = false;
  readonly #onConsumed: (bytes: number) => void;

  constructor(buffer: Buffer, onConsumed: (bytes: number) => void) {
    super();
    this.buffer = buffer;
    this.#onConsumed = onConsumed;
  }

  /** The bytes, if no one has started reading the stream (then the stream is spent); else null. */
  takeBuffer(): Buffer | null {
    if (this.#taken || this.readableDidRead) return null;
    this.#taken = true;
    this.#onConsumed(this.buffer.length);
    this.push(null);
    return this.buffer;
  }

  override _read(): void {
    if (!this.#taken) {
      this.#taken = true;
      this.#onConsumed(this.buffer.length);
      this.push(this.buffer);
    }
    this.push(null);
  }
}

// The head of a response the agent writes itself (the fast paths: data-response.ts for one-shot Data
// requests, keep-alive-response.ts for keep-alive connections) — what a ServerResponse would send: the status
// line, the headers as given (validated as Node validates them), a Date unless present, the connection's fate
// in one `Connection` field, and chunked framing when there is a body without a Content-Length.
import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type { HeaderList } from './headers.ts';

let dateCache = '';
let dateSecond = -1;

/** The IMF-fixdate for now, computed once a second (as Node's server does for its Date header). */
export function utcDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateCache = new Date(now).toUTCString();
  }
  return dateCache;
}

export interface ResponseHead {
  /** The head, CRLFCRLF included (latin1). */
  text: string;
  /** No body goes with it (HEAD, 1xx, 204, 304): body bytes are dropped. */
  noBody: boolean;
  /** The body is sent chunked (no Content-Length given). */
  chunked: boolean;
  /** The connection closes after this response (`close` asked for, or a `Connection: close` in `headers`). */
  close: boolean;
}

/**
 * Builds the head for `status` and `headers`. Connection fields in `headers` are not copied: one is written
 * from `close` (or from a `close` token among them — the agent's own error answers ask for it that way).
 * Throws on a name or value Node would refuse, and on a Transfer-Encoding (the agent frames the body).
 */
export function buildResponseHead(status: number, headers: HeaderList, isHeadRequest: boolean, close: boolean): ResponseHead {
  if (!Number.isInteger(status) || status < 100 || status > 999) throw new RangeError(`status: expected 100..999, found ${status}`);
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'unknown'}\r\n`;
  let hasDate = false;
  let hasLength = false;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    validateHeaderName(name);
    validateHeaderValue(name, value);
    const n = name.length;
    if (n === 4 || n === 10 || n === 14 || n === 17) {
      const lower = name.toLowerCase();
      if (lower === 'date') hasDate = true;
      else if (lower === 'connection') {
        if (/(?:^|,)[\t ]*close[\t ]*(?:,|$)/i.test(value)) close = true;
        continue;
      } else if (lower === 'content-length') hasLength = true;
      else if (lower === 'transfer-encoding') throw new Error('transfer-encoding is set by the agent');
    }
    head += `${name}: ${value}\r\n`;
  }
  const noBody = isHeadRequest || status === 204 || status === 304 || status < 200;
  if (!hasDate) head += `Date: ${utcDate()}\r\n`;
  if (close) head += 'Connection: close\r\n';
  const chunked = !noBody && !hasLength;
  if (chunked) head += 'Transfer-Encoding: chunked\r\n';
  return { text: head + '\r\n', noBody, chunked, close };
}

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ResponseParser } from '../../src/http/response-parser.ts';
import { HttpModeError } from '../../src/http/errors.ts';
import type { HeaderList } from '../../src/http/headers.ts';

/** What a parser reported for one response, fed in the given pieces. */
interface Outcome {
  heads: { status: number; headers: HeaderList }[];
  body: Buffer;
  completes: number;
  /** Sum of execute()'s return values. */
  consumed: number;
  /** Order of the events: 'head', 'body', 'complete'. */
  order: string[];
  keepAlive: boolean;
  keepAliveHintMs: number | null;
  done: boolean;
}

function feed(pieces: Buffer[], opts: { isHead?: boolean; maxHead?: number; finish?: boolean } = {}): Outcome {
  const heads: Outcome['heads'] = [];
  const body: Buffer[] = [];
  const order: string[] = [];
  let completes = 0;
  const parser = new ResponseParser(opts.isHead ?? false, opts.maxHead ?? 16 * 1024, {
    head(status, headers) {
      order.push('head');
      heads.push({ status, headers: [...headers] });
    },
    body(chunk) {
      if (completes > 0) throw new Error('body after complete');
      order.push('body');
      body.push(Buffer.from(chunk));
    },
    complete() {
      order.push('complete');
      completes++;
    },
  });
  let consumed = 0;
  for (const p of pieces) consumed += parser.execute(p);
  if (opts.finish === true) parser.finish();
  // Body pieces are merged: how they are cut depends on how the bytes arrived.
  const merged = order.filter((e, i) => !(e === 'body' && order[i - 1] === 'body'));
  return { heads, body: Buffer.concat(body), completes, consumed, order: merged, keepAlive: parser.keepAlive, keepAliveHintMs: parser.keepAliveHintMs, done: parser.done };
}

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const whole = (raw: Buffer, opts?: Parameters<typeof feed>[1]): Outcome => feed([raw], opts);
const bytewise = (raw: Buffer, opts?: Parameters<typeof feed>[1]): Outcome => feed([...raw].map((x) => Buffer.from([x])), opts);

/** The error a malformed response raises, fed whole. */
function failure(raw: Buffer | string, opts: { isHead?: boolean; maxHead?: number; finish?: boolean } = {}): HttpModeError {
  try {
    feed([typeof raw === 'string' ? b(raw) : raw], opts);
  } catch (err) {
    return err as HttpModeError;
  }
  throw new Error('expected the parser to refuse the response');
}

function expectBadResponse(err: unknown): void {
  expect(err).toBeInstanceOf(HttpModeError);
  expect((err as HttpModeError).code).toBe('HTTP_APP_BAD_RESPONSE');
  expect((err as HttpModeError).status).toBe(502);
}

interface Case {
  name: string;
  raw: string;
  isHead?: boolean;
  /** Close-delimited: completed by finish(). */
  finish?: boolean;
  status: number;
  headers: HeaderList;
  body: string;
  /** Bytes of `raw` that belong to the response (default: all). */
  length?: number;
  keepAlive: boolean;
}

const CORPUS: Case[] = [
  {
    name: 'a Content-Length body',
    raw: 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\nhello world',
    status: 200,
    headers: ['Content-Type', 'text/plain', 'Content-Length', '11', 'X-Dup', '1', 'x-dup', '2'],
    body: 'hello world',
    keepAlive: true,
  },
  {
    name: 'a chunked body with extensions and trailers (dropped)',
    raw: 'HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;name=value\r\nhello\r\n1 ; a="b;c"\r\n \r\nA\r\n0123456789\r\n0;last\r\nX-Sum: 42\r\nX-Other:\t v \r\n\r\n',
    status: 201,
    headers: ['Transfer-Encoding', 'chunked', 'Trailer', 'X-Sum'],
    body: 'hello 0123456789',
    keepAlive: true,
  },
  {
    name: 'a chunked body with upper- and lower-case hex sizes and no trailers',
    raw: 'HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n1A\r\nABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n000\r\n\r\n',
    status: 200,
    headers: ['transfer-encoding', 'Chunked'],
    body: 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ',
    keepAlive: true,
  },
  {
    name: 'a close-delimited body',
    raw: 'HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil the end\r\n\r\nof the connection',
    finish: true,
    status: 200,
    headers: ['X-A', 'b'],
    body: 'until the end\r\n\r\nof the connection',
    keepAlive: false,
  },
  {
    name: 'a close-delimited empty body',
    raw: 'HTTP/1.1 500 Internal Server Error\r\n\r\n',
    finish: true,
    status: 500,
    headers: [],
    body: '',
    keepAlive: false,
  },
  {
    name: 'a HEAD response with a Content-Length',
    raw: 'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n',
    isHead: true,
    status: 200,
    headers: ['Content-Length', '1234'],
    body: '',
    keepAlive: false, // a body the app sends anyway must not reach the next request
  },
  {
    name: 'a HEAD response announcing chunked',
    raw: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
    isHead: true,
    status: 200,
    headers: ['Transfer-Encoding', 'chunked'],
    body: '',
    keepAlive: false, // a body the app sends anyway must not reach the next request
  },
  {
    name: 'a 204 with a Content-Length',
    raw: 'HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n',
    status: 204,
    headers: ['Content-Length', '10'],
    body: '',
    keepAlive: false, // a body the app sends anyway must not reach the next request
  },
  {
    name: 'a 304 with a Content-Length',
    raw: 'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\nContent-Length: 10\r\n\r\n',
    status: 304,
    headers: ['ETag', '"x"', 'Content-Length', '10'],
    body: '',
    keepAlive: false, // a body the app sends anyway must not reach the next request
  },
  {
    name: 'interim 100 and 103 responses before the final one',
    raw: 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nKeep-Alive: timeout=9\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
    status: 200,
    headers: ['Content-Length', '2'],
    body: 'ok',
    keepAlive: true,
  },
  {
    name: 'Content-Length: 0',
    raw: 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
    status: 200,
    headers: ['Content-Length', '0'],
    body: '',
    keepAlive: true,
  },
  {
    name: 'an HTTP/1.0 response with a Content-Length',
    raw: 'HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc',
    status: 200,
    headers: ['Content-Length', '3'],
    body: 'abc',
    keepAlive: false,
  },
  {
    name: 'a status line without a reason phrase, and padded header values',
    raw: 'HTTP/1.1 404\r\nX-Pad: \t padded value \t\r\nX-Empty:\r\nX-Blank:   \r\nContent-Length: 1\r\n\r\n!',
    status: 404,
    headers: ['X-Pad', 'padded value', 'X-Empty', '', 'X-Blank', '', 'Content-Length', '1'],
    body: '!',
    keepAlive: true,
  },
  {
    name: 'obs-text in a header value and in the reason phrase',
    raw: 'HTTP/1.1 200 \xc7a va\r\nX-Name: caf\xe9 \xff\x80\r\nContent-Length: 2\r\n\r\n\xff\x00',
    status: 200,
    headers: ['X-Name', 'caf\xe9 \xff\x80', 'Content-Length', '2'],
    body: '\xff\x00',
    keepAlive: true,
  },
  {
    name: 'a Content-Length body followed by bytes of something else',
    raw: 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n\r\n',
    status: 200,
    headers: ['Content-Length', '3'],
    body: 'abc',
    length: 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc'.length,
    // The response itself allows reuse; the caller discards the connection for the extra bytes.
    keepAlive: true,
  },
  {
    name: 'a chunked body followed by an extra byte',
    raw: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nX',
    status: 200,
    headers: ['Transfer-Encoding', 'chunked'],
    body: 'hi',
    length: 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n'.length,
    keepAlive: true,
  },
];

describe('ResponseParser: framing', () => {
  it.each(CORPUS)('parses $name fed whole', (c) => {
    const raw = b(c.raw);
    const out = whole(raw, { isHead: c.isHead, finish: c.finish });
    expect(out.heads).toEqual([{ status: c.status, headers: c.headers }]);
    expect(out.body.toString('latin1')).toBe(c.body);
    expect(out.completes).toBe(1);
    expect(out.done).toBe(true);
    expect(out.order).toEqual(c.body === '' ? ['head', 'complete'] : ['head', 'body', 'complete']);
    // A close-delimited body consumes everything it is given; the others stop at their end.
    expect(out.consumed).toBe(c.length ?? raw.length);
    expect(out.keepAlive).toBe(c.keepAlive);
  });

  it.each(CORPUS)('gives the same events and counts for $name split at every byte boundary, and fed one byte at a time', (c) => {
    const raw = b(c.raw);
    const opts = { isHead: c.isHead, finish: c.finish };
    const reference = whole(raw, opts);
    for (let cut = 0; cut <= raw.length; cut++) {
      const out = feed([raw.subarray(0, cut), raw.subarray(cut)], opts);
      expect(out, `cut at ${cut}`).toEqual(reference);
    }
    expect(bytewise(raw, opts)).toEqual(reference);
  });

  it('completes a Content-Length body without finish(), and a close-delimited one only with finish()', () => {
    const cl = whole(b('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    expect(cl.completes).toBe(1);
    const open = whole(b('HTTP/1.1 200 OK\r\n\r\nsome'));
    expect(open.completes).toBe(0);
    expect(open.done).toBe(false);
    expect(open.body.toString()).toBe('some');
  });

  it('reports the body as views of the bytes fed in, never more than the declared length', () => {
    const raw = b('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdEFGH');
    const chunks: Buffer[] = [];
    const parser = new ResponseParser(false, 1024, { head() {}, body: (c) => chunks.push(c), complete() {} });
    expect(parser.execute(raw)).toBe(raw.length - 4);
    expect(chunks).toHaveLength(1);
    expect(chunks[0]!.toString()).toBe('abcd');
    expect(chunks[0]!.buffer).toBe(raw.buffer);
  });

  it('returns 0 for bytes fed after the end of the response, and for an empty piece', () => {
    const parser = new ResponseParser(false, 1024, { head() {}, body() {}, complete() {} });
    expect(parser.execute(Buffer.alloc(0))).toBe(0);
    expect(parser.started).toBe(false);
    const raw = b('HTTP/1.1 204 No Content\r\n\r\n');
    expect(parser.execute(raw)).toBe(raw.length);
    expect(parser.started).toBe(true);
    expect(parser.done).toBe(true);
    expect(parser.execute(b('HTTP/1.1 200 OK\r\n\r\n'))).toBe(0);
    // finish() after the end is a no-op.
    expect(() => parser.finish()).not.toThrow();
  });

  it('skips interim responses: no head reported until the final one, started set by the first byte', () => {
    const heads: number[] = [];
    const parser = new ResponseParser(false, 1024, { head: (s) => heads.push(s), body() {}, complete() {} });
    const interim = b('HTTP/1.1 100 Continue\r\n\r\n');
    expect(parser.execute(interim)).toBe(interim.length);
    expect(parser.started).toBe(true);
    expect(parser.done).toBe(false);
    expect(heads).toEqual([]);
    const final = b('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    expect(parser.execute(final)).toBe(final.length);
    expect(heads).toEqual([200]);
    expect(parser.done).toBe(true);
  });
});

describe('ResponseParser: keep-alive', () => {
  const keepAlive = (raw: string, isHead = false): boolean => whole(b(raw), { isHead }).keepAlive;

  it('keeps an HTTP/1.1 response alive by default', () => {
    expect(keepAlive('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')).toBe(true);
    expect(keepAlive('HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n')).toBe(true);
    expect(keepAlive('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')).toBe(true);
  });

  it.each([
    ['Connection: close', 'close'],
    ['Connection: CLOSE', 'CLOSE'],
    ['close in a list', 'foo, close'],
    ['close first in a list', 'close,foo'],
    ['close with blanks', 'foo ,\t close \t, bar'],
  ])('does not keep the connection after %s', (_n, value) => {
    expect(keepAlive(`HTTP/1.1 200 OK\r\nConnection: ${value}\r\nContent-Length: 0\r\n\r\n`)).toBe(false);
  });

  it('does not take a token that merely contains "close" for close', () => {
    expect(keepAlive('HTTP/1.1 200 OK\r\nConnection: closed, xclose, close-ish\r\nContent-Length: 0\r\n\r\n')).toBe(true);
  });

  it('sees close in a second Connection header', () => {
    expect(keepAlive('HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nconnection: close\r\nContent-Length: 0\r\n\r\n')).toBe(false);
  });

  it('does not keep an HTTP/1.0 response, nor a close-delimited one', () => {
    expect(keepAlive('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n')).toBe(false);
    expect(keepAlive('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n')).toBe(false);
    const open = whole(b('HTTP/1.1 200 OK\r\n\r\nbody'), { finish: true });
    expect(open.keepAlive).toBe(false);
  });

  it('keeps a 204 or 304 that declares no body alive (no body to delimit)', () => {
    expect(keepAlive('HTTP/1.1 204 No Content\r\n\r\n')).toBe(true);
    expect(keepAlive('HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n')).toBe(true);
  });

  it('never keeps the connection after a response to HEAD (the app may send a body anyway, in a later read)', () => {
    expect(keepAlive('HTTP/1.1 200 OK\r\n\r\n', true)).toBe(false);
    expect(keepAlive('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', true)).toBe(false);
  });

  it('reads the Keep-Alive timeout hint in ms, null without one', () => {
    const hint = (v: string | null): number | null => whole(b(`HTTP/1.1 200 OK\r\n${v === null ? '' : `Keep-Alive: ${v}\r\n`}Content-Length: 0\r\n\r\n`)).keepAliveHintMs;
    expect(hint('timeout=5')).toBe(5000);
    expect(hint('timeout=5, max=100')).toBe(5000);
    expect(hint('max=100, timeout=72')).toBe(72_000);
    expect(hint('TIMEOUT=1')).toBe(1000);
    expect(hint('timeout=0')).toBe(0);
    expect(hint('max=100')).toBeNull();
    expect(hint('xtimeout=5')).toBeNull();
    expect(hint(null)).toBeNull();
  });

  it('forgets a Keep-Alive hint given on an interim response', () => {
    const out = whole(b('HTTP/1.1 103 Early Hints\r\nKeep-Alive: timeout=3\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    expect(out.keepAliveHintMs).toBeNull();
    const kept = whole(b('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nKeep-Alive: timeout=3\r\nContent-Length: 0\r\n\r\n'));
    expect(kept.keepAliveHintMs).toBe(3000);
  });
});

describe('ResponseParser: header bytes', () => {
  it('keeps obs-text (0x80-0xff) in header values byte-exact as latin1', () => {
    const bytes = Buffer.concat([b('HTTP/1.1 200 OK\r\nX-Bin: '), Buffer.from([0x80, 0x81, 0xe9, 0x20, 0xfe, 0xff]), b('\r\nContent-Length: 0\r\n\r\n')]);
    const out = whole(bytes);
    const value = out.heads[0]!.headers[1]!;
    expect(Buffer.from(value, 'latin1')).toEqual(Buffer.from([0x80, 0x81, 0xe9, 0x20, 0xfe, 0xff]));
    expect(value.length).toBe(6);
  });

  it('keeps the names as sent (case) and the order, duplicates included', () => {
    const out = whole(b('HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Y: z\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n'));
    expect(out.heads[0]!.headers).toEqual(['Set-Cookie', 'a=1', 'X-Y', 'z', 'set-cookie', 'b=2', 'Content-Length', '0']);
  });
});

const MALFORMED: [string, string, { isHead?: boolean }?][] = [
  ['an obs-fold continuation line', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n'],
  ['an obs-fold line with a tab', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n\tfolded\r\nContent-Length: 0\r\n\r\n'],
  ['bare LF line endings', 'HTTP/1.1 200 OK\nContent-Length: 0\n\n\r\n\r\n'],
  ['a bare LF inside the head', 'HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\nContent-Length: 0\r\n\r\n'],
  ['a bare CR in a value', 'HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 0\r\n\r\n'],
  ['a NUL in a value', 'HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n'],
  ['a control character in a value', 'HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n'],
  ['DEL in a value', 'HTTP/1.1 200 OK\r\nX-A: a\x7fb\r\nContent-Length: 0\r\n\r\n'],
  ['whitespace before the colon', 'HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 0\r\n\r\n'],
  ['a tab before the colon', 'HTTP/1.1 200 OK\r\nX-A\t: 1\r\nContent-Length: 0\r\n\r\n'],
  ['an empty header name', 'HTTP/1.1 200 OK\r\n: 1\r\nContent-Length: 0\r\n\r\n'],
  ['a header line without a colon', 'HTTP/1.1 200 OK\r\nX-A\r\nContent-Length: 0\r\n\r\n'],
  ['a non-token header name', 'HTTP/1.1 200 OK\r\nX(A): 1\r\nContent-Length: 0\r\n\r\n'],
  ['HTTP/2.0', 'HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'],
  ['HTTP/1.2', 'HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n'],
  ['a two-digit status', 'HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n'],
  ['a four-digit status', 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n'],
  ['a status starting with 0', 'HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n'],
  ['a missing version', '200 OK\r\nContent-Length: 0\r\n\r\n'],
  ['a lower-case version', 'http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
  ['two spaces after the version', 'HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n'],
  ['a status line with a NUL in the reason', 'HTTP/1.1 200 O\0K\r\nContent-Length: 0\r\n\r\n'],
  ['an empty status line', '\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
  ['101 Switching Protocols', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'],
  ['two identical Content-Length headers', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok'],
  ['two different Content-Length headers', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nok'],
  ['a Content-Length list', 'HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok'],
  ['a signed Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok'],
  ['a non-digit Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok'],
  ['an empty Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok'],
  ['a 16-digit Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 1000000000000000\r\n\r\nok'],
  ['Transfer-Encoding with Content-Length', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n'],
  ['Content-Length with Transfer-Encoding', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding: gzip', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx'],
  ['Transfer-Encoding: gzip, chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding: chunked, chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n'],
  ['two Transfer-Encoding headers', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding in HTTP/1.0', 'HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['a non-hex chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n'],
  ['a negative chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\na\r\n0\r\n\r\n'],
  ['a 0x-prefixed chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n'],
  ['an empty chunk size line', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nab\r\n0\r\n\r\n'],
  ['a chunk size over 12 hex digits', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000\r\nab\r\n0\r\n\r\n'],
  ['a chunk size with a bare LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n'],
  ['chunk data not followed by CRLF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n'],
  ['chunk data followed by CR and not LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\rX0\r\n\r\n'],
  ['chunk data followed by a bare LF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\n0\r\n\r\n'],
  ['a malformed trailer line', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T : 1\r\n\r\n'],
  ['a control byte in a trailer', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: \x01\r\n\r\n'],
  ['a malformed interim response', 'HTTP/1.1 100 Continue\r\nX : y\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
  ['a malformed final response after an interim one', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx'],
];

describe('ResponseParser: malformed responses', () => {
  it.each(MALFORMED)('refuses %s with HTTP_APP_BAD_RESPONSE (502), whole and byte by byte', (_name, raw, opts) => {
    const bytes = b(raw);
    expectBadResponse(failure(bytes, opts));
    let thrown: unknown = null;
    try {
      bytewise(bytes, opts);
    } catch (err) {
      thrown = err;
    }
    expectBadResponse(thrown);
  });

  it('never reports a head before refusing a malformed one', () => {
    const heads: number[] = [];
    const parser = new ResponseParser(false, 1024, { head: (s) => heads.push(s), body() {}, complete() {} });
    expect(() => parser.execute(b('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n'))).toThrow(HttpModeError);
    expect(heads).toEqual([]);
  });

  it('says what was wrong without echoing header values or body bytes', () => {
    const err = failure('HTTP/1.1 200 OK\r\nX-Secret: hunter2\0\r\nContent-Length: 0\r\n\r\n');
    expect(err.message).toMatch(/malformed response/);
    expect(err.message).not.toContain('hunter2');
  });

  it('accepts a head of exactly maxHeadBytes and refuses one byte more', () => {
    const head = (valueLength: number): Buffer => b(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(valueLength)}\r\nContent-Length: 0\r\n\r\n`);
    // maxHeadBytes bounds the head without its final CRLFCRLF.
    const base = head(0).length - 4;
    const max = 256;
    const fits = head(max - base);
    expect(fits.length - 4).toBe(max);
    expect(whole(fits, { maxHead: max }).completes).toBe(1);
    expect(bytewise(fits, { maxHead: max }).completes).toBe(1);
    const over = head(max - base + 1);
    expectBadResponse(failure(over, { maxHead: max }));
    expect(() => bytewise(over, { maxHead: max })).toThrow(HttpModeError);
    for (let cut = 1; cut < over.length; cut++) expect(() => feed([over.subarray(0, cut), over.subarray(cut)], { maxHead: max }), `cut at ${cut}`).toThrow(HttpModeError);
  });

  it('refuses an endless head arriving in small pieces before holding much more than maxHeadBytes', () => {
    const max = 1024;
    const parser = new ResponseParser(false, max, { head() {}, body() {}, complete() {} });
    let fed = 0;
    let err: unknown = null;
    const piece = b('aaaaaaa');
    try {
      parser.execute(b('HTTP/1.1 200 OK\r\nX: '));
      fed += 20;
      for (let i = 0; i < 10_000; i++) {
        parser.execute(piece);
        fed += piece.length;
      }
    } catch (e) {
      err = e;
    }
    expectBadResponse(err);
    expect(fed).toBeLessThanOrEqual(max + 4);
  });

  it('refuses an endless head fed one byte at a time within maxHeadBytes + 4 bytes', () => {
    const max = 512;
    const parser = new ResponseParser(false, max, { head() {}, body() {}, complete() {} });
    let fed = 0;
    expect(() => {
      while (fed < 100_000) parser.execute(b(fed++ < 9 ? 'HTTP/1.1 '[fed - 1]! : 'a'));
    }).toThrow(HttpModeError);
    // The byte that was refused included: the parser never held more than maxHeadBytes + CRLFCRLF.
    expect(fed).toBeLessThanOrEqual(max + 5);
  });

  it('accepts a chunk-size line of 4096 bytes and refuses one over 4096, whole and in small pieces', () => {
    const withLine = (line: string): Buffer => b(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${line}\r\nx\r\n0\r\n\r\n`);
    const ok = `1;${'e'.repeat(4094)}`;
    expect(ok.length).toBe(4096);
    expect(whole(withLine(ok)).body.toString()).toBe('x');
    const long = `1;${'e'.repeat(4095)}`;
    expectBadResponse(failure(withLine(long)));
    // No CRLF ever: refused once the line passes the limit, not buffered on.
    const parser = new ResponseParser(false, 1024, { head() {}, body() {}, complete() {} });
    parser.execute(b('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;'));
    let fed = 2;
    expect(() => {
      for (; fed < 100_000; fed += 16) parser.execute(b('e'.repeat(16)));
    }).toThrow(HttpModeError);
    expect(fed).toBeLessThanOrEqual(4096 + 2 + 16);
  });

  it('accepts trailers of 8 KiB and refuses trailers over 16 KiB, whole and in small pieces', () => {
    const trailers = (n: number): string => Array.from({ length: n }, (_v, i) => `X-T${i}: ${'v'.repeat(100)}\r\n`).join('');
    const small = b(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n${trailers(75)}\r\n`);
    expect(whole(small).completes).toBe(1);
    expect(whole(small).consumed).toBe(small.length);
    const big = b(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n${trailers(170)}\r\n`);
    expectBadResponse(failure(big));
    const parser = new ResponseParser(false, 1024, { head() {}, body() {}, complete() {} });
    parser.execute(b('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n'));
    let fed = 0;
    const line = b(`X-T: ${'v'.repeat(100)}\r\n`);
    expect(() => {
      for (; fed < 1_000_000; fed += line.length) parser.execute(line);
    }).toThrow(HttpModeError);
    expect(fed).toBeLessThanOrEqual(16 * 1024 + line.length);
  });

  it('refuses a header line of 64 KiB of blanks without backtracking for seconds', { timeout: 3000 }, () => {
    // A value that is all blanks before a forbidden byte: the line regex must stay linear in the line length.
    const raw = b(`HTTP/1.1 200 OK\r\nX:${' '.repeat(64 * 1024)}\x01\r\n\r\n`);
    expectBadResponse(failure(raw, { maxHead: 1 << 20 }));
    const ok = whole(b(`HTTP/1.1 200 OK\r\nX:${' '.repeat(64 * 1024)}\r\nContent-Length: 0\r\n\r\n`), { maxHead: 1 << 20 });
    expect(ok.heads[0]!.headers).toEqual(['X', '', 'Content-Length', '0']);
  });
});

describe('ResponseParser: the connection ends', () => {
  const finishAfter = (raw: string, opts: { isHead?: boolean } = {}): unknown => {
    const parser = new ResponseParser(opts.isHead ?? false, 1024, { head() {}, body() {}, complete() {} });
    parser.execute(b(raw));
    try {
      parser.finish();
    } catch (err) {
      return err;
    }
    return null;
  };

  it.each([
    ['nothing received', ''],
    ['part of a status line', 'HTTP/1.1 20'],
    ['part of a head', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n'],
    ['only an interim response', 'HTTP/1.1 100 Continue\r\n\r\n'],
    ['part of a Content-Length body', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc'],
    ['a Content-Length head without its body', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'],
    ['part of a chunk', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab'],
    ['a chunk without its CRLF', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab'],
    ['a chunked body without the last chunk', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n'],
    ['a chunked body without the end of trailers', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n'],
    ['part of a trailer', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n'],
  ])('refuses the end of the connection after %s', (_name, raw) => {
    expectBadResponse(finishAfter(raw));
  });

  it('says whether anything was received', () => {
    expect((finishAfter('') as Error).message).toMatch(/without a response/);
    expect((finishAfter('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc') as Error).message).toMatch(/before the end/);
  });

  it('accepts the end after a complete response or a close-delimited body', () => {
    expect(finishAfter('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')).toBeNull();
    expect(finishAfter('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n', { isHead: true })).toBeNull();
    expect(finishAfter('HTTP/1.1 200 OK\r\n\r\n')).toBeNull();
    expect(finishAfter('HTTP/1.1 200 OK\r\n\r\npartial')).toBeNull();
  });
});

// Random valid responses, cut at random places.
const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
/** Names that would change the framing or be read by the parser are left out of the random headers. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive']);
const tokenArb = fc.string({ unit: fc.constantFrom(...TOKEN_CHARS), minLength: 1, maxLength: 12 }).filter((t) => !FRAMING.has(t.toLowerCase()));
const visible = fc.integer({ min: 0x21, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c));
const valueArb = fc
  .array(fc.oneof(visible, fc.constantFrom(' ', '\t')), { maxLength: 20 })
  .map((cs) => cs.join('').replace(/^[\t ]+|[\t ]+$/g, ''));
const bodyArb = fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u));

interface Generated {
  raw: Buffer;
  isHead: boolean;
  finish: boolean;
  status: number;
  headers: HeaderList;
  body: Buffer;
}

const responseArb: fc.Arbitrary<Generated> = fc
  .record({
    interim: fc.array(fc.constantFrom(100, 102, 103), { maxLength: 2 }),
    status: fc.oneof(fc.integer({ min: 200, max: 599 }), fc.constantFrom(204, 304)),
    reason: fc.option(fc.constantFrom('OK', 'Not Found', 'x y z', '\xe9t\xe9'), { nil: undefined }),
    headers: fc.array(fc.tuple(tokenArb, valueArb), { maxLength: 6 }),
    framing: fc.constantFrom('length', 'chunked', 'close'),
    body: bodyArb,
    chunkSizes: fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }),
    extension: fc.constantFrom('', ';a=b', ' ;x', ';q="v;w"'),
    trailers: fc.array(fc.tuple(tokenArb, valueArb), { maxLength: 3 }),
    isHead: fc.boolean(),
    upperHex: fc.boolean(),
  })
  .map((r): Generated => {
    const noBody = r.isHead || r.status === 204 || r.status === 304;
    const headers: HeaderList = [];
    for (const [n, v] of r.headers) headers.push(n, v);
    let head = '';
    for (const s of r.interim) head += `HTTP/1.1 ${s} Interim\r\nX-Interim: ${s}\r\n\r\n`;
    head += `HTTP/1.1 ${r.status}${r.reason === undefined ? '' : ` ${r.reason}`}\r\n`;
    for (const [n, v] of r.headers) head += `${n}:${v === '' ? '' : ' '}${v}\r\n`;
    let bodyWire = Buffer.alloc(0);
    let finish = false;
    if (r.framing === 'length') {
      headers.push('Content-Length', String(r.body.length));
      head += `Content-Length: ${r.body.length}\r\n`;
      bodyWire = r.body;
    } else if (r.framing === 'chunked') {
      headers.push('Transfer-Encoding', 'chunked');
      head += 'Transfer-Encoding: chunked\r\n';
      const parts: Buffer[] = [];
      let at = 0;
      for (let i = 0; at < r.body.length; i++) {
        const n = Math.min(r.chunkSizes[i % r.chunkSizes.length]!, r.body.length - at);
        const hex = r.upperHex ? n.toString(16).toUpperCase() : n.toString(16);
        parts.push(b(`${hex}${r.extension}\r\n`), r.body.subarray(at, at + n), b('\r\n'));
        at += n;
      }
      parts.push(b(`0${r.extension}\r\n`));
      for (const [n, v] of r.trailers) parts.push(b(`${n}: ${v}\r\n`));
      parts.push(b('\r\n'));
      bodyWire = Buffer.concat(parts);
    } else {
      bodyWire = r.body;
      finish = !noBody;
    }
    head += '\r\n';
    const raw = Buffer.concat([b(head), noBody ? Buffer.alloc(0) : bodyWire]);
    return { raw, isHead: r.isHead, finish, status: r.status, headers, body: noBody ? Buffer.alloc(0) : r.body };
  });

describe('ResponseParser: random responses cut at random places', () => {
  it('reports the same head, body and one completion however the bytes are cut', () => {
    fc.assert(
      fc.property(responseArb, fc.array(fc.nat(), { maxLength: 12 }), (g, cutsRaw) => {
        const cuts = [...new Set(cutsRaw.map((c) => c % (g.raw.length + 1)))].sort((x, y) => x - y);
        const pieces: Buffer[] = [];
        let prev = 0;
        for (const c of [...cuts, g.raw.length]) {
          pieces.push(g.raw.subarray(prev, c));
          prev = c;
        }
        const opts = { isHead: g.isHead, finish: g.finish };
        const out = feed(pieces, opts);
        expect(out.heads).toEqual([{ status: g.status, headers: g.headers }]);
        expect(out.body.equals(g.body)).toBe(true);
        expect(out.completes).toBe(1);
        expect(out.consumed).toBe(g.raw.length);
        expect(out).toEqual(whole(g.raw, opts));
      }),
      { numRuns: 300 },
    );
  });

  it('stops at the end of a random response followed by random bytes', () => {
    fc.assert(
      fc.property(
        responseArb.filter((g) => !g.finish),
        fc.uint8Array({ minLength: 1, maxLength: 40 }),
        fc.nat(),
        (g, tail, cut) => {
          const raw = Buffer.concat([g.raw, Buffer.from(tail)]);
          const at = cut % (raw.length + 1);
          const out = feed([raw.subarray(0, at), raw.subarray(at)], { isHead: g.isHead });
          expect(out.consumed).toBe(g.raw.length);
          expect(out.completes).toBe(1);
          expect(out.body.equals(g.body)).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });
});

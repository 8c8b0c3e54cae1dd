// The client's HTTP/1.1 codec: request bytes exactly as WIRE.md §7 (the Enclavia client), response heads and
// the three body framings, under every chunking.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ClientError } from '../../src/client/errors.ts';
import { responseFromBytes } from '../../src/client/fetch.ts';
import { BodyDecoder, bodyFraming, type BodyFraming, encodeChunk, encodeRequestHead, HeadParser, LAST_CHUNK, type ResponseHead } from '../../src/client/http-codec.ts';
import { chunkBudget, fitsData } from '../../src/client/session.ts';
import { clientMessageSize, encodeClientMessage, MAX_MESSAGE_LEN } from '../../src/wire/messages.ts';
import { concatBytes, toHex, utf8 } from '../../src/util/bytes.ts';

const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const head = (o: Partial<Parameters<typeof encodeRequestHead>[0]>): string =>
  text(encodeRequestHead({ method: 'GET', path: '/', host: 'enclave.example.com', headers: [], ...o }));

describe('request head (WIRE.md §7)', () => {
  it('writes header values as byte strings (one byte per character, as fetch and undici do), refuses characters past U+00FF, keeps a raw path in UTF-8', () => {
    const bytes = encodeRequestHead({ method: 'GET', path: '/caf\u00e9', host: 'h', headers: [['x-name', 'Jos\u00e9']] });
    const latin1 = Buffer.from(bytes).toString('latin1');
    expect(latin1).toBe('GET /caf\u00c3\u00a9 HTTP/1.1\r\nHost: h\r\nx-name: Jos\u00e9\r\nConnection: close\r\n\r\n');
    expect(Buffer.from(bytes).includes(Buffer.from([0x4a, 0x6f, 0x73, 0xe9, 0x0d]))).toBe(true);
    let err: unknown;
    try {
      encodeRequestHead({ method: 'GET', path: '/', host: 'h', headers: [['x-price', '5 \u20ac']] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe('CLIENT_BAD_OPTIONS');
    expect((err as ClientError).message).toContain('byte string');
  });

  it('puts Host first and Connection: close last for a bodiless request', () => {
    expect(head({ path: '/a?b=1' })).toBe('GET /a?b=1 HTTP/1.1\r\nHost: enclave.example.com\r\nConnection: close\r\n\r\n');
  });

  it('keeps the caller headers in order and spelling, then Connection, then Content-Length', () => {
    expect(head({ method: 'POST', headers: [['X-B', '2'], ['x-a', '1']], body: 5 })).toBe(
      'POST / HTTP/1.1\r\nHost: enclave.example.com\r\nX-B: 2\r\nx-a: 1\r\nConnection: close\r\nContent-Length: 5\r\n\r\n',
    );
  });

  it('sends Content-Length: 0 for an empty body and none without a body', () => {
    expect(head({ method: 'POST', body: 0 })).toContain('\r\nContent-Length: 0\r\n');
    expect(head({ method: 'POST' })).not.toContain('Content-Length');
  });

  it('does not add Host or Connection when the caller gave them (any case), and keeps their position', () => {
    expect(head({ headers: [['X-A', '1'], ['host', 'api.internal'], ['CONNECTION', 'keep-alive']] })).toBe(
      'GET / HTTP/1.1\r\nX-A: 1\r\nhost: api.internal\r\nCONNECTION: keep-alive\r\n\r\n',
    );
  });

  it('keeps a matching caller Content-Length and refuses one that contradicts the body', () => {
    expect(head({ method: 'PUT', headers: [['content-length', '3']], body: 3 })).toBe(
      'PUT / HTTP/1.1\r\nHost: enclave.example.com\r\ncontent-length: 3\r\nConnection: close\r\n\r\n',
    );
    expect(() => head({ method: 'PUT', headers: [['Content-Length', '4']], body: 3 })).toThrow(ClientError);
  });

  it('omits Connection: close for upgrades and frames unknown-size bodies as chunked', () => {
    expect(head({ headers: [['Upgrade', 'websocket']], connectionClose: false })).toBe('GET / HTTP/1.1\r\nHost: enclave.example.com\r\nUpgrade: websocket\r\n\r\n');
    expect(head({ method: 'POST', body: 'chunked' })).toBe('POST / HTTP/1.1\r\nHost: enclave.example.com\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n');
  });

  it('refuses header injection, bad methods and bad targets', () => {
    const bad = (o: Partial<Parameters<typeof encodeRequestHead>[0]>): string | undefined => {
      try {
        head(o);
        return undefined;
      } catch (err) {
        return (err as ClientError).code;
      }
    };
    expect(bad({ headers: [['X', 'a\r\nEvil: 1']] })).toBe('CLIENT_BAD_OPTIONS');
    expect(bad({ headers: [['X', 'a\nb']] })).toBe('CLIENT_BAD_OPTIONS');
    expect(bad({ headers: [['Bad Name', 'a']] })).toBe('CLIENT_BAD_OPTIONS');
    expect(bad({ method: 'GET /x HTTP/1.1\r\n' })).toBe('CLIENT_BAD_OPTIONS');
    expect(bad({ path: '/a b' })).toBe('CLIENT_BAD_OPTIONS');
    expect(bad({ path: '/a\r\nX: y' })).toBe('CLIENT_BAD_OPTIONS');
    expect(bad({ path: 'relative' })).toBe('CLIENT_BAD_OPTIONS');
  });

  it('encodes chunks and the last chunk', () => {
    expect(text(encodeChunk(utf8.encode('hello world, this is 30 bytes!')))).toBe('1e\r\nhello world, this is 30 bytes!\r\n');
    expect(text(LAST_CHUNK)).toBe('0\r\n\r\n');
  });
});

describe('Data budget (wire vectors)', () => {
  const vectors = JSON.parse(readFileSync(path.resolve(process.cwd(), '../shared/fixtures/enclavia/wire-vectors.json'), 'utf8')) as {
    cbor_messages: { direction: string; type: string; fields: { id?: number; payload_hex?: string }; cbor_hex: string }[];
    limits: Record<string, number>;
  };

  it('encodes the Data vectors byte for byte', () => {
    for (const v of vectors.cbor_messages.filter((m) => m.direction === 'client' && m.type === 'Data')) {
      const payload = Uint8Array.from(Buffer.from(v.fields.payload_hex!, 'hex'));
      expect(toHex(encodeClientMessage({ type: 'Data', id: v.fields.id!, payload }))).toBe(v.cbor_hex);
    }
  });

  it('decides "fits one Data frame" from the encoded size, for the worst id', () => {
    const max = vectors.limits.max_data_payload_all_bytes_ge_0x18_id_lt_24!;
    expect(clientMessageSize({ type: 'Data', id: 1, payload: new Uint8Array(max).fill(0xff) })).toBeLessThanOrEqual(MAX_MESSAGE_LEN);
    expect(fitsData(new Uint8Array(max - 8).fill(0xff), 'array')).toBe(true); // 8 more id bytes in the worst case
    expect(fitsData(new Uint8Array(max + 1).fill(0xff), 'array')).toBe(false);
    expect(fitsData(new Uint8Array(65_000).fill(0xff), 'bstr')).toBe(true);
    expect(fitsData(new Uint8Array(65_500), 'bstr')).toBe(false);
  });

  it('sizes stream chunks so a frame of the worst bytes always fits', () => {
    for (const enc of ['array', 'bstr'] as const) {
      const payload = new Uint8Array(chunkBudget(enc)).fill(0xff);
      expect(clientMessageSize({ type: 'StreamData', id: Number.MAX_SAFE_INTEGER, payload }, enc)).toBeLessThanOrEqual(MAX_MESSAGE_LEN);
      expect(clientMessageSize({ type: 'OpenStream', id: Number.MAX_SAFE_INTEGER, payload }, enc)).toBeLessThanOrEqual(MAX_MESSAGE_LEN);
    }
  });
});

/** Feeds `bytes` to a fresh HeadParser split at `at` (all positions by default) and checks every split agrees. */
function parseSplit(raw: string): { head: ResponseHead; rest: string } {
  const bytes = utf8.encode(raw);
  let first: { head: ResponseHead; rest: string } | undefined;
  for (let at = 0; at <= bytes.length; at++) {
    const p = new HeadParser();
    const a = p.push(bytes.subarray(0, at));
    const r = a ?? p.push(bytes.subarray(at));
    if (r === null) throw new Error('incomplete');
    const got = { head: r.head, rest: text(a === null ? r.rest : concatBytes(r.rest, bytes.subarray(at))) };
    if (first === undefined) first = got;
    else expect(got).toEqual(first);
  }
  return first!;
}

describe('response head', () => {
  it('parses the status line, headers and the bytes after the head, under any split', () => {
    const r = parseSplit('HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-Empty:\r\nX-Pad:   v  \r\n\r\nbody');
    expect(r.head).toMatchObject({ version: 'HTTP/1.1', status: 201, statusText: 'Created', headers: [['Content-Type', 'text/plain'], ['X-Empty', ''], ['X-Pad', 'v']] });
    expect(r.rest).toBe('body');
  });

  it('accepts bare LF line ends and an empty reason', () => {
    const r = parseSplit('HTTP/1.0 200\nA: b\n\nx');
    expect(r.head).toMatchObject({ status: 200, statusText: '', headers: [['A', 'b']] });
    expect(r.rest).toBe('x');
  });

  it('skips interim 1xx heads but keeps 101', () => {
    expect(parseSplit('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n').head.status).toBe(200);
    expect(parseSplit('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nframes').head.status).toBe(101);
  });

  it('trims a header value with a long run of blanks inside it in linear time', { timeout: 2000 }, () => {
    // `/[ \t]+$/` retried at every blank of such a run: seconds for 40 KB, on bytes the enclave's app chooses.
    const value = `a${' '.repeat(60_000)}b`;
    const r = new HeadParser().push(utf8.encode(`HTTP/1.1 200 OK\r\nX-Long: \t ${value}  \t\r\n\r\n`));
    expect(r?.head.headers).toEqual([['X-Long', value]]);
  });

  it('counts interim 1xx heads toward the head limit: an endless run of them is refused', () => {
    const interim = 'HTTP/1.1 100 Continue\r\n\r\n';
    // In one push (each interim head used to re-copy everything after it: quadratic in the reply) ...
    expect(() => new HeadParser().push(utf8.encode(interim.repeat(3000)))).toThrow(/exceeds/);
    // ... and across pushes, where none of them ever completed a response.
    const p = new HeadParser();
    expect(() => {
      for (let i = 0; i < 3000; i++) p.push(utf8.encode(interim));
    }).toThrow(/exceeds/);
    // A few interim heads before the response still pass.
    expect(new HeadParser().push(utf8.encode(`${interim.repeat(3)}HTTP/1.1 200 OK\r\n\r\nbody`))?.head.status).toBe(200);
  });

  it('refuses more than 64 headers, an oversized head, folding and garbage', () => {
    const many = 'HTTP/1.1 200 OK\r\n' + Array.from({ length: 65 }, (_, i) => `H${i}: v\r\n`).join('') + '\r\n';
    expect(() => new HeadParser().push(utf8.encode(many))).toThrow(/more than 64 headers/);
    const ok = 'HTTP/1.1 200 OK\r\n' + Array.from({ length: 64 }, (_, i) => `H${i}: v\r\n`).join('') + '\r\n';
    expect(new HeadParser().push(utf8.encode(ok))?.head.headers).toHaveLength(64);
    expect(() => new HeadParser().push(new Uint8Array(70 * 1024).fill(0x41))).toThrow(/exceeds/);
    expect(() => new HeadParser().push(utf8.encode('HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n'))).toThrow(/folding/);
    expect(() => new HeadParser().push(utf8.encode('SSH-2.0-OpenSSH\r\n\r\n'))).toThrow(ClientError);
    expect(() => new HeadParser().push(utf8.encode('HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n'))).toThrow(ClientError);
  });
});

describe('errors never quote the decrypted response (callers log them, the proxy sends them in its 502)', () => {
  const SECRET = '4111111111111111';
  /** The ClientError `f` throws; its message must name the fault without the response's bytes. */
  function messageOf(f: () => unknown): string {
    try {
      f();
    } catch (err) {
      expect(err).toBeInstanceOf(ClientError);
      expect((err as ClientError).code).toBe('CLIENT_PROTOCOL');
      return (err as ClientError).message;
    }
    throw new Error('expected a ClientError');
  }

  it.each([
    ['status line', `HTTP/1.1 2OO card=${SECRET}\r\n\r\n`, /status line/],
    ['status line without HTTP/', `card=${SECRET}\r\n\r\n`, /status line/],
    ['header line', `HTTP/1.1 200 OK\r\nX-Card ${SECRET}\r\n\r\n`, /malformed header line 1 \(/],
    ['header name', `HTTP/1.1 200 OK\r\nA: b\r\n${SECRET}@x: y\r\n\r\n`, /malformed header line 2 /],
    ['folded header', `HTTP/1.1 200 OK\r\nA: b\r\n ${SECRET}\r\n\r\n`, /obsolete line folding/],
    ['header with NUL', `HTTP/1.1 200 OK\r\nX-${SECRET}: a\0b\r\n\r\n`, /header line 1 contains NUL/],
  ])('a malformed %s', (_label, raw, message) => {
    const m = messageOf(() => new HeadParser().push(utf8.encode(raw)));
    expect(m).toMatch(message);
    expect(m).not.toContain(SECRET);
    expect(m).not.toContain(SECRET.slice(0, 6));
  });

  it('a header value with a bare CR, through to the fetch Response: neither the message nor the cause quotes it', () => {
    const raw = utf8.encode(`HTTP/1.1 200 OK\r\nSet-Cookie: card=${SECRET}\rx\r\nContent-Length: 0\r\n\r\n`);
    let err: unknown;
    try {
      responseFromBytes(raw, 'GET');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).code).toBe('CLIENT_PROTOCOL');
    expect((err as ClientError).message).toMatch(/header line 1/);
    expect(inspect(err, { depth: 8 })).not.toContain(SECRET.slice(0, 6));
  });

  it('an invalid Content-Length', () => {
    const m = messageOf(() => bodyFraming(h(200, [['Content-Length', `5, ${SECRET}`]]), 'GET'));
    expect(m).toMatch(/invalid Content-Length/);
    expect(m).not.toContain(SECRET.slice(0, 6));
    const one = messageOf(() => bodyFraming(h(200, [['Content-Length', `x${SECRET}`]]), 'GET'));
    expect(one).not.toContain(SECRET.slice(0, 6));
  });

  it('an invalid chunk-size line', () => {
    const d = new BodyDecoder({ kind: 'chunked' });
    d.push(utf8.encode('5\r\nhello\r\n'));
    const m = messageOf(() => d.push(utf8.encode(`g${SECRET}\r\n`)));
    expect(m).toMatch(/invalid chunk-size line \(17 bytes\) for chunk 2/);
    expect(m).not.toContain(SECRET.slice(0, 6));
  });

  it('through responseFromBytes (the Data reply path)', () => {
    const m = messageOf(() => responseFromBytes(utf8.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${SECRET}0000\r\n\r\n`), 'GET'));
    expect(m).not.toContain(SECRET.slice(0, 6));
  });
});

function h(status: number, headers: [string, string][] = []): ResponseHead {
  return { status, statusText: '', version: 'HTTP/1.1', headers, headLength: 0 };
}

describe('body framing (RFC 9112 §6.3)', () => {
  it('chooses none / length / chunked / eof', () => {
    expect(bodyFraming(h(200, [['Content-Length', '5']]), 'HEAD')).toEqual({ kind: 'none' });
    expect(bodyFraming(h(204), 'GET')).toEqual({ kind: 'none' });
    expect(bodyFraming(h(304, [['Content-Length', '5']]), 'GET')).toEqual({ kind: 'none' });
    expect(bodyFraming(h(200, [['content-length', '5'], ['Content-Length', '5']]), 'GET')).toEqual({ kind: 'length', length: 5 });
    expect(bodyFraming(h(200, [['Transfer-Encoding', 'gzip, Chunked'], ['Content-Length', '5']]), 'GET')).toEqual({ kind: 'chunked' });
    expect(bodyFraming(h(200, [['Transfer-Encoding', 'gzip']]), 'GET')).toEqual({ kind: 'eof' });
    expect(bodyFraming(h(200), 'GET')).toEqual({ kind: 'eof' });
  });

  it('refuses conflicting or invalid Content-Length', () => {
    expect(() => bodyFraming(h(200, [['Content-Length', '5'], ['Content-Length', '6']]), 'GET')).toThrow(ClientError);
    expect(() => bodyFraming(h(200, [['Content-Length', '-1']]), 'GET')).toThrow(ClientError);
    expect(() => bodyFraming(h(200, [['Content-Length', '1e3']]), 'GET')).toThrow(ClientError);
  });
});

function decodeSplit(framing: BodyFraming, raw: string, step: number): { body: string; done: boolean; excess: number } {
  const d = new BodyDecoder(framing);
  const bytes = utf8.encode(raw);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += step) parts.push(...d.push(bytes.subarray(i, i + step)));
  return { body: text(concatBytes(...parts)), done: d.done, excess: d.excess };
}

describe('body decoder', () => {
  it('stops a Content-Length body at its length and counts the excess', () => {
    for (const step of [1, 2, 3, 100]) expect(decodeSplit({ kind: 'length', length: 5 }, 'helloEXTRA', step)).toEqual({ body: 'hello', done: true, excess: 5 });
  });

  it('decodes chunked bodies with extensions and trailers under any chunking', () => {
    const raw = '5;ext=1\r\nhello\r\n1A\r\n' + 'abcdefghijklmnopqrstuvwxyz' + '\r\n0\r\nTrailer: x\r\n\r\nAFTER';
    for (const step of [1, 2, 5, 7, 1000]) {
      expect(decodeSplit({ kind: 'chunked' }, raw, step)).toEqual({ body: 'helloabcdefghijklmnopqrstuvwxyz', done: true, excess: 5 });
    }
  });

  it('reports truncated bodies at end() and refuses a bad chunk size', () => {
    const short = new BodyDecoder({ kind: 'length', length: 10 });
    short.push(utf8.encode('abc'));
    expect(() => short.end()).toThrow(/3 of 10/);
    const cut = new BodyDecoder({ kind: 'chunked' });
    cut.push(utf8.encode('5\r\nhel'));
    expect(() => cut.end()).toThrow(/chunked/);
    expect(() => new BodyDecoder({ kind: 'chunked' }).push(utf8.encode('zz\r\n'))).toThrow(ClientError);
    expect(() => new BodyDecoder({ kind: 'chunked' }).push(utf8.encode('3\r\nabcX'))).toThrow(/CRLF/);
    const eof = new BodyDecoder({ kind: 'eof' });
    expect(text(concatBytes(...eof.push(utf8.encode('anything'))))).toBe('anything');
    eof.end();
    expect(eof.done).toBe(true);
  });
});

describe('Data replies as Response', () => {
  it('builds a Response from a complete raw reply (body = Content-Length bytes, chunked decoded)', async () => {
    const plain = responseFromBytes(utf8.encode('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok'), 'GET');
    expect(plain.status).toBe(200);
    expect(plain.headers.get('content-type')).toBe('text/plain');
    expect(await plain.text()).toBe('ok');
    const chunked = responseFromBytes(utf8.encode('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'), 'GET');
    expect(await chunked.text()).toBe('ok');
    const eof = responseFromBytes(utf8.encode('HTTP/1.0 404 Not Found\r\n\r\nmissing'), 'GET');
    expect([eof.status, eof.statusText, await eof.text()]).toEqual([404, 'Not Found', 'missing']);
  });

  it('refuses an incomplete reply, a 101 and a status fetch cannot represent', () => {
    expect(() => responseFromBytes(utf8.encode('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok'), 'GET')).toThrow(/2 of 5/);
    expect(() => responseFromBytes(utf8.encode('HTTP/1.1 200 OK\r\n'), 'GET')).toThrow(/incomplete/);
    expect(() => responseFromBytes(utf8.encode('HTTP/1.1 101 Switching Protocols\r\n\r\n'), 'GET')).toThrow(/upgrade/);
    expect(() => responseFromBytes(utf8.encode('HTTP/1.1 999 Odd\r\n\r\n'), 'GET')).toThrow(ClientError);
  });
});

// Fuzzing the app-response parser of the lean upstream client (src/http/response-parser.ts): random bytes,
// responses built from random parts (status, version, headers, Content-Length / chunked / close-delimited
// framing — consistent or not, chunk extensions, trailers, interim 1xx), mutations of valid responses and
// every prefix of one. Each input is fed whole, in random pieces and byte by byte (then the connection ends):
// the parser must report the same thing every time — the same head, body, completion and consumed count, or
// an HttpModeError (HTTP_APP_BAD_RESPONSE) — never another exception, and never hold more than its limits.
// A well-formed generated response must decode to the body it was built from.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HttpModeError } from '../../src/http/errors.ts';
import { ResponseParser } from '../../src/http/response-parser.ts';
import { concatBytes } from '../../src/util/bytes.ts';
import { fuzzParams, fuzzTimeout } from './config.ts';
import { bytes, chunked, hexPreview, mutated, prefixes } from './mutate.ts';

const MAX_HEAD = 2048;
const latin1 = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);

interface Report {
  status: number | null;
  headers: string[] | null;
  body: string;
  complete: number;
  consumed: number;
  error: string | null;
}

/** Feeds `pieces`, then ends the connection; what the parser reported (errors as their code). */
function run(pieces: readonly Uint8Array[], isHead: boolean): Report {
  const r: Report = { status: null, headers: null, body: '', complete: 0, consumed: 0, error: null };
  const body: Uint8Array[] = [];
  const parser = new ResponseParser(isHead, MAX_HEAD, {
    head(status, headers) {
      if (r.status !== null) throw new Error('two heads');
      r.status = status;
      r.headers = headers;
    },
    body(chunk) {
      if (r.complete > 0) throw new Error('body after complete');
      body.push(new Uint8Array(chunk));
    },
    complete() {
      r.complete++;
    },
  });
  try {
    for (const p of pieces) {
      const used = parser.execute(Buffer.from(p.buffer, p.byteOffset, p.byteLength));
      if (used < 0 || used > p.length) throw new Error(`consumed ${used} of ${p.length}`);
      r.consumed += used;
      if (parser.done) break;
    }
    parser.finish();
  } catch (err) {
    if (!(err instanceof HttpModeError)) throw err;
    if (err.code !== 'HTTP_APP_BAD_RESPONSE' || err.status !== 502) throw new Error(`unexpected ${err.code}/${err.status}`);
    r.error = err.code;
    // What was consumed before a malformed byte depends on where the pieces were cut: not compared.
    r.consumed = 0;
  }
  if (r.complete > 1) throw new Error('complete twice');
  if ((r.complete === 1) === (r.error !== null)) throw new Error(`complete ${r.complete} with error ${r.error}`);
  r.body = Buffer.from(concatBytes(...body)).toString('latin1');
  return r;
}

/** The same report whole, in the given pieces and byte by byte. */
function consistent(input: Uint8Array, cutsAt: readonly number[], isHead: boolean): Report {
  const whole = run([input], isHead);
  const pieces = run(chunked(input, cutsAt), isHead);
  const single = run(Array.from(input, (b) => Uint8Array.of(b)), isHead);
  for (const [name, other] of [['pieces', pieces], ['byte by byte', single]] as const) {
    if (JSON.stringify(other) !== JSON.stringify(whole)) {
      throw new Error(`${name} differ from whole for ${hexPreview(input)}: ${JSON.stringify(other)} vs ${JSON.stringify(whole)}`);
    }
  }
  return whole;
}

// --- generated responses -------------------------------------------------------------------------------------

const token = fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,12}$/);
const value = fc.stringMatching(/^[\x21-\x7e\x80-\xff]([\t\x20-\x7e\x80-\xff]{0,20}[\x21-\x7e\x80-\xff])?$/);
// eslint-disable-next-line no-control-regex -- bodies are any bytes
const bodyText = fc.stringMatching(/^[\x00-\xff]{0,300}$/);

interface Built {
  bytes: Uint8Array;
  body: string;
  /** Whether the response is well-formed (the parser must decode `body`). */
  valid: boolean;
  isHead: boolean;
  /** The body runs to the end of the connection. */
  closeDelimited: boolean;
}

const built: fc.Arbitrary<Built> = fc
  .record({
    version: fc.constantFrom('HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'http/1.1'),
    status: fc.oneof(fc.constantFrom(200, 204, 304, 404, 500, 100, 101, 103), fc.integer({ min: 0, max: 1000 })),
    reason: fc.constantFrom(' OK', ' ', '', ' Not Found', ' x\ty'),
    extra: fc.array(fc.tuple(token, value), { maxLength: 5 }),
    framing: fc.constantFrom('length', 'chunked', 'close', 'length+chunked', 'two-lengths', 'gzip'),
    body: bodyText,
    cuts: fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 6 }),
    ext: fc.constantFrom('', ';a=b', ' ; q="x"'),
    trailers: fc.array(fc.tuple(token, value), { maxLength: 2 }),
    interim: fc.boolean(),
    isHead: fc.boolean(),
  })
  .map((p) => {
    let head = `${p.version} ${p.status}${p.reason}\r\n`;
    for (const [n, v] of p.extra) head += `${n}: ${v}\r\n`;
    let body = '';
    if (p.framing === 'length' || p.framing === 'two-lengths') {
      head += `Content-Length: ${p.body.length}\r\n`;
      if (p.framing === 'two-lengths') head += `Content-Length: ${p.body.length}\r\n`;
      body = p.body;
    } else if (p.framing === 'chunked' || p.framing === 'length+chunked' || p.framing === 'gzip') {
      head += `Transfer-Encoding: ${p.framing === 'gzip' ? 'gzip, chunked' : 'chunked'}\r\n`;
      if (p.framing === 'length+chunked') head += `Content-Length: ${p.body.length}\r\n`;
      let rest = p.body;
      for (const c of p.cuts) {
        if (rest.length === 0) break;
        const piece = rest.slice(0, c);
        rest = rest.slice(c);
        body += `${piece.length.toString(16)}${p.ext}\r\n${piece}\r\n`;
      }
      if (rest.length > 0) body += `${rest.length.toString(16)}\r\n${rest}\r\n`;
      body += '0\r\n';
      for (const [n, v] of p.trailers) body += `${n}: ${v}\r\n`;
      body += '\r\n';
    } else body = p.body;
    const interim = p.interim ? 'HTTP/1.1 100 Continue\r\n\r\n' : '';
    const framingHeaders = p.extra.some(([n]) => /^(content-length|transfer-encoding)$/i.test(n));
    const noBody = p.isHead || p.status === 204 || p.status === 304;
    const valid =
      p.version === 'HTTP/1.1' && p.status >= 200 && p.status <= 999 && !framingHeaders && (p.framing === 'length' || p.framing === 'chunked' || p.framing === 'close');
    const bytesOut = latin1(`${interim}${head}\r\n${body}`);
    return {
      bytes: bytesOut,
      body: noBody ? '' : p.body,
      valid: valid && bytesOut.length - body.length <= MAX_HEAD + 64,
      isHead: p.isHead,
      closeDelimited: p.framing === 'close' && !noBody,
    };
  });

describe('fuzz: app response parser', () => {
  it(
    'random bytes: the same report in any chunking, a typed error or a response, bounded',
    () => {
      fc.assert(
        fc.property(bytes(512), fc.array(fc.nat({ max: 512 }), { maxLength: 6 }), fc.boolean(), (input, cutsAt, isHead) => {
          consistent(input, cutsAt, isHead);
        }),
        fuzzParams(0.2),
      );
    },
    fuzzTimeout(),
  );

  it(
    'generated responses: well-formed ones decode to their body; every one gives the same report in any chunking',
    () => {
      fc.assert(
        fc.property(built, fc.array(fc.nat({ max: 600 }), { maxLength: 6 }), (b, cutsAt) => {
          const r = consistent(b.bytes, cutsAt, b.isHead);
          if (b.valid && (r.error !== null || r.body !== b.body)) throw new Error(`valid response misread: ${JSON.stringify(r)}`);
        }),
        fuzzParams(0.3),
      );
    },
    fuzzTimeout(),
  );

  it(
    'mutated responses and every prefix: typed errors only, the same report in any chunking',
    () => {
      const valid = built.filter((b) => b.valid);
      fc.assert(
        fc.property(mutated(valid.map((b) => b.bytes)), fc.array(fc.nat({ max: 600 }), { maxLength: 6 }), fc.boolean(), (input, cutsAt, isHead) => {
          consistent(input, cutsAt, isHead);
        }),
        fuzzParams(0.3),
      );
      fc.assert(
        fc.property(valid, (b) => {
          const whole = run([b.bytes], b.isHead);
          for (const p of prefixes(b.bytes)) {
            if (p.length >= whole.consumed) break;
            // A response cut short is an error when the connection ends — unless its body runs to the end of
            // the connection and the head is complete.
            const r = run([p], b.isHead);
            if (r.error === null && !(b.closeDelimited && r.status !== null)) throw new Error(`a prefix of ${p.length} bytes completed: ${hexPreview(p)}`);
          }
        }),
        fuzzParams(0.01),
      );
    },
    fuzzTimeout(),
  );

  it(
    'head lines: accepted and read exactly as the regular-expression grammar says',
    () => {
      // The grammar as regular expressions (what the byte scanner in response-parser.ts implements).
      const STATUS = /^HTTP\/1\.[01] [1-9][0-9][0-9](?: [\t\x20-\x7e\x80-\xff]*)?$/;
      const LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[\t ]*(?:([\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)[\t ]*)?$/;
      // Mostly near-valid lines: a name, a colon, a value of mostly good bytes with a bad one now and then.
      const ch = fc.oneof(
        { weight: 12, arbitrary: fc.constantFrom('a', 'Z', '0', '-', '!', '~', ' ', '\t', ':', '\xe9', '\xff', '"', '(') },
        { weight: 1, arbitrary: fc.constantFrom('\x00', '\x01', '\x7f', '\r', '\n', '\x1f') },
      );
      const text = (max: number): fc.Arbitrary<string> => fc.array(ch, { maxLength: max }).map((c) => c.join(''));
      const line = fc.oneof(
        fc.tuple(text(6), fc.constantFrom(':', ': ', ':\t', ' :', ''), text(10)).map(([n, c, v]) => n + c + v),
        // eslint-disable-next-line no-control-regex -- any bytes
        fc.stringMatching(/^[\x00-\xff]{0,12}$/),
      );
      const status = fc.oneof(
        fc.tuple(fc.constantFrom('HTTP/1.1 ', 'HTTP/1.0 ', 'HTTP/1.2 ', 'HTTP/1.1  ', 'http/1.1 '), fc.constantFrom('200', '404', '099', '20', '2000', '999', '103'), fc.constantFrom('', ' OK', ' ', ' a\tb', ' \x7f', ' \xe9', 'x')).map(
          ([a, b, c]) => a + b + c,
        ),
        line,
      );
      fc.assert(
        fc.property(status, fc.array(line, { maxLength: 3 }), (status, lines) => {
          if (status.includes('\r\n') || lines.some((l) => l.includes('\r\n') || l === '')) return;
          const head = [status, ...lines].join('\r\n');
          if (head.includes('\r\n\r\n') || head.endsWith('\r')) return;
          const r = run([latin1(`${head}\r\n\r\n`)], true);
          const expected = STATUS.test(status) && lines.every((l) => LINE.test(l));
          if ((r.error === null) !== expected && !(expected && /^HTTP\/1\.[01] 1/.test(status))) {
            throw new Error(`${JSON.stringify(head)}: scanner ${r.error ?? 'accepted'}, grammar ${expected ? 'accepts' : 'refuses'}`);
          }
          if (r.error === null && r.headers !== null) {
            const want = lines.flatMap((l) => {
              const m = LINE.exec(l)!;
              return [m[1]!, m[2] ?? ''];
            });
            if (JSON.stringify(r.headers) !== JSON.stringify(want)) throw new Error(`${JSON.stringify(head)}: read ${JSON.stringify(r.headers)}, grammar ${JSON.stringify(want)}`);
          }
        }),
        fuzzParams(0.3),
      );
    },
    fuzzTimeout(),
  );

  it('never holds more than its limits when a head or a line never ends', () => {
    const endless = latin1('HTTP/1.1 200 OK\r\nX-A: ' + 'a'.repeat(64));
    const parser = new ResponseParser(false, MAX_HEAD, { head() {}, body() {}, complete() {} });
    let fed = 0;
    let error: unknown = null;
    try {
      for (let i = 0; i < 1000 && error === null; i++) {
        parser.execute(Buffer.from(endless));
        fed += endless.length;
      }
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(HttpModeError);
    expect(fed).toBeLessThanOrEqual(MAX_HEAD + endless.length);
  });
});

// Fuzzing HTTP mode's request parsing (src/http/forwarder.ts: the in-process http.Server and its stages, ev:
// decryption included) with raw HTTP/1.1 bytes the way a `Data` message delivers them: written (in any
// chunking) into the Duplex that connect() returns, then ended. Random bytes, requests built from random parts
// (methods, targets, versions, header names/values, Content-Length/chunked framing — consistent or not),
// mutations of valid requests and every prefix of one. The answer must be a sequence of well-formed HTTP/1.1
// responses or a clean close, within a bounded time; no stage may fail with an untyped error (logged as
// "stage failed"); a well-formed request reaches the app intact.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable, type Duplex } from 'node:stream';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { createHttpForwarder, type HttpForwarder } from '../../src/http/forwarder.ts';
import { createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';
import type { ForwardContext } from '../../src/responder/forwarder.ts';
import { FUZZ_SEED, fuzzParams, fuzzTimeout } from './config.ts';
import { expectBoundedHeap } from './harness.ts';
import { chunked, cuts, hexPreview, mutated, prefixes } from './mutate.ts';

/** Longest a single exchange may take before it counts as a hang (generous: a loaded 2-core machine). */
const CASE_TIMEOUT_MS = 10_000;

const keyring = Keyring.generate();
const TOKEN = encryptValue('secret-4111', keyring.publicKeys());

// --- the app and the forwarder -------------------------------------------------------------------------------

let app: http.Server;
let fwd: HttpForwarder;
/** Operational log lines at level error or above (a stage failed with an untyped error). */
const errors: string[] = [];
let appRequests = 0;

const ctx: ForwardContext = {
  sessionId: 'fuzz',
  kind: 'data',
  handshakeHash: new Uint8Array(32).fill(3),
  attest: () => Promise.resolve(Uint8Array.of(1, 2, 3)),
  client: { address: '203.0.113.9', port: 4242, family: 'IPv4' },
};

beforeAll(async () => {
  // The app echoes what reached it: method, target and a digest of the body.
  app = http.createServer((req, res) => {
    appRequests++;
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      const body = Buffer.concat(parts);
      const out = JSON.stringify({ method: req.method, url: req.url, length: body.length, body: body.toString('latin1') });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    });
  });
  app.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        const rec = JSON.parse(line) as { level?: number };
        if ((rec.level ?? 0) >= 50) errors.push(line);
      }
      cb();
    },
  });
  fwd = createHttpForwarder({
    appPort: (app.address() as AddressInfo).port,
    trxLogging: false,
    logger: pino({ level: 'warn' }, sink),
    decrypt: createDecryptStage(keyring),
    headersTimeoutMs: 5_000,
    upstreamTimeoutMs: 5_000,
    appStartupGraceMs: 0,
  });
});

afterAll(async () => {
  await fwd?.close();
  await new Promise<void>((resolve) => {
    app.closeAllConnections();
    app.close(() => resolve());
  });
});

// --- one exchange ----------------------------------------------------------------------------------------------

interface Response {
  status: number;
  headers: Map<string, string>;
  body: Buffer;
}

/** Writes `chunks`, ends, and collects everything until the stream ends or closes. Rejects on a hang. */
async function exchange(chunks: Uint8Array[]): Promise<Buffer> {
  const d: Duplex = await fwd.connect(ctx);
  const out: Buffer[] = [];
  return new Promise<Buffer>((resolve, reject) => {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      d.destroy();
      resolve(Buffer.concat(out));
    };
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      d.destroy();
      reject(new Error(`no end of the answer within ${CASE_TIMEOUT_MS} ms (${Buffer.concat(out).length} bytes so far)`));
    }, CASE_TIMEOUT_MS);
    d.on('data', (c: Buffer) => out.push(c));
    d.on('end', finish);
    d.on('close', finish);
    d.on('error', finish);
    for (const c of chunks) d.write(c);
    d.end();
  });
}

/**
 * Parses `raw` as consecutive HTTP/1.1 responses; throws on anything that is not one. `head`: the first request
 * was HEAD, so its response carries no body (unless it is one of the raw refusals, which always have one).
 */
function parseResponses(raw: Buffer, head = false): Response[] {
  const out: Response[] = [];
  let pos = 0;
  while (pos < raw.length) {
    const end = raw.indexOf('\r\n\r\n', pos);
    if (end < 0) throw new Error(`response head without an end: ${hexPreview(raw.subarray(pos))}`);
    const lines = raw.subarray(pos, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.1 ([1-5][0-9]{2}) [^\r\n]*$/.exec(lines[0]!);
    if (m === null) throw new Error(`not an HTTP/1.1 status line: ${JSON.stringify(lines[0])}`);
    const status = Number(m[1]);
    const headers = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0 || !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(line.slice(0, i))) throw new Error(`malformed header line ${JSON.stringify(line)}`);
      const name = line.slice(0, i).toLowerCase();
      const value = line.slice(i + 1).trim();
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
    }
    pos = end + 4;
    let body: Buffer;
    const declared = Number(headers.get('content-length') ?? NaN);
    const headAnswer = head && out.length === 0 && raw.length - pos !== declared;
    if (headAnswer || status === 204 || status === 304 || (status >= 100 && status < 200)) {
      body = Buffer.alloc(0);
    } else if (headers.get('transfer-encoding')?.toLowerCase() === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        const le = raw.indexOf('\r\n', pos);
        if (le < 0) throw new Error('chunk size line without an end');
        const size = parseInt(raw.subarray(pos, le).toString('latin1'), 16);
        if (!Number.isInteger(size) || size < 0) throw new Error('bad chunk size');
        pos = le + 2;
        if (size === 0) {
          const te = raw.indexOf('\r\n', pos);
          if (te !== pos) throw new Error('trailers are not expected');
          pos += 2;
          break;
        }
        if (raw.length < pos + size + 2) throw new Error('chunk runs past the end');
        parts.push(raw.subarray(pos, pos + size));
        pos += size + 2;
      }
      body = Buffer.concat(parts);
    } else if (headers.has('content-length')) {
      const n = Number(headers.get('content-length'));
      if (!Number.isSafeInteger(n) || n < 0) throw new Error(`bad content-length ${headers.get('content-length')}`);
      if (raw.length < pos + n) throw new Error(`body shorter than its content-length (${raw.length - pos} < ${n})`);
      body = raw.subarray(pos, pos + n);
      pos += n;
    } else {
      body = raw.subarray(pos);
      pos = raw.length;
    }
    out.push({ status, headers, body });
  }
  return out;
}

/** The contract on one input: well-formed responses or a clean close; no stage failed untyped. */
async function check(chunks: Uint8Array[]): Promise<Response[]> {
  const before = errors.length;
  const raw = await exchange(chunks);
  const start = Buffer.concat(chunks.slice(0, 5)).subarray(0, 5).toString('latin1');
  const responses = parseResponses(raw, start === 'HEAD ');
  if (errors.length > before) throw new Error(`a stage failed with an untyped error: ${errors.slice(before).join(' | ')}`);
  // 501: a Transfer-Encoding other than chunked (HTTP_UNSUPPORTED_TRANSFER_CODING), a typed refusal.
  for (const r of responses) if (r.status >= 500 && r.status !== 501 && r.status !== 502 && r.status !== 503 && r.status !== 504) throw new Error(`answered ${r.status}`);
  return responses;
}

// --- generators ------------------------------------------------------------------------------------------------

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'get', 'PRI', 'CONNECT', 'TRACE', 'FOO', ''];
const tchar = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&\'*+^`|~'.split(''));
const headerName = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('Host', 'Content-Type', 'Accept', 'X-Forwarded-For', 'Forwarded', 'X-Request-Id', 'Authorization', 'Cookie', 'Expect', 'Connection', 'Upgrade', 'TE', 'Trailer', 'X-Secret') },
  { weight: 2, arbitrary: fc.string({ unit: tchar, minLength: 1, maxLength: 12 }) },
  { weight: 1, arbitrary: fc.constantFrom('Bad Name', 'Bad:Name', '', 'Ünï', 'X\u0000Y', ' Leading') },
);
const headerValue = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 1, arbitrary: fc.constantFrom(TOKEN, `Bearer ${TOKEN}`, 'close', 'keep-alive', 'Upgrade', 'websocket', '100-continue', 'chunked', 'gzip, chunked', 'ev:Tk9D:AAAA:AAAA:AAAA:$', '\u00ff\u00fe', 'a\rb', 'a\nb', 'x'.repeat(200)) },
);
const target = fc.oneof(
  { weight: 4, arbitrary: fc.webPath().map((p) => (p === '' ? '/' : p)) },
  { weight: 1, arbitrary: fc.constantFrom('/.well-known/attestation', '/.well-known/health', '*', 'http://other.test/x', '//x', '/%00', '/a b', '/\u00e9', '') },
);
const version = fc.oneof({ weight: 8, arbitrary: fc.constant('HTTP/1.1') }, { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2', 'HTTP/0.9', 'http/1.1', '') });
const jsonBody = fc.oneof(
  fc.constant(`{"card":"${TOKEN}","n":1}`),
  fc.json({ maxDepth: 2 }),
  fc.string({ maxLength: 60 }),
  fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b).toString('latin1')),
);
type Framing = 'content-length' | 'chunked' | 'none' | 'wrong-length' | 'both' | 'bad-chunk';
const framing = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<Framing>('content-length', 'chunked', 'none') },
  { weight: 1, arbitrary: fc.constantFrom<Framing>('wrong-length', 'both', 'bad-chunk') },
);

function frameBody(body: string, how: Framing, skew: number): { headers: string; bytes: string } {
  const len = Buffer.byteLength(body, 'latin1');
  const chunkedBody = (bad: boolean) => (len === 0 ? '' : `${bad ? 'zz' : len.toString(16)}\r\n${body}\r\n`) + '0\r\n\r\n';
  switch (how) {
    case 'content-length':
      return { headers: `Content-Length: ${len}\r\n`, bytes: body };
    case 'chunked':
      return { headers: 'Transfer-Encoding: chunked\r\n', bytes: chunkedBody(false) };
    case 'none':
      return { headers: '', bytes: '' };
    case 'wrong-length':
      return { headers: `Content-Length: ${Math.max(0, len + skew)}\r\n`, bytes: body };
    case 'both':
      return { headers: `Content-Length: ${len}\r\nTransfer-Encoding: chunked\r\n`, bytes: chunkedBody(false) };
    case 'bad-chunk':
      return { headers: 'Transfer-Encoding: chunked\r\n', bytes: chunkedBody(true) };
  }
}

/** A request built from random parts, and whether it is well-formed (then the app must see it intact). */
const builtRequest = fc
  .record({
    method: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE') }, { weight: 1, arbitrary: fc.constantFrom(...METHODS) }),
    target,
    version,
    host: fc.oneof({ weight: 8, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.constantFrom(0, 2) }),
    headers: fc.array(fc.tuple(headerName, headerValue), { maxLength: 5 }),
    body: jsonBody,
    framing,
    skew: fc.integer({ min: -5, max: 5 }),
    connection: fc.constantFrom('close', 'close', 'keep-alive', null),
  })
  .map((r) => {
    const { headers: framingHeaders, bytes } = frameBody(r.method === 'GET' && r.framing === 'none' ? '' : r.body, r.framing, r.skew);
    let head = `${r.method} ${r.target} ${r.version}\r\n`;
    for (let i = 0; i < r.host; i++) head += `Host: app${i}.test\r\n`;
    for (const [n, v] of r.headers) head += `${n}: ${v}\r\n`;
    if (r.connection !== null) head += `Connection: ${r.connection}\r\n`;
    const raw = Buffer.from(head + framingHeaders + '\r\n' + bytes, 'latin1');
    const plain =
      ['GET', 'POST', 'PUT', 'DELETE'].includes(r.method) && r.version === 'HTTP/1.1' && r.host === 1 && r.headers.length === 0 &&
      ['content-length', 'chunked', 'none'].includes(r.framing) && /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/%?#]*$/.test(r.target) && !r.target.includes('#') &&
      !r.target.startsWith('/.well-known/') && !r.body.includes('ev:');
    return { raw: new Uint8Array(raw), plain, method: r.method, target: r.target, body: r.framing === 'none' ? '' : r.body };
  });

const validRaw = builtRequest.filter((r) => r.plain).map((r) => r.raw);

describe('HTTP mode request parsing under fuzzing', () => {
  it(
    'answers requests built from random parts with well-formed responses, and passes well-formed ones intact',
    async () => {
      let intact = 0;
      await fc.assert(
        fc.asyncProperty(builtRequest, cuts, async (r, cutPoints) => {
          const responses = await check(chunked(r.raw, cutPoints));
          if (r.plain) {
            const first = responses[0];
            if (first === undefined || first.status !== 200) throw new Error(`a well-formed request got ${first?.status ?? 'no answer'}: ${hexPreview(r.raw)}`);
            const echo = JSON.parse(first.body.toString('utf8')) as { method: string; url: string; body: string };
            if (echo.method !== r.method || echo.url !== r.target || echo.body !== r.body) throw new Error(`the app saw ${JSON.stringify(echo)} for ${hexPreview(r.raw)}`);
            intact++;
          }
        }),
        fuzzParams(0.3),
      );
      expect(intact).toBeGreaterThan(0);
    },
    fuzzTimeout(180_000),
  );

  it(
    'answers random bytes and mutated requests with well-formed responses or a clean close',
    async () => {
      const input = fc.oneof(
        fc.uint8Array({ maxLength: 120, size: 'max' }),
        mutated(builtRequest.map((r) => r.raw)),
      );
      await fc.assert(
        fc.asyncProperty(input, cuts, async (b, cutPoints) => {
          await check(chunked(b, cutPoints));
        }),
        fuzzParams(0.4),
      );
    },
    fuzzTimeout(180_000),
  );

  it(
    'answers every proper prefix of a valid request, then the client ending, with a response or a clean close',
    async () => {
      await fc.assert(
        fc.asyncProperty(validRaw, async (raw) => {
          const all = [...prefixes(raw)];
          // every prefix of the head; inside the body, a sample (the parser state there is a counter)
          const headEnd = Buffer.from(raw).indexOf('\r\n\r\n') + 4;
          for (const p of all.filter((x, i) => x.length <= headEnd || i % 7 === 0)) await check([p]);
        }),
        fuzzParams(0.005),
      );
    },
    fuzzTimeout(180_000),
  );

  it(
    'retains no memory across thousands of hostile requests',
    async () => {
      const before = appRequests;
      await expectBoundedHeap(async (pass) => {
        await fc.assert(
          fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 120, size: 'max' }), mutated(builtRequest.map((r) => r.raw))), async (b) => {
            await check([b]);
          }),
          { ...fuzzParams(0.15), seed: FUZZ_SEED + pass },
        );
      }, 8 * 1024 * 1024);
      expect(appRequests).toBeGreaterThan(before);
      expect(fwd.connectionCount).toBe(0);
    },
    fuzzTimeout(180_000),
  );
});

// The ev: decrypt stage through the real HTTP pipeline: an echo app on 127.0.0.1 reports exactly what it
// received (head and body); values are encrypted with our own encoder here (the real @evervault/sdk is
// driven in test/crypto/sdk-auto-decrypt.test.ts). Logs are captured (pino to memory + the trx sink) and
// searched for plaintext.
import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import pino from 'pino';
import { DecryptScheduler } from '../../src/crypto/decrypt-scheduler.ts';
import { EV_DECRYPT_MESSAGE } from '../../src/crypto/errors.ts';
import { EvEncryptor, encryptValue } from '../../src/crypto/ev-format.ts';
import { decryptJsonTokens } from '../../src/crypto/json-decrypt.ts';
import { MAX_DEPTH } from '../../src/crypto/json-lex.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder, HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { MemoryLogSink } from '../../src/http/log-sink.ts';
import { REFUSALS_MESSAGE, bodyKind, createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';
import { RateLimitedLog } from '../../src/util/rate-limited-log.ts';
import type { DecryptStage } from '../../src/http/stages/decrypt.ts';
import { fromBase64, toBase64 } from '../../src/util/bytes.ts';
import { failingValues, headerUnsafeValue } from '../crypto/ev-forge.ts';
import { ResponseReader, dataRequest, fakeContext, json, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

const keyring = Keyring.generate();
const otherKeyring = Keyring.generate();
const pub = keyring.publicKeys();

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

interface Echo {
  cl: string | null;
  te: string | null;
  rawHeaders: string[];
  body: string;
  bytes: number;
}

/** Answers with what it received: Content-Length, Transfer-Encoding, raw headers, body (as UTF-8). */
function echoApp(): Promise<TestApp> {
  return startApp((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const echo: Echo = {
        cl: req.headers['content-length'] ?? null,
        te: req.headers['transfer-encoding'] ?? null,
        rawHeaders: req.rawHeaders,
        body: body.toString('utf8'),
        bytes: body.length,
      };
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(echo));
    });
  });
}

/** An operational logger writing into `lines` (everything from trace up). */
function capturedLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: pino({ level: 'trace' }, { write: (s: string) => void lines.push(s) }), lines };
}

interface Harness {
  sink: MemoryLogSink;
  lines: string[];
}

async function setup(opts: Partial<HttpModeOptions> = {}, stage: DecryptStage = createDecryptStage(keyring)): Promise<Harness> {
  app ??= await echoApp();
  const sink = createMemoryLogSink();
  const { logger, lines } = capturedLogger();
  fwd = createHttpForwarder({ appPort: app.port, logger, logSink: sink, decrypt: stage, ...opts });
  return { sink, lines };
}

function post(body: string | Buffer, opts: { type?: string | null; headers?: string } = {}): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const type = opts.type === undefined ? 'application/json' : opts.type;
  const head =
    `POST /pay?card=1 HTTP/1.1\r\nHost: app.test\r\n` +
    (type === null ? '' : `Content-Type: ${type}\r\n`) +
    `Content-Length: ${b.length}\r\n${opts.headers ?? ''}Connection: close\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), b]);
}

function chunkedPost(parts: string[], type = 'application/json'): Buffer {
  let raw = `POST /pay HTTP/1.1\r\nHost: app.test\r\nContent-Type: ${type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`;
  for (const p of parts) raw += `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`;
  return Buffer.from(raw + '0\r\n\r\n', 'utf8');
}

function echoOf(res: { status: number; body: Buffer }): Echo {
  expect(res.status).toBe(200);
  return json(res.body) as Echo;
}

/** Waits for the transaction record(s) written when the exchange finishes. */
async function records(sink: MemoryLogSink, n = 1): Promise<Record<string, unknown>[]> {
  for (let i = 0; i < 100 && sink.records.length < n; i++) await new Promise((r) => setTimeout(r, 10));
  return sink.records;
}

function headerValues(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!);
  return out;
}

/** Rewrites one base64 segment of a token (0-based among IV, EPK, CIPHERTEXT) through `edit`. */
function editSegment(token: string, which: 0 | 1 | 2, edit: (b: Uint8Array) => Uint8Array): string {
  const parts = token.slice(0, -2).split(':');
  const idx = parts.length - 3 + which;
  parts[idx] = toBase64(edit(fromBase64(parts[idx]!))).replace(/=+$/, '');
  return parts.join(':') + ':$';
}
const flip = (at: (len: number) => number) => (b: Uint8Array) => {
  const c = Uint8Array.from(b);
  c[at(c.length)]! ^= 0x01;
  return c;
};

// Plaintexts are unique markers so the logs can be searched for them.
const SECRET = 'PLAINTEXT-4242-4242-4242';
const SECRET_NUMBER = 987654321.5;

describe('bodyKind', () => {
  it('treats application/json and application/*+json with UTF-8 or no charset as JSON, everything else as pass-through', () => {
    for (const t of ['application/json', 'Application/JSON', 'application/json; charset=utf-8', 'application/json;charset="UTF-8"', 'application/vnd.api+json', 'application/problem+json; charset=utf8', ' application/json ; foo=bar']) {
      expect(bodyKind(t), t).toBe('json');
    }
    for (const t of [undefined, '', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/x-ndjson', 'application/jsonp', 'text/json', 'application/json; charset=iso-8859-1', 'application/json; charset=utf-16', 'application/json/x', 'json']) {
      expect(bodyKind(t), String(t)).toBe('passthrough');
    }
    expect(bodyKind('application/json', 'gzip')).toBe('passthrough');
    expect(bodyKind('application/json', 'identity')).toBe('json');
    expect(bodyKind('application/json', '')).toBe('json');
  });
});

describe('decrypt stage: JSON bodies', () => {
  it('replaces each token by its typed value and forwards the new Content-Length; the trx record counts the fields', async () => {
    const { sink, lines } = await setup();
    const enc = new EvEncryptor(pub);
    const k1 = new EvEncryptor(pub, { curve: 'secp256k1', role: 'pii' });
    const body = JSON.stringify({
      card: enc.encrypt(SECRET),
      amount: enc.encrypt(SECRET_NUMBER),
      big: enc.encryptJsonNumber('12345678901234567890'),
      ok: k1.encrypt(true),
      nested: { list: [k1.encrypt('zürich — 東京 🚀'), enc.encrypt(false), null, 7, 'plain'], quote: enc.encrypt('say "hi" \\ bye') },
    });
    const res = await dataRequest(fwd!, post(body));
    const echo = echoOf(res);
    expect(echo.body).toBe(`{"card":"${SECRET}","amount":${SECRET_NUMBER},"big":12345678901234567890,"ok":true,"nested":{"list":["zürich — 東京 🚀",false,null,7,"plain"],"quote":"say \\"hi\\" \\\\ bye"}}`);
    expect(JSON.parse(echo.body)).toEqual({ card: SECRET, amount: SECRET_NUMBER, big: Number('12345678901234567890'), ok: true, nested: { list: ['zürich — 東京 🚀', false, null, 7, 'plain'], quote: 'say "hi" \\ bye' } });
    expect(Number(echo.cl)).toBe(echo.bytes);
    expect(echo.te).toBeNull();
    const [rec] = await records(sink);
    expect(rec).toMatchObject({ decrypted_fields: 7, status: 200 });
    const logs = JSON.stringify(sink.records) + lines.join('');
    expect(logs).not.toContain(SECRET);
    expect(logs).not.toContain(String(SECRET_NUMBER));
  });

  it('decrypts a chunked JSON request and forwards it with a Content-Length instead of Transfer-Encoding', async () => {
    const { sink } = await setup();
    const t = encryptValue(SECRET, pub);
    const body = JSON.stringify({ a: t, b: encryptValue(12, pub) });
    // Chunk boundaries fall inside the tokens.
    const res = await dataRequest(fwd!, chunkedPost([body.slice(0, 10), body.slice(10, 60), body.slice(60)]));
    const echo = echoOf(res);
    expect(echo.body).toBe(`{"a":"${SECRET}","b":12}`);
    expect(echo.cl).toBe(String(Buffer.byteLength(echo.body)));
    expect(echo.te).toBeNull();
    expect((await records(sink))[0]).toMatchObject({ decrypted_fields: 2 });
  });

  it('decrypts a top-level token and tokens whose slashes are JSON-escaped, and leaves a token used as an object key as it is', async () => {
    await setup();
    const top = await dataRequest(fwd!, post(JSON.stringify(encryptValue(5, pub))));
    expect(echoOf(top).body).toBe('5');
    const key = encryptValue(1, pub);
    const keyed = await dataRequest(fwd!, post(`{${JSON.stringify(key)} : ${JSON.stringify(encryptValue(true, pub))}}`));
    expect(JSON.parse(echoOf(keyed).body)).toEqual({ [key]: true }); // failed before the fix: { "1": true }
    let slashed = encryptValue(SECRET, pub);
    while (!slashed.includes('/')) slashed = encryptValue(SECRET, pub);
    const escaped = await dataRequest(fwd!, post(`["${slashed.replaceAll('/', '\\/')}"]`));
    expect(JSON.parse(echoOf(escaped).body)).toEqual([SECRET]);
  });

  it('decrypts a body with hundreds of values, each with its own ephemeral key, to the same result', async () => {
    const { sink } = await setup();
    const values = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? i : i % 3 === 1 ? `v"${i}":\\` : i % 2 === 0));
    const body = JSON.stringify({
      rows: values.map((v, i) => ({ k: encryptValue('k', pub), v: encryptValue(v, pub, { curve: i % 2 === 0 ? 'p256' : 'secp256k1' }), pad: '"ev:x:$" : ' })),
    });
    const echo = echoOf(await dataRequest(fwd!, post(body)));
    expect(JSON.parse(echo.body)).toEqual({ rows: values.map((v) => ({ k: 'k', v, pad: '"ev:x:$" : ' })) });
    // Decrypted in slices (with yields in between): identical to one decryptJsonTokens pass.
    expect(echo.body).toBe(decryptJsonTokens(body, keyring).json);
    expect((await records(sink))[0]).toMatchObject({ decrypted_fields: 600 });
  });

  it('keeps serving other requests while a body with many distinct-key values is being decrypted', { timeout: 60_000 }, async () => {
    const inner = createDecryptStage(keyring);
    let started!: () => void;
    const decrypting = new Promise<void>((r) => (started = r));
    const order: string[] = [];
    await setup({}, (input) => {
      const out = inner(input);
      if (out instanceof Promise) started();
      return out;
    });
    const body = JSON.stringify(Array.from({ length: 400 }, (_, i) => encryptValue(i, pub, { curve: i % 2 === 0 ? 'p256' : 'secp256k1' })));
    const big = dataRequest(fwd!, post(body)).then((r) => {
      order.push('big');
      return r;
    });
    await decrypting;
    const small = await dataRequest(fwd!, post('{"small":true}'));
    order.push('small');
    expect(echoOf(small).body).toBe('{"small":true}');
    expect(JSON.parse(echoOf(await big).body)).toEqual(Array.from({ length: 400 }, (_, i) => i));
    expect(order).toEqual(['small', 'big']);
  });

  it('forwards look-alike strings that fail the grammar unchanged, byte for byte', async () => {
    const { sink } = await setup();
    const real = encryptValue(SECRET, pub);
    const lookalikes = [
      'ev:not-a-token',
      'ev:Tk9D:abc:$',
      real.slice(0, -2), // no :$
      real.replace('ev:Tk9D', 'ev:T1JL'), // a version Evervault knows but we do not support
      real.replace(/:[^:]+:[^:]+:\$$/, ':AAAA:BBBB:$'), // wrong EPK/ciphertext lengths
      `prefix ${real}`, // a token inside a larger string is not a value
    ];
    const body = ` {"x": ${JSON.stringify(lookalikes)}, "n":  1.50}\n`;
    const echo = echoOf(await dataRequest(fwd!, post(body)));
    expect(echo.body).toBe(body);
    expect(echo.cl).toBe(String(Buffer.byteLength(body)));
    expect((await records(sink))[0]).toMatchObject({ decrypted_fields: 0 });
  });

  it('forwards a JSON body without tokens untouched and an empty JSON body as is', async () => {
    await setup();
    const body = '{"a":"b", "ev":"ev:" }';
    expect(echoOf(await dataRequest(fwd!, post(body))).body).toBe(body);
    const empty = echoOf(await dataRequest(fwd!, post('')));
    expect(empty.bytes).toBe(0);
  });

  it('forwards a not-quite-JSON body without tokens byte for byte, and refuses one that holds a token with 400 (nothing forwarded)', async () => {
    const { sink } = await setup();
    for (const body of ['{"a": 1,}', "{'a': 'ev:not-a-token'}", 'not json at all', '{"a": "ev:Tk9D:x:$"']) {
      expect(echoOf(await dataRequest(fwd!, post(body))).body).toBe(body);
    }
    const t = encryptValue(SECRET, pub);
    const typed = encryptValue(5, pub, { curve: 'secp256k1', role: 'r', debug: true });
    for (const body of [`{"a": "${t}",}`, `{'a': '${t}'}`, `{"a": ${t}}`, `{"a": "${t.replaceAll('/', '\\/')}"`, `[1, ${typed}]`, `x"${t}"`]) {
      const res = await dataRequest(fwd!, post(body));
      expect(res.status, body.slice(0, 12)).toBe(400);
      expect(json(res.body)).toMatchObject({ error: 'HTTP_BAD_REQUEST', message: expect.stringContaining('not valid UTF-8 JSON') as unknown });
    }
    // Pathological look-alikes are scanned in linear time and forwarded as they are.
    for (const body of ['{"a": ' + 'ev:'.repeat(300_000) + ':$', '[' + 'ev:A'.repeat(200_000) + ':$' + ':$'.repeat(100_000)]) {
      expect(echoOf(await dataRequest(fwd!, post(body))).bytes).toBe(body.length);
    }
    // Invalid UTF-8 with a token is not JSON either.
    const bad = Buffer.concat([Buffer.from(`{"a":"${t}","b":"`), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    expect((await dataRequest(fwd!, post(bad))).status).toBe(400);
    // Forwarded: the 4 token-free bodies and the 2 pathological ones; none of the 7 with a token.
    expect(app!.seen.length).toBe(6);
    expect(JSON.stringify(await records(sink, 13))).not.toContain(SECRET);
  });

  it('treats a body nested deeper than MAX_DEPTH arrays as not JSON: forwarded as is without a token, 400 with one', async () => {
    const { sink } = await setup();
    const t = JSON.stringify(encryptValue(SECRET, pub));
    const wrap = (levels: number, core: string): string => '['.repeat(levels) + core + ']'.repeat(levels);
    expect(echoOf(await dataRequest(fwd!, post(wrap(MAX_DEPTH, t)))).body).toBe(wrap(MAX_DEPTH, JSON.stringify(SECRET)));
    const plain = wrap(20_000, '"ev:not-a-token"'); // under the pool's threshold: checked on the event loop
    expect(echoOf(await dataRequest(fwd!, post(plain))).body).toBe(plain);
    const res = await dataRequest(fwd!, post(wrap(MAX_DEPTH + 1, t))); // failed before the fix: decrypted, 200
    expect(res.status).toBe(400);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_BAD_REQUEST', message: expect.stringContaining(`nested at most ${MAX_DEPTH} levels`) as unknown });
    expect(app!.seen.length).toBe(2);
    expect(JSON.stringify(await records(sink, 3))).not.toContain(SECRET);
  });

  it('keeps a UTF-8 BOM and decrypts the document after it', async () => {
    await setup();
    const echo = echoOf(await dataRequest(fwd!, post(`\ufeff{"a":"${encryptValue(SECRET, pub)}"}`)));
    expect(echo.body).toBe(`\ufeff{"a":"${SECRET}"}`);
  });

  it('decrypts application/*+json with parameters and passes a non-UTF-8 charset and a compressed body through untouched', async () => {
    await setup();
    const t = encryptValue(SECRET, pub);
    const body = `{"a":"${t}"}`;
    expect(echoOf(await dataRequest(fwd!, post(body, { type: 'application/vnd.api+json; charset="UTF-8"' }))).body).toBe(`{"a":"${SECRET}"}`);
    expect(echoOf(await dataRequest(fwd!, post(body, { type: 'application/json; charset=iso-8859-1' }))).body).toBe(body);
    expect(echoOf(await dataRequest(fwd!, post(body, { headers: 'Content-Encoding: gzip\r\n' }))).body).toBe(body);
  });

  it('passes form, text and untyped bodies holding tokens through untouched (no content-type-blind scanning)', async () => {
    const { sink } = await setup();
    const t = encryptValue(SECRET, pub);
    for (const [type, body] of [
      ['application/x-www-form-urlencoded', `card=${t}&n=1`],
      ['text/plain', `"${t}"`],
      ['multipart/form-data; boundary=xx', `--xx\r\nContent-Disposition: form-data; name="a"\r\n\r\n${t}\r\n--xx--\r\n`],
      [null, `{"a":"${t}"}`],
    ] as const) {
      const echo = echoOf(await dataRequest(fwd!, post(body, { type })));
      expect(echo.body).toBe(body);
      expect(echo.cl).toBe(String(Buffer.byteLength(body)));
    }
    expect((await records(sink, 4)).map((r) => r.decrypted_fields)).toEqual([0, 0, 0, 0]);
  });

  it('refuses several Content-Type fields on a request with a body (400, nothing forwarded)', async () => {
    await setup();
    const res = await dataRequest(fwd!, post(`{"a":"${encryptValue(1, pub)}"}`, { type: 'text/plain', headers: 'Content-Type: application/json\r\n' }));
    expect(res.status).toBe(400);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_BAD_REQUEST' });
    expect(app!.seen).toHaveLength(0);
  });

  it('answers 413 for JSON over the cap (declared or chunked) and forwards nothing', async () => {
    await setup({ maxBufferedBodyBytes: 4096 });
    const big = JSON.stringify({ pad: 'x'.repeat(5000), a: encryptValue(1, pub) });
    const declared = await dataRequest(fwd!, post(big));
    expect(declared.status).toBe(413);
    expect(json(declared.body)).toMatchObject({ error: 'HTTP_BODY_TOO_LARGE' });
    const chunked = await dataRequest(fwd!, chunkedPost(Array.from({ length: 6 }, (_, i) => big.slice(i * 1000, (i + 1) * 1000))));
    expect(chunked.status).toBe(413);
    // The stage's own cap wins over the pipeline's.
    await fwd!.close();
    await setup({ maxBufferedBodyBytes: 1 << 20 }, createDecryptStage(keyring, { maxBufferedBodyBytes: 100 }));
    expect((await dataRequest(fwd!, post(big))).status).toBe(413);
    expect(app!.seen).toHaveLength(0);
    // A non-JSON body over the cap is not buffered, so it is not refused.
    expect(echoOf(await dataRequest(fwd!, post(big, { type: 'text/plain' }))).bytes).toBe(big.length);
  });

  it('rejects a bad maxBufferedBodyBytes option', () => {
    expect(() => createDecryptStage(keyring, { maxBufferedBodyBytes: -1 })).toThrow(/non-negative integer/);
  });
});

describe('decrypt stage: per-request cap on encrypted fields', () => {
  /** A keyring whose ECDH calls are counted (every distinct ephemeral key costs one). */
  function countingKeyring(): { ring: Keyring; ecdh: () => number } {
    const ring = Keyring.generate();
    const real = ring.sharedSecret.bind(ring);
    let calls = 0;
    ring.sharedSecret = (curve, peer) => {
      calls++;
      return real(curve, peer);
    };
    return { ring, ecdh: () => calls };
  }

  it('refuses a body with one value over the cap with 413 before any ECDH, and forwards nothing', async () => {
    const { ring, ecdh } = countingKeyring();
    const { sink } = await setup({}, createDecryptStage(ring, { maxFields: 8 }));
    const values = Array.from({ length: 9 }, (_, i) => encryptValue(i, ring.publicKeys(), { curve: i % 2 === 0 ? 'p256' : 'secp256k1' }));
    const res = await dataRequest(fwd!, post(JSON.stringify({ values })));
    expect(res.status).toBe(413);
    expect(json(res.body)).toMatchObject({
      error: 'HTTP_TOO_MANY_ENCRYPTED_FIELDS',
      message: 'too many encrypted fields in one request (more than 8, the most the agent decrypts per request); nothing was forwarded',
    });
    expect(ecdh()).toBe(0);
    expect(app!.seen).toHaveLength(0);
    expect((await records(sink))[0]).toMatchObject({ status: 413, error: 'HTTP_TOO_MANY_ENCRYPTED_FIELDS' });
    // Exactly at the cap: decrypted (one ECDH per distinct ephemeral key), the session's next request works.
    const atCap = await dataRequest(fwd!, post(JSON.stringify({ values: values.slice(0, 8) })));
    expect(JSON.parse(echoOf(atCap).body)).toEqual({ values: [0, 1, 2, 3, 4, 5, 6, 7] });
    expect(ecdh()).toBe(8);
  });

  it('counts look-alikes that fail the grammar toward the cap (a body of near-tokens costs no more than one of values); under it they pass unchanged', async () => {
    await setup({}, createDecryptStage(keyring, { maxFields: 4 }));
    const fake = (n: number): string[] => Array.from({ length: n }, (_, i) => `ev:Tk9D:${i}:$`);
    const over = await dataRequest(fwd!, post(JSON.stringify({ a: encryptValue(1, pub), b: encryptValue(2, pub), fake: fake(3) })));
    expect(over.status).toBe(413);
    expect(json(over.body)).toMatchObject({ error: 'HTTP_TOO_MANY_ENCRYPTED_FIELDS' });
    const echo = echoOf(await dataRequest(fwd!, post(JSON.stringify({ a: encryptValue(1, pub), b: encryptValue(2, pub), fake: fake(2) }))));
    expect(JSON.parse(echo.body)).toEqual({ a: 1, b: 2, fake: fake(2) });
  });

  it('applies the default cap of 1024 and answers 1025 values at once without decrypting any', { timeout: 30_000 }, async () => {
    const { ring, ecdh } = countingKeyring();
    await setup({}, createDecryptStage(ring));
    // One ephemeral key for all (as the SDK does): cheap to build; the cap counts values, not keys.
    const enc = new EvEncryptor(ring.publicKeys());
    const over = JSON.stringify(Array.from({ length: 1025 }, (_, i) => enc.encrypt(i)));
    const res = await dataRequest(fwd!, post(over));
    expect(res.status).toBe(413);
    expect((json(res.body) as { message: string }).message).toContain('more than 1024');
    expect(ecdh()).toBe(0);
    expect(app!.seen).toHaveLength(0);
    const at = JSON.stringify(Array.from({ length: 1024 }, (_, i) => enc.encrypt(i)));
    expect(JSON.parse(echoOf(await dataRequest(fwd!, post(at))).body)).toHaveLength(1024);
  });

  it('counts header and body values together; header values over the cap are refused before any is decrypted', async () => {
    const { ring, ecdh } = countingKeyring();
    await setup({}, createDecryptStage(ring, { maxFields: 3 }));
    const rp = ring.publicKeys();
    const headers = `X-A: ${encryptValue('a', rp)}\r\nX-B: ${encryptValue('b', rp)}\r\n`;
    // 2 in headers + 2 in the body > 3: refused, nothing forwarded.
    const mixed = await dataRequest(fwd!, post(JSON.stringify([encryptValue(1, rp), encryptValue(2, rp)]), { headers }));
    expect(mixed.status).toBe(413);
    expect(app!.seen).toHaveLength(0);
    // 4 in headers (one field holding two) > 3: refused before reading the body or decrypting anything.
    const before = ecdh();
    const many = `${headers}X-C: ${encryptValue('c', rp)} ${encryptValue('d', rp)}\r\n`;
    const res = await dataRequest(fwd!, post('{}', { headers: many }));
    expect(res.status).toBe(413);
    expect(ecdh()).toBe(before);
    expect(app!.seen).toHaveLength(0);
    // 2 + 1 = 3: forwarded, decrypted.
    const ok = echoOf(await dataRequest(fwd!, post(JSON.stringify([encryptValue(1, rp)]), { headers })));
    expect(headerValues(ok.rawHeaders, 'x-a')).toEqual(['a']);
    expect(JSON.parse(ok.body)).toEqual([1]);
  });

  it('answers 503 HTTP_DECRYPT_BUSY past the global budget without decrypting or forwarding; requests without values pass', async () => {
    const { ring, ecdh } = countingKeyring();
    const scheduler = new DecryptScheduler({ maxConcurrent: 1 });
    await setup({}, createDecryptStage(ring, { scheduler }));
    let released = false;
    const slot = scheduler.run(
      (function* () {
        while (!released) yield;
      })(),
    );
    const rp = ring.publicKeys();
    for (const raw of [post(JSON.stringify([encryptValue(1, rp)])), post('{}', { headers: `X-A: ${encryptValue('a', rp)}\r\n` })]) {
      const res = await dataRequest(fwd!, raw);
      expect(res.status).toBe(503);
      expect(json(res.body)).toMatchObject({ error: 'HTTP_DECRYPT_BUSY', message: expect.stringContaining('nothing was forwarded') as unknown });
    }
    expect(ecdh()).toBe(0);
    expect(app!.seen).toHaveLength(0);
    expect(JSON.parse(echoOf(await dataRequest(fwd!, post('{"plain":1}'))).body)).toEqual({ plain: 1 });
    // "ev:" inside strings, none starting with it: settled without the scheduler (a string that starts with
    // "ev:" is counted there, under the budget).
    expect(JSON.parse(echoOf(await dataRequest(fwd!, post('{"rev:": "see ev:not-a-token:$"}'))).body)).toEqual({ 'rev:': 'see ev:not-a-token:$' });
    released = true;
    await slot;
    expect(JSON.parse(echoOf(await dataRequest(fwd!, post(JSON.stringify([encryptValue(1, rp)])))).body)).toEqual([1]);
  });

  it('rejects a bad maxFields option', () => {
    for (const bad of [0, -1, 1.5, Number.NaN]) expect(() => createDecryptStage(keyring, { maxFields: bad }), String(bad)).toThrow(/maxFields: expected a positive integer/);
  });
});

describe('decrypt stage: refusals', () => {
  const good = (): string => encryptValue(SECRET, pub);
  const cases: [string, () => string][] = [
    ['a tampered IV', () => editSegment(good(), 0, flip(() => 3))],
    ['a tampered ephemeral key', () => editSegment(good(), 1, flip(() => 17))],
    ['a tampered ciphertext', () => editSegment(good(), 2, flip(() => 0))],
    ['a tampered tag', () => editSegment(good(), 2, flip((n) => n - 1))],
    ['a truncated ciphertext', () => editSegment(good(), 2, (b) => b.subarray(0, b.length - 4))],
    ['a token for another keyring', () => encryptValue(SECRET, otherKeyring.publicKeys())],
    ['a secp256k1 token with a role for another keyring', () => encryptValue(7, otherKeyring.publicKeys(), { curve: 'secp256k1', role: 'r' })],
  ];
  for (const [what, make] of cases) {
    it(`answers 422 JSON for ${what}, forwards nothing and logs no plaintext`, async () => {
      const { sink, lines } = await setup();
      // A valid value first (decrypted before the bad one is met): its plaintext must not leak either.
      const [ok, bad] = [good(), make()];
      const body = JSON.stringify({ ok, bad });
      const res = await dataRequest(fwd!, post(body));
      expect(res.status).toBe(422);
      expect(res.headers['content-type']).toBe('application/json');
      const err = json(res.body) as { error: string; message: string; request_id: string };
      expect(err).toMatchObject({ error: 'HTTP_DECRYPT_FAILED', request_id: res.headers['x-request-id'] });
      expect(err.message).toMatch(/^request body: ev: /);
      expect(app!.seen).toHaveLength(0);
      const [rec] = await records(sink);
      expect(rec).toMatchObject({ status: 422, error: 'HTTP_DECRYPT_FAILED' });
      const everything = res.body.toString() + JSON.stringify(sink.records) + lines.join('');
      expect(everything).not.toContain(SECRET);
      expect(everything).not.toContain(ok);
      expect(everything).not.toContain(bad);
    });
  }

  it('answers 422 for an undecryptable header value without reading the body, and the next request works', async () => {
    const { sink, lines } = await setup();
    const bad = encryptValue(SECRET, otherKeyring.publicKeys());
    const res = await dataRequest(fwd!, post(`{"a":"${good()}"}`, { headers: `X-Card: ${bad}\r\n` }));
    expect(res.status).toBe(422);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_DECRYPT_FAILED', message: expect.stringMatching(/^request header X-Card: /) as unknown });
    expect(app!.seen).toHaveLength(0);
    expect(JSON.stringify(await records(sink)) + lines.join('')).not.toContain(SECRET);
    expect(echoOf(await dataRequest(fwd!, post('{}'))).body).toBe('{}');
  });

  it('refuses a header value whose plaintext would inject a header line (422, nothing forwarded)', async () => {
    await setup();
    const res = await dataRequest(fwd!, post('{}', { headers: `X-Card: ${headerUnsafeValue(keyring)}\r\n` }));
    expect(res.status).toBe(422);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_DECRYPT_FAILED', message: `request header X-Card: ${EV_DECRYPT_MESSAGE}` });
    expect(app!.seen).toHaveLength(0);
  });

  it('answers every reason with the same status and text (no oracle); the operator log names the reason', async () => {
    const { logger, lines } = capturedLogger();
    const refusalLog = new RateLimitedLog(logger, REFUSALS_MESSAGE, 60_000);
    await setup({}, createDecryptStage(keyring, { logger, refusalLog }));
    const values = failingValues(keyring);
    const seen = new Map<string, string[]>();
    const answer = async (raw: Buffer): Promise<string> => {
      const res = await dataRequest(fwd!, raw);
      const { request_id: _id, ...rest } = json(res.body) as Record<string, unknown>;
      return JSON.stringify({ status: res.status, type: res.headers['content-type'], ...rest });
    };
    const cases: [string, string, Buffer][] = [
      ...Object.entries(values).map(([reason, v]) => [reason, 'body', post(JSON.stringify({ ok: encryptValue(SECRET, pub), v }))] as [string, string, Buffer]),
      ...Object.entries(values).map(([reason, v]) => [reason, 'header', post('{}', { headers: `X-Card: ${v}\r\n` })] as [string, string, Buffer]),
      ['UNSAFE_HEADER_VALUE', 'header', post('{}', { headers: `X-Card: ${headerUnsafeValue(keyring)}\r\n` })],
    ];
    for (const [, where, raw] of cases) {
      const text = await answer(raw);
      seen.set(where, [...(seen.get(where) ?? []), text]);
    }
    // One line for them all, counting each reason where it was found.
    expect(refusalLines(lines)).toEqual([]);
    refusalLog.flush();
    const refusals = refusalLines(lines);
    expect(refusals).toHaveLength(1);
    expect(refusals[0]!.total).toBe(cases.length);
    for (const [reason, where] of cases) {
      expect(Object.keys(refusals[0]!.counts).some((k) => k.startsWith(`${reason} (${where}, `)), `${reason} in ${where}`).toBe(true);
    }
    expect(seen.get('body')).toHaveLength(7);
    expect(new Set(seen.get('body'))).toEqual(new Set([JSON.stringify({ status: 422, type: 'application/json', error: 'HTTP_DECRYPT_FAILED', message: `request body: ${EV_DECRYPT_MESSAGE}` })]));
    expect(seen.get('header')).toHaveLength(8);
    expect(new Set(seen.get('header'))).toEqual(new Set([JSON.stringify({ status: 422, type: 'application/json', error: 'HTTP_DECRYPT_FAILED', message: `request header X-Card: ${EV_DECRYPT_MESSAGE}` })]));
    expect(app!.seen).toHaveLength(0);
    expect(lines.join('')).not.toContain(SECRET);
    expect(lines.join('')).not.toContain('not a number');
  });
});

/** The operator log's lines counting refused values. */
function refusalLines(lines: string[]): { total: number; counts: Record<string, number> }[] {
  return lines.map((l) => JSON.parse(l) as { msg: string; total: number; counts: Record<string, number> }).filter((l) => l.msg === REFUSALS_MESSAGE);
}

describe('decrypt stage: the operator log of refusals', () => {
  it('counts refused values in one line per interval, never a line per request nor a header name the client chose', async () => {
    const { logger, lines } = capturedLogger();
    const refusalLog = new RateLimitedLog(logger, REFUSALS_MESSAGE, 60_000);
    await setup({}, createDecryptStage(keyring, { logger, refusalLog }));
    const bad = encryptValue(SECRET, otherKeyring.publicKeys());
    for (let i = 0; i < 30; i++) {
      const name = `X-Chosen-By-Client-${i}-${'n'.repeat(2_000)}`;
      expect((await dataRequest(fwd!, post('{}', { headers: `${name}: ${bad}\r\n` }))).status).toBe(422);
    }
    expect((await dataRequest(fwd!, post(JSON.stringify({ v: bad })))).status).toBe(422);
    expect(lines.filter((l) => l.includes('refused'))).toEqual([]); // before: 31 lines, each naming its header
    refusalLog.flush();
    const [line, ...more] = refusalLines(lines);
    expect(line!.total).toBe(31);
    expect(Object.values(line!.counts).sort((a, b) => a - b)).toEqual([1, 30]);
    expect(Object.keys(line!.counts).every((k) => k.startsWith('AUTHENTICATION_FAILED ('))).toBe(true);
    expect(more).toEqual([]);
    expect(lines.join('')).not.toContain('X-Chosen-By-Client');
    expect(lines.join('')).not.toContain(SECRET);
  });
});

describe('decrypt stage: headers', () => {
  it('decrypts tokens in header values, keeps duplicate fields separate and in order, and leaves Host alone', async () => {
    const { sink, lines } = await setup();
    const headers =
      `X-Card: ${encryptValue(SECRET, pub)}\r\n` +
      `X-Multi: ${encryptValue('one', pub)}\r\n` +
      `X-Multi: plain\r\n` +
      `X-Multi: ${encryptValue(2, pub, { curve: 'secp256k1' })}\r\n` +
      `Authorization: Bearer ${encryptValue('tok-123', pub, { role: 'auth' })}\r\n` +
      `X-Lookalike: ev:not-a-token\r\n`;
    const echo = echoOf(await dataRequest(fwd!, post('{"a":1}', { headers })));
    expect(headerValues(echo.rawHeaders, 'x-card')).toEqual([SECRET]);
    expect(headerValues(echo.rawHeaders, 'x-multi')).toEqual(['one', 'plain', '2']);
    expect(headerValues(echo.rawHeaders, 'authorization')).toEqual(['Bearer tok-123']);
    expect(headerValues(echo.rawHeaders, 'x-lookalike')).toEqual(['ev:not-a-token']);
    expect(headerValues(echo.rawHeaders, 'host')).toEqual(['app.test']);
    const [rec] = await records(sink);
    expect(rec).toMatchObject({ decrypted_fields: 4 });
    expect(JSON.stringify(sink.records) + lines.join('')).not.toContain(SECRET);
  });

  it('leaves Content-Type and Content-Encoding as sent: the app never sees a JSON type on a body the agent did not scan', async () => {
    const { sink } = await setup();
    const type = encryptValue('application/json', pub);
    const body = JSON.stringify({ card: encryptValue(SECRET, pub) });
    const echo = echoOf(await dataRequest(fwd!, post(body, { type })));
    // Before the fix the app got `content-type: application/json` and this body with its value still encrypted.
    expect(headerValues(echo.rawHeaders, 'content-type')).toEqual([type]);
    expect(echo.body).toBe(body);
    const encoding = encryptValue('identity', pub);
    const coded = echoOf(await dataRequest(fwd!, post(body, { headers: `Content-Encoding: ${encoding}\r\n` })));
    expect(headerValues(coded.rawHeaders, 'content-encoding')).toEqual([encoding]);
    expect(coded.body).toBe(body);
    expect((await records(sink, 2)).map((r) => r.decrypted_fields)).toEqual([0, 0]);
  });

  it('logs the header as received (never the decrypted value), even when the header is trusted', async () => {
    const { sink } = await setup({ trustedHeaders: ['x-card'] });
    const token = encryptValue(SECRET, pub);
    echoOf(await dataRequest(fwd!, post('{}', { headers: `X-Card: ${token}\r\n` })));
    const [rec] = await records(sink);
    expect((rec!.request_headers as Record<string, string>)['x-card']).toBe(token);
    expect(JSON.stringify(rec)).not.toContain(SECRET);
  });

  it('counts header and body fields together, and decrypts headers of a GET and of a streamed text body', async () => {
    const { sink } = await setup();
    const h = `X-A: ${encryptValue('a', pub)}\r\n`;
    const echo = echoOf(await dataRequest(fwd!, post(JSON.stringify([encryptValue(1, pub), encryptValue(2, pub)]), { headers: h })));
    expect(echo.body).toBe('[1,2]');
    const get = echoOf(await dataRequest(fwd!, `GET / HTTP/1.1\r\nHost: a\r\n${h}Connection: close\r\n\r\n`));
    expect(headerValues(get.rawHeaders, 'x-a')).toEqual(['a']);
    const text = echoOf(await dataRequest(fwd!, post('hello', { type: 'text/plain', headers: h })));
    expect(text.body).toBe('hello');
    expect(headerValues(text.rawHeaders, 'x-a')).toEqual(['a']);
    expect((await records(sink, 3)).map((r) => r.decrypted_fields)).toEqual([3, 1, 1]);
  });
});

describe('decrypt stage: streaming', () => {
  it('never reads a non-JSON body: returns synchronously and a 50 MB text body streams through with bounded memory', { timeout: 120_000 }, async () => {
    const TOTAL = 50 * 1024 * 1024;
    const BLOCK = 64 * 1024;
    const token = encryptValue(SECRET, pub);
    const blocks = Array.from({ length: 8 }, (_, i) => {
      const unit = `"${token}" block-${i} `;
      return Buffer.from(unit.repeat(Math.ceil(BLOCK / unit.length)).slice(0, BLOCK), 'latin1');
    });
    let appBytes = 0;
    let appBytesAtHalf = -1;
    const appHash = createHash('sha256');
    app = await startApp((req, res) => {
      req.on('data', (c: Buffer) => {
        appBytes += c.length;
        appHash.update(c);
      });
      req.on('end', () => res.end('stored'));
    });
    const inner = createDecryptStage(keyring);
    const observed: { sync: boolean; result: unknown; didRead: boolean | undefined }[] = [];
    const spy: DecryptStage = (input) => {
      const result = inner(input);
      const body = input.body as (Readable & { readableDidRead?: boolean }) | null;
      observed.push({ sync: !(result instanceof Promise), result, didRead: body?.readableDidRead });
      return result;
    };
    const { sink } = await setup({}, spy);

    const d = await fwd!.connect(fakeContext());
    const reader = new ResponseReader(d);
    const base = process.memoryUsage();
    let peakExternal = 0;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      peakExternal = Math.max(peakExternal, m.arrayBuffers - base.arrayBuffers);
    }, 20);
    d.write(`POST /upload HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: ${TOTAL}\r\nConnection: close\r\n\r\n`);
    const sent = createHash('sha256');
    for (let off = 0, i = 0; off < TOTAL; i++) {
      const chunk = blocks[i % blocks.length]!.subarray(0, Math.min(BLOCK, TOTAL - off));
      sent.update(chunk);
      off += chunk.length;
      if (appBytesAtHalf < 0 && off >= TOTAL / 2) appBytesAtHalf = appBytes;
      if (!d.write(chunk)) await new Promise<void>((r) => d.once('drain', () => r()));
    }
    d.end();
    const res = await reader.next();
    clearInterval(sampler);
    expect(res.status).toBe(200);
    expect(appBytes).toBe(TOTAL);
    expect(appHash.digest('hex')).toBe(sent.digest('hex'));
    expect(observed).toEqual([{ sync: true, result: null, didRead: false }]);
    // Store-and-forward would deliver nothing before the client is done; streaming keeps only what is in
    // flight between the two ends. (The Buffer-memory figure is printed, not asserted: V8 may leave up to
    // ~64 MB of freed Buffers uncollected.)
    expect(appBytesAtHalf).toBeGreaterThan(TOTAL / 4);
    expect((await records(sink))[0]).toMatchObject({ decrypted_fields: 0, bytes_in: TOTAL });
    console.log(`50 MB text body: peak Buffer memory growth ${(peakExternal / 1048576).toFixed(1)} MB`);
  });
});

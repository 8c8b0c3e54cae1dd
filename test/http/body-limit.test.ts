// The request body limit of HTTP mode (createHttpForwarder maxRequestBodyBytes = [limits] max_request_bytes).
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { createHttpForwarder, type HttpForwarder, type HttpModeOptions } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { bodyLimitStage } from '../../src/http/stages/body-limit.ts';
import { createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';
import { ResponseReader, dataRequest, fakeContext, json, silentLogger, startApp, type TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;
/** Requests whose body the app read to the end. */
let completeBodies: { te: string | null; cl: string | null; sha: string; bytes: number }[] = [];

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
  completeBodies = [];
});

/** An app that reads the body to the end, then answers with what it got (framing, hash, size). */
async function setup(opts: Partial<HttpModeOptions>): Promise<void> {
  app = await startApp((req, res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      hash.update(c);
      bytes += c.length;
    });
    req.on('end', () => {
      const got = { te: req.headers['transfer-encoding'] ?? null, cl: req.headers['content-length'] ?? null, sha: hash.digest('hex'), bytes };
      completeBodies.push(got);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(got));
    });
  });
  fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), ...opts });
}

function post(body: Buffer, type = 'application/octet-stream'): Buffer {
  const head = `POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Type: ${type}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

function chunked(parts: Buffer[], opts: { type?: string; keepAlive?: boolean } = {}): Buffer {
  const out: Buffer[] = [
    Buffer.from(`POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Type: ${opts.type ?? 'application/octet-stream'}\r\nTransfer-Encoding: chunked\r\n${opts.keepAlive === true ? '' : 'Connection: close\r\n'}\r\n`, 'latin1'),
  ];
  for (const p of parts) out.push(Buffer.from(`${p.length.toString(16)}\r\n`, 'latin1'), p, Buffer.from('\r\n', 'latin1'));
  out.push(Buffer.from('0\r\n\r\n', 'latin1'));
  return Buffer.concat(out);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('HTTP mode request body limit', () => {
  it('refuses a declared body over the limit with 413 without reading it; at the limit it is forwarded', async () => {
    await setup({ maxRequestBodyBytes: 1000 });
    const over = await dataRequest(fwd!, post(Buffer.alloc(1001, 7)));
    expect(over.status).toBe(413);
    expect(json(over.body)).toEqual({
      error: 'HTTP_BODY_TOO_LARGE',
      message: 'request body of 1001 bytes larger than the 1000-byte request limit',
      request_id: over.headers['x-request-id'],
    });
    expect(over.headers.connection).toBe('close');
    expect(app!.seen).toHaveLength(0);
    const at = await dataRequest(fwd!, post(Buffer.alloc(1000, 7)));
    expect(at.status).toBe(200);
    expect(json(at.body)).toMatchObject({ cl: '1000', bytes: 1000, sha: sha(Buffer.alloc(1000, 7)) });
  });

  it('refuses a chunked body once it crosses the limit: 413, and the app never gets the whole body', async () => {
    await setup({ maxRequestBodyBytes: 1000 });
    const parts = Array.from({ length: 6 }, (_, i) => Buffer.alloc(200, i));
    const res = await dataRequest(fwd!, chunked(parts));
    expect(res.status).toBe(413);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_BODY_TOO_LARGE', message: 'chunked request body larger than the 1000-byte request limit' });
    expect(completeBodies).toEqual([]);
  });

  it('forwards a chunked body within the limit byte for byte, still chunked', async () => {
    await setup({ maxRequestBodyBytes: 1000 });
    const parts = Array.from({ length: 5 }, (_, i) => Buffer.alloc(200, i));
    const res = await dataRequest(fwd!, chunked(parts));
    expect(res.status).toBe(200);
    expect(json(res.body)).toEqual({ te: 'chunked', cl: null, bytes: 1000, sha: sha(Buffer.concat(parts)) });
  });

  it('keeps a keep-alive stream usable after an app answers early without reading a chunked body', async () => {
    app = await startApp((req, res) => {
      if (req.url === '/early') {
        res.end('early');
        return;
      }
      req.resume();
      req.on('end', () => res.end('second'));
    });
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), maxRequestBodyBytes: 1 << 20 });
    const d = await fwd.connect(fakeContext({ kind: 'stream' }));
    const reader = new ResponseReader(d);
    const first = chunked([Buffer.alloc(50_000, 1), Buffer.alloc(50_000, 2)], { keepAlive: true });
    d.write(Buffer.concat([Buffer.from('POST /early'), first.subarray('POST /up'.length)]));
    const r1 = await reader.next();
    expect(r1.body.toString()).toBe('early');
    d.write(chunked([Buffer.from('x')], { keepAlive: true }));
    const r2 = await reader.next();
    expect(r2.body.toString()).toBe('second');
    d.end();
  });

  it('applies before decryption: a chunked JSON body over the limit is refused and nothing is decrypted', async () => {
    const keyring = Keyring.generate();
    let ecdh = 0;
    const real = keyring.sharedSecret.bind(keyring);
    keyring.sharedSecret = (curve, peer) => {
      ecdh++;
      return real(curve, peer);
    };
    await setup({ maxRequestBodyBytes: 400, maxBufferedBodyBytes: 1 << 20, decrypt: createDecryptStage(keyring) });
    const doc = Buffer.from(JSON.stringify({ a: encryptValue(1, keyring.publicKeys()), pad: 'x'.repeat(500) }));
    const res = await dataRequest(fwd!, chunked([doc.subarray(0, 300), doc.subarray(300)], { type: 'application/json' }));
    expect(res.status).toBe(413);
    expect(ecdh).toBe(0);
    expect(app!.seen).toHaveLength(0);
  });

  it('rejects a bad limit', () => {
    for (const bad of [-1, 1.5, Number.NaN]) expect(() => bodyLimitStage({ maxBodyBytes: bad }), String(bad)).toThrow(/expected a non-negative integer/);
  });
});

import { afterEach, describe, expect, it } from 'vitest';
import { Readable, Transform } from 'node:stream';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { HttpModeError } from '../../src/http/errors.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { readBodyCapped } from '../../src/http/stages/decrypt.ts';
import type { DecryptStage } from '../../src/http/stages/decrypt.ts';
import { dataRequest, get, json, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

function echoApp(): Promise<TestApp> {
  return startApp((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => res.end(`cl=${String(req.headers['content-length'])};te=${String(req.headers['transfer-encoding'])};${Buffer.concat(chunks).toString()}`));
  });
}

function post(body: string, headers = ''): string {
  return `POST /pay HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${headers}Connection: close\r\n\r\n${body}`;
}

describe('decrypt slot', () => {
  it('passes requests through unchanged when no DecryptStage is configured', async () => {
    app = await echoApp();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink() });
    const res = await dataRequest(fwd, post('{"a":"ev:x"}'));
    expect(res.body.toString()).toBe('cl=12;te=undefined;{"a":"ev:x"}');
  });

  it('forwards a buffered, rewritten body with its recomputed Content-Length and logs the decrypted count', async () => {
    app = await echoApp();
    const sink = createMemoryLogSink();
    const decrypt: DecryptStage = async (input) => {
      if (input.body === null) return null;
      const body = await readBodyCapped(input.body, input.maxBufferedBodyBytes, input.contentLength);
      const out = Buffer.from(body.toString().replace('"ev:secret-token"', '12345'));
      return { body: Readable.from([out]), contentLength: out.length, decryptedFields: 1 };
    };
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink, decrypt });
    const res = await dataRequest(fwd, post('{"n":"ev:secret-token"}'));
    expect(res.body.toString()).toBe('cl=11;te=undefined;{"n":12345}');
    await new Promise((r) => setTimeout(r, 20));
    expect(sink.records[0]).toMatchObject({ decrypted_fields: 1 });
  });

  it('forwards the output of a streaming transform, without the client Content-Length', async () => {
    app = await echoApp();
    let count = 0;
    const decrypt: DecryptStage = (input) => {
      if (input.body === null) return null;
      const upper = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          count++;
          cb(null, Buffer.from(chunk.toString().toUpperCase().repeat(2)));
        },
      });
      input.body.pipe(upper);
      return { body: upper, contentLength: null, decryptedFields: () => count };
    };
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), decrypt });
    const res = await dataRequest(fwd, post('hello world', 'X-Pad: 1\r\n'));
    // undici sends chunked, or a Content-Length when the transform has already ended; never the client's value.
    expect(res.body.toString()).toMatch(/^(cl=undefined;te=chunked|cl=22;te=undefined);HELLO WORLDHELLO WORLD$/);
    expect(count).toBeGreaterThan(0);
  });

  it('answers 413 when a buffering stage meets a body over maxBufferedBodyBytes, and closes the connection', async () => {
    app = await echoApp();
    const decrypt: DecryptStage = async (input) => {
      if (input.body === null) return null;
      const body = await readBodyCapped(input.body, input.maxBufferedBodyBytes, null);
      return { body: Readable.from([body]), contentLength: body.length, decryptedFields: 0 };
    };
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), decrypt, maxBufferedBodyBytes: 1024 });
    let raw = 'POST /pay HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n';
    for (let i = 0; i < 8; i++) raw += `200\r\n${'x'.repeat(512)}\r\n`;
    raw += '0\r\n\r\n';
    const res = await dataRequest(fwd, raw);
    expect(res.status).toBe(413);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_BODY_TOO_LARGE' });
    expect(res.eof).toBe(true);
    expect(app.seen).toHaveLength(0);
    // Declared too large: refused before reading.
    const declared = await dataRequest(fwd, post('y'.repeat(2000)));
    expect(declared.status).toBe(413);
  });

  it('refuses with the stage error status and forwards nothing when a value does not decrypt', async () => {
    app = await echoApp();
    const decrypt: DecryptStage = (input) => {
      if (input.body === null) return null;
      throw new HttpModeError('HTTP_DECRYPT_FAILED', 422, 'a value could not be decrypted (field 1)');
    };
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: createMemoryLogSink(), decrypt });
    const res = await dataRequest(fwd, post('{"a":"ev:bad"}'));
    expect(res.status).toBe(422);
    expect(json(res.body)).toMatchObject({ error: 'HTTP_DECRYPT_FAILED', request_id: res.headers['x-request-id'] });
    expect(app.seen).toHaveLength(0);
    // The next request on another connection works.
    expect((await dataRequest(fwd, get('/'))).status).toBe(200);
  });
});

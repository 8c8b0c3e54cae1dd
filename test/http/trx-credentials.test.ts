// Credentials never reach the transaction record: the userinfo of an absolute-form target
// (`GET http://alice:pw@app.test/pay`) is masked like query values, and the underscore spellings of the API key
// headers (`api_key`, `x_api_key`) are masked like `api-key` / `x-api-key`, whatever trusted_headers says.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { createHeaderMasker, maskedPath } from '../../src/http/stages/trx-log.ts';
import { dataRequest, fakeContext, silentLogger, startApp, type TestApp } from './helpers.ts';

describe('maskedPath: userinfo', () => {
  it('masks the userinfo of an absolute-form target, keeps scheme, host and path', () => {
    expect(maskedPath('http://alice:S3CRET-PW@app.test/pay?card=4111')).toBe('http://***@app.test/pay?card=***');
    expect(maskedPath('https://tok3n@app.test:8443/x')).toBe('https://***@app.test:8443/x');
    expect(maskedPath('http://a:b@c@app.test/')).toBe('http://***@app.test/');
    expect(maskedPath('//alice:pw@app.test/')).toBe('//***@app.test/');
  });

  it('leaves an @ in the path or query alone (not userinfo)', () => {
    expect(maskedPath('/users/bob@example.com')).toBe('/users/bob@example.com');
    expect(maskedPath('http://app.test/u/bob@example.com')).toBe('http://app.test/u/bob@example.com');
    expect(maskedPath('http://app.test?to=a@b')).toBe('http://app.test?to=***');
  });
});

describe('header masking: API key spellings', () => {
  it('masks api_key and x_api_key even when a trusted_headers entry or prefix names them', () => {
    const mask = createHeaderMasker(['x_*', 'api*', 'api_key', 'x_api_key', 'x_trace']);
    expect(mask(['API_KEY', 'k1', 'X_API_KEY', 'k2', 'x_trace', 't', 'Api-Key', 'k3'])).toEqual({ api_key: '***', x_api_key: '***', x_trace: 't', 'api-key': '***' });
  });
});

describe('the trx record of a request with userinfo', () => {
  let app: TestApp;
  beforeAll(async () => {
    app = await startApp((_req, res) => res.end('ok'));
  });
  afterAll(async () => {
    await app.close();
  });

  it('stores http://***@host/…, never the password', async () => {
    const sink = createMemoryLogSink();
    const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink });
    try {
      const r = await dataRequest(fwd, 'GET http://alice:S3CRET-PW@app.test/pay?card=4111 HTTP/1.1\r\nHost: app.test\r\n\r\n', fakeContext());
      // Refused (userinfo in a target is an error, RFC 9110 §4.2.4: absolute-form.test.ts), and recorded.
      expect(r.status).toBe(400);
      await vi.waitFor(() => expect(sink.records).toHaveLength(1));
      expect(sink.records[0]!.path).toBe('http://***@app.test/pay?card=***');
      expect(JSON.stringify(sink.records[0])).not.toContain('S3CRET');
    } finally {
      await fwd.close();
    }
  });
});

// The pipeline's budget for request bodies held in memory (stages/decrypt.ts BufferedBodies): a JSON body the
// decrypt stage buffers counts from its first byte until its exchange is over. The per-request cap alone
// bounded nothing: 1,024 TLS connections could each hold max_buffered_body_bytes of an unfinished JSON body.
import { afterEach, describe, expect, it } from 'vitest';
import { Keyring } from '../../src/crypto/keyring.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';
import { dataRequest, fakeContext, silentLogger, startApp } from './helpers.ts';
import type { TestApp } from './helpers.ts';

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;
afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

function jsonPost(path: string, bodyBytes: number): { head: string; body: string } {
  const body = `{"v":"${'x'.repeat(bodyBytes - 8)}"}`;
  return { head: `POST ${path} HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`, body };
}

describe('request bodies held in memory, all requests together', () => {
  it('answers 503 once the bodies being buffered reach the budget, and takes bodies again once they are given back', async () => {
    app = await startApp((req, res) => {
      req.resume();
      req.on('end', () => res.end('ok'));
    });
    const sink = createMemoryLogSink();
    fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink, decrypt: createDecryptStage(Keyring.generate()), maxBufferedBodiesBytes: 100_000 });
    // A: a JSON body that never completes, 80 kB of it sent: held by the decrypt stage.
    const a = jsonPost('/a', 90_000);
    const held = await fwd.connect(fakeContext({ kind: 'stream' }));
    held.on('data', () => {});
    held.write(a.head + a.body.slice(0, 80_000));
    await new Promise((r) => setTimeout(r, 200));
    // B: 40 kB more would pass the budget.
    const b = jsonPost('/b', 40_000);
    const refused = await dataRequest(fwd, b.head + b.body, fakeContext({ kind: 'stream' }));
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body.toString())).toMatchObject({ error: 'HTTP_DECRYPT_BUSY' });
    // A's client goes: its bytes are given back with its exchange, and a body fits again.
    held.destroy();
    while (!sink.records.some((r) => r.path === '/a')) await new Promise((r) => setTimeout(r, 10));
    const c = jsonPost('/c', 40_000);
    const ok = await dataRequest(fwd, c.head + c.body, fakeContext({ kind: 'stream' }));
    expect(ok.status).toBe(200);
    expect(app.seen.map((s) => s.url)).toEqual(['/c']);
  });

  it('refuses a budget that is not a non-negative integer', () => {
    expect(() => createHttpForwarder({ appPort: 1, logger: silentLogger, logSink: createMemoryLogSink(), maxBufferedBodiesBytes: -1 })).toThrow(/maxBufferedBodiesBytes/);
  });
});

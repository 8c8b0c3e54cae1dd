// The decrypt stage's "is this body UTF-8 JSON" check of large bodies runs in the DecryptScheduler's pool:
// the same answers as the inline check (decrypted, forwarded byte for byte, or 400), one job of the global
// budget (503 past it), and the event loop serves other sessions while an 8 MiB body is being checked.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { DecryptPool } from '../../src/crypto/decrypt-pool.ts';
import { DecryptScheduler, JSON_TEXT_POOL_MIN_BYTES, type DecryptSchedulerPool } from '../../src/crypto/decrypt-scheduler.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { createHttpForwarder, type HttpForwarder } from '../../src/http/forwarder.ts';
import { createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';
import { dataRequest, json, silentLogger, startApp, type TestApp } from './helpers.ts';

const keyring = Keyring.generate();
const pub = keyring.publicKeys();
const pool = new DecryptPool(keyring, { size: 1 });
const MiB = 1 << 20;

let app: TestApp | undefined;
const forwarders: HttpForwarder[] = [];
afterEach(async () => {
  for (const f of forwarders.splice(0)) await f.close();
});
afterAll(async () => {
  await app?.close();
  await pool.close();
});

/** An app that answers with the body it received, as bytes. */
async function forwarder(scheduler: DecryptScheduler): Promise<HttpForwarder> {
  app ??= await startApp((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => res.end(Buffer.concat(chunks)));
  });
  const fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, decrypt: createDecryptStage(keyring, { scheduler }), maxBufferedBodyBytes: 8 * MiB });
  forwarders.push(fwd);
  return fwd;
}

function post(body: Buffer | string): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.concat([Buffer.from(`POST /p HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\nConnection: close\r\n\r\n`, 'latin1'), b]);
}

const filler = JSON.stringify('naïve café ✓ '.repeat(Math.ceil(JSON_TEXT_POOL_MIN_BYTES / 10)));
const token = encryptValue('PLAIN-4242', pub);
const BODIES: Record<string, Buffer> = {
  'valid, a token': Buffer.from(`{"card":${JSON.stringify(token)},"pad":${filler}}`),
  'valid, near-tokens only': Buffer.from(`["ev:Tk9D:A:A:A:$","ev:x",${filler}]`),
  'a BOM, a token': Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(`[${JSON.stringify(token)},${filler}]`)]),
  'invalid UTF-8, a token': Buffer.concat([Buffer.from(`[${JSON.stringify(token)},"`), Buffer.from([0xff]), Buffer.from(`",${filler}]`)]),
  'invalid UTF-8, no valid token': Buffer.concat([Buffer.from('["ev:x","'), Buffer.from([0xc0, 0xaf]), Buffer.from(`",${filler}]`)]),
  'invalid JSON, a token': Buffer.from(`[${JSON.stringify(token)},${filler},]`),
  'invalid JSON, near-tokens only': Buffer.from(`["ev:Tk9D:A:A:A:$",${filler},]`),
};

describe('decrypt stage: JSON check of large bodies in the pool', () => {
  it('answers every body as the inline check does (decrypted, forwarded byte for byte, or 400)', { timeout: 60_000 }, async () => {
    let checked = 0;
    const counting: DecryptSchedulerPool = { keyring, decryptJson: (t, m) => pool.decryptJson(t, m), isJsonText: (b) => (checked++, pool.isJsonText(b)) };
    const pooled = await forwarder(new DecryptScheduler({ pool: counting }));
    const inline = await forwarder(new DecryptScheduler());
    const seen: Record<string, number> = {};
    for (const [name, body] of Object.entries(BODIES)) {
      expect(body.length, name).toBeGreaterThanOrEqual(JSON_TEXT_POOL_MIN_BYTES);
      const a = await dataRequest(pooled, post(body));
      const b = await dataRequest(inline, post(body));
      const same = (r: typeof a): { status: number; body: string } => ({ status: r.status, body: r.body.toString('latin1').replace(/"request_id":"[^"]*"/, '') });
      expect(same(a), name).toEqual(same(b));
      seen[name] = a.status;
    }
    expect(checked).toBe(Object.keys(BODIES).length);
    // What the cases are meant to show, so that "both the same" is not "both wrong".
    expect(seen).toEqual({
      'valid, a token': 200,
      'valid, near-tokens only': 200,
      'a BOM, a token': 200,
      'invalid UTF-8, a token': 400,
      'invalid UTF-8, no valid token': 200,
      'invalid JSON, a token': 400,
      'invalid JSON, near-tokens only': 200,
    });
    const decrypted = await dataRequest(pooled, post(BODIES['a BOM, a token']!));
    expect(decrypted.body.subarray(0, 3)).toEqual(Buffer.from([0xef, 0xbb, 0xbf]));
    expect(decrypted.body.toString('utf8')).toContain('["PLAIN-4242",');
    expect((await dataRequest(pooled, post(BODIES['invalid JSON, near-tokens only']!))).body.equals(BODIES['invalid JSON, near-tokens only']!)).toBe(true);
  });

  it('takes a slot of the global budget for the check: 503 beside it, nothing forwarded; the slot comes back', { timeout: 60_000 }, async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let started!: () => void;
    const checking = new Promise<void>((r) => (started = r));
    const gated: DecryptSchedulerPool = {
      keyring,
      decryptJson: (t, m) => pool.decryptJson(t, m),
      isJsonText: async (b) => {
        started();
        await held;
        return pool.isJsonText(b);
      },
    };
    const scheduler = new DecryptScheduler({ maxConcurrent: 1, pool: gated });
    const fwd = await forwarder(scheduler);
    const first = dataRequest(fwd, post(BODIES['valid, a token']!));
    await Promise.race([checking, first]);
    expect(scheduler.active).toBe(1);
    const busy = await dataRequest(fwd, post(BODIES['valid, a token']!));
    expect(busy.status).toBe(503);
    expect(json(busy.body)).toMatchObject({ error: 'HTTP_DECRYPT_BUSY' });
    release();
    const ok = await first;
    expect(ok.status).toBe(200);
    expect(ok.body.toString('utf8')).toContain('"card":"PLAIN-4242"');
    expect(scheduler.active).toBe(0);
    expect((await dataRequest(fwd, post(BODIES['valid, a token']!))).status).toBe(200);
  });

  it('answers another session’s small requests while an 8 MiB ev: body is being checked', { timeout: 120_000 }, async () => {
    // The check runs in the real pool; its answer is handed on only once the small requests are answered,
    // so the order is fixed whatever the machine's speed. Inline, the check would hold the loop instead
    // and never reach the pool.
    let smallDone!: () => void;
    const smallsAnswered = new Promise<void>((r) => (smallDone = r));
    let started!: () => void;
    const checking = new Promise<void>((r) => (started = r));
    const watched: DecryptSchedulerPool = {
      keyring,
      decryptJson: (t, m) => pool.decryptJson(t, m),
      isJsonText: async (b) => {
        const answer = pool.isJsonText(b);
        started();
        await smallsAnswered;
        return answer;
      },
    };
    const fwd = await forwarder(new DecryptScheduler({ pool: watched }));
    const rows: string[] = [];
    for (let i = 0, len = 0; len < 8 * MiB - 1024; i++) {
      const r = JSON.stringify({ id: i, name: `naïve café ${i}`, note: 'plain text' });
      rows.push(r);
      len += Buffer.byteLength(r) + 1;
    }
    const big = Buffer.from(`{"card":${JSON.stringify(token)},"rows":[${rows.join(',')}]}`);
    expect(big.length).toBeGreaterThan(8 * MiB - 2048);
    const order: string[] = [];
    const bigReply = dataRequest(fwd, post(big)).then((r) => (order.push('big'), r));
    await Promise.race([checking, bigReply]);
    for (let i = 0; i < 3; i++) {
      const small = await dataRequest(fwd, post(`{"small":${i}}`));
      expect(small.body.toString('utf8')).toBe(`{"small":${i}}`);
      order.push(`small ${i}`);
    }
    smallDone();
    const r = await bigReply;
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(big.length - token.length + 'PLAIN-4242'.length);
    expect(order).toEqual(['small 0', 'small 1', 'small 2', 'big']);
  });
});

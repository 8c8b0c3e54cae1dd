// The local API's /encrypt and /decrypt under load: the per-request cap on ev: values (413 before any
// ECDH), the global budget of requests doing ev: work at once (429), and other requests being served while
// a flood of distinct-key values is decrypted. Assertions are on status, ECDH counts and completion order.
// And refusals: one answer whatever the reason a value does not decrypt.
import pino from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { API_EV_REFUSALS_MESSAGE, startApiServer } from '../../src/api/server.ts';
import type { ApiServer } from '../../src/api/server.ts';
import type { Nsm } from '../../src/attestation/nsm.ts';
import { DecryptPool } from '../../src/crypto/decrypt-pool.ts';
import { DecryptScheduler, JSON_TEXT_POOL_MIN_BYTES } from '../../src/crypto/decrypt-scheduler.ts';
import { EV_DECRYPT_MESSAGE } from '../../src/crypto/errors.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { failingValues } from '../crypto/ev-forge.ts';

const nsm: Nsm = { attest: () => Promise.resolve(Uint8Array.of(0x84)), random: (n) => Promise.resolve(new Uint8Array(n)) };
const logger = pino({ level: 'silent' });
let api: ApiServer | undefined;

afterEach(async () => {
  await api?.close();
  api = undefined;
});

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

async function start(ring: Keyring, opts: { maxDecryptFields?: number; decryptScheduler?: DecryptScheduler } = {}): Promise<string> {
  api = await startApiServer({ keyring: ring, nsm, port: 0, logger, maxBodyBytes: 4 << 20, ...opts });
  return `http://127.0.0.1:${api.port}`;
}

function post(base: string, path: string, body: string): Promise<Response> {
  return fetch(base + path, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
}

/** A job that holds one slot of the scheduler until released. */
function holdSlot(s: DecryptScheduler): { release(): Promise<unknown> } {
  let released = false;
  const done = s.run(
    (function* () {
      while (!released) yield;
    })(),
  );
  return {
    release: () => {
      released = true;
      return done;
    },
  };
}

describe('local API: refused ev: values', () => {
  it('answers /decrypt with the same status and body for every reason; the operator log names the reason, never the value', async () => {
    const lines: string[] = [];
    const ring = Keyring.generate();
    api = await startApiServer({ keyring: ring, nsm, port: 0, logger: pino({ level: 'debug' }, { write: (l: string) => void lines.push(l) }) });
    const base = `http://127.0.0.1:${api.port}`;
    const answers = new Set<string>();
    const reasons = Object.entries(failingValues(ring));
    for (const [, value] of reasons) {
      const res = await post(base, '/decrypt', JSON.stringify({ ok: encryptValue('PLAINTEXT-7777', ring.publicKeys()), value }));
      answers.add(JSON.stringify({ status: res.status, type: res.headers.get('content-type'), body: await res.text() }));
    }
    // Counted by reason and detail, one line per interval; close() writes it.
    await api.close();
    api = undefined;
    const counted = lines.map((l) => JSON.parse(l) as { msg: string; counts?: Record<string, number> }).filter((r) => r.msg === API_EV_REFUSALS_MESSAGE);
    expect(counted).toHaveLength(1);
    for (const [reason] of reasons) expect(Object.keys(counted[0]!.counts!).some((k) => k.startsWith(`${reason} (`)), reason).toBe(true);
    expect([...answers]).toEqual([JSON.stringify({ status: 422, type: 'application/json', body: JSON.stringify({ error: 'EV_DECRYPT_FAILED', message: EV_DECRYPT_MESSAGE }) })]);
    expect(lines.join('')).not.toContain('PLAINTEXT-7777');
    expect(lines.join('')).not.toContain('not a number');
  });
});

describe('local API: ev: limits', () => {
  it('refuses /decrypt with more values than max_decrypt_fields with 413 before any ECDH; at the cap it decrypts', async () => {
    const { ring, ecdh } = countingKeyring();
    const base = await start(ring, { maxDecryptFields: 4 });
    const values = Array.from({ length: 5 }, (_, i) => encryptValue(i, ring.publicKeys(), { curve: i % 2 === 0 ? 'p256' : 'secp256k1' }));
    const over = await post(base, '/decrypt', JSON.stringify({ values }));
    expect(over.status).toBe(413);
    expect(await over.json()).toEqual({
      error: 'API_TOO_MANY_ENCRYPTED_FIELDS',
      message: 'too many ev: values in one request (more than 4, [limits] max_decrypt_fields); nothing was decrypted',
    });
    expect(ecdh()).toBe(0);
    const at = await post(base, '/decrypt', JSON.stringify({ values: values.slice(0, 4) }));
    expect(await at.json()).toEqual({ values: [0, 1, 2, 3] });
    expect(ecdh()).toBe(4);
  });

  it('refuses /encrypt with more values than max_decrypt_fields with 413 before encrypting; keys and null do not count', async () => {
    const base = await start(Keyring.generate(), { maxDecryptFields: 4 });
    const over = await post(base, '/encrypt', JSON.stringify({ a: 'x', b: [1, true, false, 'z'] }));
    expect(over.status).toBe(413);
    expect(await over.json()).toEqual({
      error: 'API_TOO_MANY_ENCRYPTED_FIELDS',
      message: 'too many values in one request (more than 4, [limits] max_decrypt_fields); nothing was encrypted',
    });
    const at = await post(base, '/encrypt', JSON.stringify({ a: 'x', b: [1.5e3, true], c: null, 'd"\\': 'y' }));
    expect(at.status).toBe(200);
    const enc = (await at.json()) as { a: string; b: string[]; c: null; 'd"\\': string };
    expect(await (await post(base, '/decrypt', JSON.stringify(enc))).json()).toEqual({ a: 'x', b: [1500, true], c: null, 'd"\\': 'y' });
  });

  it('applies the default cap of 1024', async () => {
    const { ring, ecdh } = countingKeyring();
    const base = await start(ring);
    const one = encryptValue(1, ring.publicKeys()); // one ephemeral key for all: the cap counts values, not keys
    expect((await post(base, '/decrypt', JSON.stringify(Array(1025).fill(one)))).status).toBe(413);
    expect(ecdh()).toBe(0);
    expect(await (await post(base, '/decrypt', JSON.stringify(Array(1024).fill(one)))).json()).toHaveLength(1024);
  });

  it('answers 429 API_BUSY for /decrypt and /encrypt past the global budget, without decrypting; serves again once a slot frees', async () => {
    const { ring, ecdh } = countingKeyring();
    const scheduler = new DecryptScheduler({ maxConcurrent: 1 });
    const base = await start(ring, { decryptScheduler: scheduler });
    const token = encryptValue('x', ring.publicKeys());
    const slot = holdSlot(scheduler);
    const busy = await post(base, '/decrypt', JSON.stringify([token]));
    expect(busy.status).toBe(429);
    expect(await busy.json()).toMatchObject({ error: 'API_BUSY', message: expect.stringContaining('limit 1') as unknown });
    expect((await post(base, '/encrypt', '"x"')).status).toBe(429);
    expect(ecdh()).toBe(0);
    // Nothing to decrypt: no slot needed.
    expect(await (await post(base, '/decrypt', '{"plain":1}')).json()).toEqual({ plain: 1 });
    await slot.release();
    expect(await (await post(base, '/decrypt', JSON.stringify([token]))).json()).toEqual(['x']);
  });

  it('serves a small request while a flood of distinct-key values is being decrypted', { timeout: 60_000 }, async () => {
    const { ring, ecdh } = countingKeyring();
    const base = await start(ring);
    const pub = ring.publicKeys();
    // 3 requests × 250 values, each under its own ephemeral key: 750 ECDHs (~1 ms each), ~150 slices.
    const bodies = Array.from({ length: 3 }, () => JSON.stringify(Array.from({ length: 250 }, (_, i) => encryptValue(i, pub))));
    const order: string[] = [];
    const flood = bodies.map((b, i) =>
      post(base, '/decrypt', b).then(async (r) => {
        expect(r.status).toBe(200);
        expect(await r.json()).toHaveLength(250);
        order.push(`flood${i}`);
      }),
    );
    // Once decryption has begun (the test's own code runs again: the loop is not held), a small request.
    while (ecdh() === 0) await new Promise((r) => setImmediate(r));
    const health = fetch(`${base}/health`).then(async (r) => {
      expect(r.status).toBe(200);
      await r.arrayBuffer();
      order.push('health');
    });
    await Promise.all([...flood, health]);
    expect(order[0]).toBe('health');
    expect(ecdh()).toBe(750);
  });

  it('with a worker pool (as the runtime runs it): the same flood leaves the event loop to the small request', { timeout: 60_000 }, async () => {
    const ring = Keyring.generate();
    const pool = new DecryptPool(ring, { size: 2 });
    const scheduler = new DecryptScheduler({ pool });
    try {
      const base = await start(ring, { decryptScheduler: scheduler });
      const pub = ring.publicKeys();
      const bodies = Array.from({ length: 3 }, () => JSON.stringify(Array.from({ length: 120 }, (_, i) => encryptValue(i, pub, { curve: 'secp256k1' }))));
      const order: string[] = [];
      const flood = bodies.map((b, i) =>
        post(base, '/decrypt', b).then(async (r) => {
          expect(await r.json()).toEqual(Array.from({ length: 120 }, (_, k) => k));
          order.push(`flood${i}`);
        }),
      );
      while (scheduler.active < 3) await new Promise((r) => setImmediate(r));
      const health = fetch(`${base}/health`).then(async (r) => {
        expect(r.status).toBe(200);
        await r.arrayBuffer();
        order.push('health');
      });
      await Promise.all([...flood, health]);
      expect(order[0]).toBe('health');
      expect(pool.workers).toBe(2);
    } finally {
      await pool.close();
    }
  });
});

describe('local API: the JSON check of large bodies', () => {
  it('runs in the pool from JSON_TEXT_POOL_MIN_BYTES up (one job of the budget: 429 past it), answering as the inline check', async () => {
    const ring = Keyring.generate();
    const pool = new DecryptPool(ring, { size: 1 });
    try {
      const checks = vi.spyOn(pool, 'isJsonText');
      const scheduler = new DecryptScheduler({ pool, maxConcurrent: 1 });
      const base = await start(ring, { decryptScheduler: scheduler });
      const pad = 'naïve ✓ '.repeat(JSON_TEXT_POOL_MIN_BYTES / 8);
      const token = encryptValue('4242', ring.publicKeys());
      const res = await post(base, '/decrypt', JSON.stringify({ card: token, pad }));
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ card: '4242', pad });
      expect(checks).toHaveBeenCalledTimes(1); // failed before the fix: parsed on the API's (main) thread, never here
      const bom = await post(base, '/decrypt', `\ufeff${JSON.stringify([pad])}`);
      expect(await bom.text()).toBe(JSON.stringify([pad])); // the BOM dropped, as the inline check drops it
      const raw = (body: Buffer): Promise<Response> => fetch(`${base}/encrypt`, { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': 'application/json' } });
      for (const [body, message] of [
        [Buffer.from(`[${JSON.stringify(pad)},]`), 'not valid JSON'],
        [Buffer.concat([Buffer.from(`[${JSON.stringify(pad)},"`), Buffer.from([0xff]), Buffer.from('"]')]), 'not valid UTF-8'],
        [Buffer.from(`[${' '.repeat(JSON_TEXT_POOL_MIN_BYTES)}${'['.repeat(600)}`), 'deeper than 512 levels'],
      ] as const) {
        const bad = await raw(body);
        expect(bad.status, message).toBe(400);
        expect(await bad.json(), message).toMatchObject({ error: 'API_BAD_JSON', message: expect.stringContaining(message) as unknown });
      }
      expect(checks).toHaveBeenCalledTimes(5); // the BOM body and the three bad ones went there too
      expect((await post(base, '/decrypt', JSON.stringify({ card: token }))).status).toBe(200); // small: inline
      expect(checks).toHaveBeenCalledTimes(5);
      const slot = holdSlot(scheduler);
      const busy = await post(base, '/encrypt', JSON.stringify([pad]));
      expect(busy.status).toBe(429);
      expect(await busy.json()).toMatchObject({ error: 'API_BUSY' });
      await slot.release();
      expect((await post(base, '/encrypt', JSON.stringify([pad]))).status).toBe(200);
      expect(scheduler.active).toBe(0);
    } finally {
      await pool.close();
    }
  });
});

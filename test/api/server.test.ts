import net from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { appFieldDigest } from '../../src/api/app-fields.ts';
import { MAX_ATTESTATION_BODY } from '../../src/api/routes.ts';
import { startApiServer } from '../../src/api/server.ts';
import type { ApiServer } from '../../src/api/server.ts';
import type { AttestationRequest, Nsm } from '../../src/attestation/nsm.ts';
import { decryptToken, encryptValue, formatEv, parseEv } from '../../src/crypto/ev-format.ts';
import { KeyMaterial, Keyring } from '../../src/crypto/keyring.ts';
import { toBase64, toHex } from '../../src/util/bytes.ts';
import { sdkFor } from '../crypto/sdk.ts';

const material = KeyMaterial.generate();
const keyring = Keyring.fromMaterial(material);
const SECRET = 'top-secret-plaintext-9876';

class FakeNsm implements Nsm {
  requests: AttestationRequest[] = [];
  fail = false;
  attest(req: AttestationRequest): Promise<Uint8Array> {
    this.requests.push(req);
    if (this.fail) return Promise.reject(new Error('device gone'));
    return Promise.resolve(Uint8Array.from([0x84, 0x40, 0xa0, 0x40, 0x40]));
  }
  random(n: number): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(n));
  }
}

const nsm = new FakeNsm();
const logLines: string[] = [];
const logger = pino(
  { level: 'debug' },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(chunk.toString());
      cb();
    },
  }),
);
let api: ApiServer;
let base: string;

beforeAll(async () => {
  api = await startApiServer({ keyring, nsm, port: 0, maxBodyBytes: 64 * 1024, logger });
  base = `http://127.0.0.1:${api.port}`;
});
afterAll(async () => {
  await api.close();
});

async function post(path: string, body: string | Uint8Array, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(base + path, { method: 'POST', body: typeof body === 'string' ? body : Buffer.from(body), headers: { 'content-type': 'application/json', ...headers } });
}

describe('POST /encrypt and /decrypt', () => {
  it('encrypts every leaf with the P-256 key by default and decrypts back to the same document', async () => {
    const doc = { name: 'Ada', age: 36, admin: false, tags: ['x', 1.5], none: null, nested: { deep: [true] } };
    const res = await post('/encrypt', JSON.stringify(doc));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    const enc = (await res.json()) as Record<string, unknown>;
    expect(parseEv(enc.name as string).version).toBe('Tk9D');
    expect(parseEv(enc.age as string).type).toBe('number');
    expect(enc.none).toBeNull();
    const back = await post('/decrypt', JSON.stringify(enc));
    expect(back.status).toBe(200);
    expect(await back.json()).toEqual(doc);
  });

  it('honours x-evervault-data-role and ?curve=secp256k1', async () => {
    const r1 = (await (await post('/encrypt', '"v"', { 'x-evervault-data-role': 'pii' })).json()) as string;
    expect(parseEv(r1).version).toBe('QkTC');
    const r2 = (await (await post('/encrypt?curve=secp256k1', '"v"')).json()) as string;
    expect(parseEv(r2).version).toBe('RFVC');
    const r3 = (await (await post('/encrypt?curve=secp256k1', '[1]', { 'x-evervault-data-role': 'pii' })).json()) as string[];
    expect(parseEv(r3[0]!).version).toBe('S0lS');
    expect([r1, r2, r3[0]].map((t) => decryptToken(t!, keyring))).toEqual(['v', 'v', 1]);
  });

  it('decrypts all four versions produced by the real SDK', async () => {
    const doc = { card: '4242424242424242', cvc: 123, ok: true, list: ['a', 2] };
    const bodies = [
      await sdkFor(keyring, 'prime256v1').encrypt(doc),
      await sdkFor(keyring, 'prime256v1').encrypt(doc, 'pci'),
      await sdkFor(keyring, 'secp256k1').encrypt(doc),
      await sdkFor(keyring, 'secp256k1').encrypt(doc, 'pci'),
    ];
    for (const b of bodies) {
      const res = await post('/decrypt', JSON.stringify(b));
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual(doc);
    }
  });

  it('answers 422 for a tampered or foreign value, and logs neither plaintext nor keys', async () => {
    const good = encryptValue(SECRET, keyring.publicKeys());
    const t = parseEv(good);
    const tag = Uint8Array.from(t.ciphertext);
    tag[tag.length - 1] = tag[tag.length - 1]! ^ 0x80;
    const tamperedTag = formatEv({ ...t, ciphertext: tag });
    const foreign = encryptValue(SECRET, Keyring.generate().publicKeys());
    for (const bad of [tamperedTag, foreign]) {
      const res = await post('/decrypt', JSON.stringify({ ok: good, bad }));
      expect(res.status).toBe(422);
      const body = (await res.json()) as { error: string; message: string };
      expect(body.error).toBe('EV_DECRYPT_FAILED');
      expect(JSON.stringify(body)).not.toContain(SECRET);
    }
    const logs = logLines.join('');
    expect(logs).toContain('"status":422');
    expect(logs).not.toContain(SECRET);
    for (const c of ['p256', 'secp256k1'] as const) {
      expect(logs).not.toContain(toHex(material.privateKey(c)));
      expect(logs).not.toContain(toBase64(material.privateKey(c)));
    }
  });

  it('answers 400 for bad JSON, empty bodies, bad roles and bad curves', async () => {
    for (const [path, body, headers] of [
      ['/encrypt', '{"a":', {}],
      ['/decrypt', 'not json', {}],
      ['/encrypt', '', {}],
      ['/encrypt', '"x"', { 'x-evervault-data-role': 'Not Valid' }],
      ['/encrypt?curve=ed25519', '"x"', {}],
      ['/decrypt', Uint8Array.from([0x22, 0xff, 0x22]), {}],
    ] as const) {
      const res = await post(path, body, headers);
      expect(res.status, `${path} ${String(body)}`).toBe(400);
      expect(typeof ((await res.json()) as { error: unknown }).error).toBe('string');
    }
  });

  it('answers 400 API_BAD_JSON to a body nested past 512 levels without parsing it; 512 levels are served', async () => {
    const wrap = (levels: number, core: string): string => '['.repeat(levels) + core + ']'.repeat(levels);
    const ok = await post('/decrypt', wrap(512, JSON.stringify(encryptValue(SECRET, keyring.publicKeys()))));
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe(wrap(512, JSON.stringify(SECRET)));
    const parse = vi.spyOn(JSON, 'parse');
    try {
      for (const [path, body] of [
        ['/decrypt', wrap(513, '1')],
        ['/encrypt', wrap(20_000, '"x"')],
        ['/attestation-doc', `{"challenge":${wrap(513, '"AA=="')}}`],
      ] as const) {
        const res = await post(path, body);
        expect(res.status, path).toBe(400);
        expect(JSON.parse(await res.text()), path).toMatchObject({ error: 'API_BAD_JSON', message: expect.stringContaining('deeper than 512 levels') as unknown });
      }
      // V8 parses deep arrays 10-20x slower per byte: such a body never reaches JSON.parse.
      expect(parse.mock.calls.filter(([text]) => typeof text === 'string' && text.includes('[[[['))).toEqual([]);
    } finally {
      parse.mockRestore();
    }
  });

  it('answers 413 for a body over the cap', async () => {
    const res = await post('/encrypt', JSON.stringify({ big: 'x'.repeat(70 * 1024) }));
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: string }).error).toBe('API_BODY_TOO_LARGE');
  });
});

describe('routing', () => {
  it('answers 404 for unknown routes and 405 with Allow for wrong methods', async () => {
    expect((await post('/nope', '{}')).status).toBe(404);
    expect((await fetch(base + '/')).status).toBe(404);
    const r = await fetch(base + '/encrypt');
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('POST');
    expect((await fetch(base + '/health', { method: 'POST', body: '{}' })).status).toBe(405);
  });

  it('reports health with key ids', async () => {
    const r = await fetch(base + '/health');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: 'ok', keyIds: keyring.keyIds });
  });
});

describe('POST /attestation-doc', () => {
  it('passes the labelled digests of base64 challenge/nonce/publicKey to the NSM and returns the raw COSE bytes', async () => {
    nsm.requests.length = 0;
    const challenge = Uint8Array.from([1, 2, 3]);
    const nonce = new Uint8Array(512).fill(9);
    const publicKey = new Uint8Array(1024).fill(4);
    const res = await post('/attestation-doc', JSON.stringify({ challenge: toBase64(challenge), nonce: toBase64(nonce), publicKey: toBase64(publicKey) }));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/cbor');
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(Uint8Array.from([0x84, 0x40, 0xa0, 0x40, 0x40]));
    expect(nsm.requests).toHaveLength(1);
    expect(nsm.requests[0]!.userData).toEqual(appFieldDigest('user_data', challenge));
    expect(nsm.requests[0]!.nonce).toEqual(appFieldDigest('nonce', nonce));
    expect(nsm.requests[0]!.publicKey).toEqual(appFieldDigest('public_key', publicKey));
  });

  it("binds the keyring's ev: public keys when no publicKey is given (empty body allowed)", async () => {
    nsm.requests.length = 0;
    const res = await fetch(base + '/attestation-doc', { method: 'POST', headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(200);
    expect(nsm.requests[0]).toEqual({ userData: null, nonce: null, publicKey: keyring.attestationPublicKey() });
  });

  it('answers 413 to a body over MAX_ATTESTATION_BODY, without asking the NSM', async () => {
    nsm.requests.length = 0;
    const fields = `"challenge":"${toBase64(new Uint8Array(512))}","nonce":"${toBase64(new Uint8Array(512))}","publicKey":"${toBase64(new Uint8Array(1024))}"`;
    expect((await post('/attestation-doc', `{${fields}}`)).status).toBe(200); // every field at its largest fits
    const res = await post('/attestation-doc', `{${fields}${' '.repeat(MAX_ATTESTATION_BODY)}}`); // before: 200
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: string }).error).toBe('API_BODY_TOO_LARGE');
    expect(nsm.requests).toHaveLength(1);
  });

  it('answers 400 for oversized fields, non-base64, unknown fields and non-objects; 500 when the NSM fails', async () => {
    const cases = [
      { challenge: toBase64(new Uint8Array(513)) },
      { nonce: toBase64(new Uint8Array(513)) },
      { publicKey: toBase64(new Uint8Array(1025)) },
      { challenge: 'not base64!' },
      { challenge: 5 },
      { extra: 'x' },
      [1],
    ];
    nsm.requests.length = 0;
    for (const c of cases) expect((await post('/attestation-doc', JSON.stringify(c))).status, JSON.stringify(c).slice(0, 40)).toBe(400);
    expect(nsm.requests).toHaveLength(0);
    nsm.fail = true;
    try {
      const res = await post('/attestation-doc', '{}');
      expect(res.status).toBe(500);
      expect(((await res.json()) as { error: string }).error).toBe('API_ATTESTATION_FAILED');
    } finally {
      nsm.fail = false;
    }
  });
});

describe('binding', () => {
  it('refuses to bind anything but 127.0.0.1', async () => {
    for (const host of ['0.0.0.0', '::', '::1', 'localhost', '10.0.0.1']) {
      await expect(startApiServer({ keyring, nsm, host, port: 0, logger })).rejects.toMatchObject({ name: 'ApiError', code: 'API_BAD_HOST' });
    }
  });

  // Bound to 127.0.0.1 exactly, not to a wildcard: 127.0.0.2 is loopback too (routed to lo), so a server bound to
  // 0.0.0.0 would answer there. Probing the machine's other addresses is not done: tests stay on loopback.
  it('answers on 127.0.0.1 only, not on the wildcard address', async () => {
    const tryConnect = (host: string): Promise<'connected' | 'refused'> =>
      new Promise((resolve) => {
        const s = net.connect({ host, port: api.port });
        const done = (r: 'connected' | 'refused'): void => {
          s.destroy();
          resolve(r);
        };
        s.setTimeout(1000, () => done('refused'));
        s.once('connect', () => done('connected'));
        s.once('error', () => done('refused'));
      });
    expect(await tryConnect('127.0.0.2')).toBe('refused');
    expect(await tryConnect('127.0.0.1')).toBe('connected');
  });
});

// [secrets] values are for the app's environment only, never for a client (security review: a client that
// copied DB_PASSWORD's ev: value from enclave.toml into a request got it decrypted into the app's input).
// `secrets seal` writes values with the reserved data role `enclave-secret`; every client-facing decryption
// (HTTP headers and JSON bodies, sliced or in the decrypt pool, on the main thread or a session worker; the
// local API's /decrypt) refuses them, and the exact ciphertexts configured in [secrets] (role-less values
// sealed before the role existed), with the answer any undecryptable value gets. `run` still decrypts both.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { runCli } from '../../src/cli/run.ts';
import type { CliIo } from '../../src/cli/types.ts';
import { configFromObject } from '../../src/config.ts';
import { DecryptPool } from '../../src/crypto/decrypt-pool.ts';
import { DecryptScheduler, JSON_TEXT_POOL_MIN_BYTES } from '../../src/crypto/decrypt-scheduler.ts';
import { EV_DECRYPT_MESSAGE, EvDecryptError } from '../../src/crypto/errors.ts';
import { decryptSecretToken, decryptToken, decryptTokenDetailed, encryptValue, formatEv, parseEv } from '../../src/crypto/ev-format.ts';
import { decompressPoint } from '../../src/crypto/ev-kdf.ts';
import { decryptHeaderValue, decryptJsonTokens, walkDecrypt } from '../../src/crypto/json-decrypt.ts';
import { devKeySource, Keyring, loadKeyring } from '../../src/crypto/keyring.ts';
import { decryptSecrets, sealSecret } from '../../src/crypto/secrets.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createForwarder } from '../../src/runtime/forwarder-setup.ts';
import { nativeAvailable } from '../../src/transport/native.ts';
import { toBase64, utf8 } from '../../src/util/bytes.ts';
import { startAgentStack, type AgentStack } from '../faults/stack.ts';
import { dataRequest, fakeContext, json } from '../http/helpers.ts';
import { connectClient, type TestClient } from '../responder/helpers.ts';
import { tamperEv } from './ev-forge.ts';

const SEALED_TEXT = `s3cr3t-db-pw-${process.pid}`;
const LEGACY_TEXT = `legacy-pw-${String(process.pid).padStart(7, "0")}-x`; // 19 bytes: 35 with the tag, not a multiple of 3
const CLIENT_TEXT = `client-card-${process.pid}`;

function cliIo(stdin: string): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (l) => stdout.push(l), err: (l) => stderr.push(l), stdin: () => Promise.resolve(utf8.encode(stdin)) };
}

/** What the operator does: `printf '%s' "$DB_PASSWORD" | enclave-agent secrets seal DB_PASSWORD --key <p256>`. */
async function sealWithCli(keyring: Keyring, text: string, extra: string[] = []): Promise<string> {
  const io = cliIo(text);
  expect(await runCli(['secrets', 'seal', 'DB_PASSWORD', '--key', toBase64(keyring.publicKey(extra.includes('secp256k1') ? 'secp256k1' : 'p256')), ...extra], io)).toBe(0);
  return io.stdout[0]!;
}

/** The same bytes spelled differently: `debug:`, padding, and other unused bits in the last base64 character. */
function respellings(token: string): string[] {
  const t = parseEv(token);
  const plain = formatEv(t);
  const segs = plain.split(':');
  const ct = segs[segs.length - 2]!;
  const out = [formatEv({ ...t, debug: true })];
  const rem = t.ciphertext.length % 3;
  if (rem !== 0) {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const last = alphabet.indexOf(ct.at(-1)!);
    const unused = rem === 1 ? 0x0f : 0x03; // 4 or 2 bits past the data
    const other = alphabet[(last & ~unused) | (~last & unused)]!;
    out.push(plain.replace(`:${ct}:$`, `:${ct.slice(0, -1)}${other}:$`));
    out.push(plain.replace(`:${ct}:$`, `:${ct}${rem === 1 ? '==' : '='}:$`));
  }
  return out;
}

/** A role-less (legacy) value whose ciphertext length leaves unused bits in its last base64 character. */
function legacyValue(keyring: Keyring, text: string): string {
  const v = encryptValue(text, keyring.publicKeys());
  expect(parseEv(v).ciphertext.length % 3).not.toBe(0);
  return v;
}

describe('secrets seal', () => {
  it('writes values with the reserved data role, on the curve asked for (QkTC for P-256, S0lS for secp256k1)', async () => {
    const keyring = Keyring.generate();
    const p = await sealWithCli(keyring, SEALED_TEXT);
    expect(p).toMatch(/^ev:QkTC:/);
    const k = await sealWithCli(keyring, '8080', ['--curve', 'secp256k1', '--type', 'number']);
    expect(k).toMatch(/^ev:S0lS:number:/);
    expect(sealSecret(true, keyring.publicKeys())).toMatch(/^ev:QkTC:boolean:/);
    expect(decryptSecrets({ DB_PASSWORD: p, PORT_NUMBER: k }, keyring)).toEqual({ DB_PASSWORD: SEALED_TEXT, PORT_NUMBER: '8080' });
  });
});

describe('decryptSecrets', () => {
  it('opens sealed and legacy values; warns once per legacy variable (its name, never the value), after all opened', () => {
    const keyring = Keyring.generate();
    const sealed = sealSecret(SEALED_TEXT, keyring.publicKeys());
    const legacy = legacyValue(keyring, LEGACY_TEXT);
    const otherRole = encryptValue('x', keyring.publicKeys(), { role: 'pii' });
    const warnings: { variable: string; message: string }[] = [];
    const out = decryptSecrets({ DB_PASSWORD: sealed, OLD_TOKEN: legacy, ROLE_PII: otherRole }, keyring, { warn: (w) => warnings.push(w) });
    expect(out).toEqual({ DB_PASSWORD: SEALED_TEXT, OLD_TOKEN: LEGACY_TEXT, ROLE_PII: 'x' });
    expect(warnings.map((w) => w.variable)).toEqual(['OLD_TOKEN', 'ROLE_PII']);
    expect(warnings[0]!.message).toMatch(/^secrets\.OLD_TOKEN: sealed without the enclave-secret data role/);
    expect(warnings[0]!.message).toContain('enclave-agent secrets seal OLD_TOKEN');
    for (const w of warnings) {
      expect(w.message).not.toContain(LEGACY_TEXT);
      expect(w.message).not.toContain(legacy);
    }
    // No warning when one does not open: the boot stops with the error alone.
    const none: unknown[] = [];
    expect(() => decryptSecrets({ OLD_TOKEN: legacy, BAD: tamperEv(sealed) }, keyring, { warn: (w) => none.push(w) })).toThrow(/secrets\.BAD: does not decrypt/);
    expect(none).toEqual([]);
  });
});

describe('the decrypt entry points refuse secrets with the generic refusal', () => {
  const keyring = Keyring.generate();
  const sealed = sealSecret(SEALED_TEXT, keyring.publicKeys());
  const legacy = legacyValue(keyring, LEGACY_TEXT);
  // A role-less secp256k1 value (RFVC): its key is ECDH's raw x, without AAD, so the ephemeral key with its
  // prefix flipped (the negated point, same x) opens it too — the same ciphertext, another spelling.
  const legacyK = encryptValue(LEGACY_TEXT, keyring.publicKeys(), { curve: 'secp256k1' });
  const k = parseEv(legacyK);
  const flipped = formatEv({ ...k, ephemeralPublicKey: Uint8Array.of(k.ephemeralPublicKey[0]! ^ 1, ...k.ephemeralPublicKey.subarray(1)) });
  const client = encryptValue(CLIENT_TEXT, keyring.publicKeys());
  // Configured for this keyring (as createForwarder does from enclave.toml).
  decryptSecrets({ OLD_TOKEN: legacy, OLD_K: legacyK }, keyring, { warn: () => {} });

  const refusal = (f: () => unknown): EvDecryptError => {
    try {
      f();
    } catch (err) {
      expect(err).toBeInstanceOf(EvDecryptError);
      return err as EvDecryptError;
    }
    throw new Error('decrypted');
  };

  it('decryptToken(Detailed), decryptJsonTokens, decryptHeaderValue, walkDecrypt', () => {
    expect(decryptToken(client, keyring)).toBe(CLIENT_TEXT); // ordinary values still open
    expect(decryptSecrets({ F: flipped }, Keyring.fromMaterial(keyring.keyMaterial()), { warn: () => {} }).F).toBe(LEGACY_TEXT); // it does open
    for (const v of [sealed, legacy, ...respellings(legacy), ...respellings(sealed), legacyK, flipped]) {
      for (const f of [() => decryptTokenDetailed(v, keyring), () => decryptJsonTokens(JSON.stringify({ v }), keyring), () => decryptHeaderValue(`Bearer ${v}`, keyring), () => walkDecrypt([v], keyring)]) {
        const err = refusal(f);
        expect(err.message).toBe(EV_DECRYPT_MESSAGE);
        expect(err.reason).toBe('RESERVED_FOR_SECRETS');
        expect(err.detail).not.toContain(SEALED_TEXT);
      }
    }
  });

  it('the role cannot be stripped or the value relabelled: a sealed value then does not open at all', () => {
    for (const curve of ['p256', 'secp256k1'] as const) {
      const t = parseEv(sealSecret(SEALED_TEXT, keyring.publicKeys(), curve));
      // QkTC/S0lS → Tk9D/RFVC changes the AAD (the config byte and both keys → the enclave key, or none)...
      for (const v of [formatEv({ ...t, version: curve === 'p256' ? 'Tk9D' : 'RFVC' }), formatEv({ ...t, type: 'number' })]) {
        expect(() => decryptSecretToken(v, keyring)).toThrow(expect.objectContaining({ reason: 'AUTHENTICATION_FAILED' }));
      }
      // ...and the role is in the plaintext, under the tag.
      const body = Uint8Array.from(t.ciphertext);
      body[4]! ^= 1;
      expect(() => decryptSecretToken(formatEv({ ...t, ciphertext: body }), keyring)).toThrow(expect.objectContaining({ reason: 'AUTHENTICATION_FAILED' }));
    }
  });

  it('the ephemeral key is canonical as bytes: an x coordinate written as x + p is not a point', () => {
    const p256 = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
    const k1 = 2n ** 256n - 2n ** 32n - 977n;
    const point = (x: bigint): Uint8Array => Uint8Array.from(Buffer.from(`02${x.toString(16).padStart(64, '0')}`, 'hex'));
    expect(() => decompressPoint('p256', point(5n))).not.toThrow(); // x = 5 is on P-256
    expect(() => decompressPoint('p256', point(p256 + 5n))).toThrow();
    expect(() => decompressPoint('secp256k1', point(1n))).not.toThrow(); // x = 1 is on secp256k1
    expect(() => decompressPoint('secp256k1', point(k1 + 1n))).toThrow();
  });

  it('the parser is not canonical for the ciphertext segment: a respelled value opens as the original', () => {
    const other = legacyValue(keyring, LEGACY_TEXT); // not configured: an ordinary client value
    for (const v of respellings(other)) expect(decryptToken(v, keyring)).toBe(LEGACY_TEXT);
  });

  it('the decrypt pool: sealed values, and legacy ones configured before or after its worker started', async () => {
    const kr = Keyring.generate();
    const pool = new DecryptPool(kr, { size: 1 });
    try {
      const s = sealSecret(SEALED_TEXT, kr.publicKeys());
      const late = legacyValue(kr, LEGACY_TEXT);
      const c = encryptValue(CLIENT_TEXT, kr.publicKeys());
      expect((await pool.decryptJson(JSON.stringify([c]))).json).toBe(JSON.stringify([CLIENT_TEXT]));
      await expect(pool.decryptJson(JSON.stringify([s]))).rejects.toMatchObject({ reason: 'RESERVED_FOR_SECRETS', message: EV_DECRYPT_MESSAGE });
      expect((await pool.decryptJson(JSON.stringify([late]))).json).toBe(JSON.stringify([LEGACY_TEXT])); // not a secret yet
      decryptSecrets({ OLD_TOKEN: late }, kr, { warn: () => {} }); // the worker is running: it learns of it
      for (const v of [late, ...respellings(late)]) await expect(pool.decryptJson(JSON.stringify({ v }))).rejects.toMatchObject({ reason: 'RESERVED_FOR_SECRETS' });
    } finally {
      await pool.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
// The HTTP pipeline as the runtime builds it (createForwarder from a Config), with a reflecting app.

interface Reflector {
  port: number;
  /** Every header value and body the app received. */
  seen: string[];
  close(): Promise<void>;
}

async function reflectingApp(): Promise<Reflector> {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push(JSON.stringify(req.headers), body);
      let name: unknown = null;
      try {
        name = (JSON.parse(body || '{}') as { name?: unknown }).name;
      } catch {
        name = null; // not JSON: reflect nothing
      }
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ hello: name ?? null, note: req.headers['x-client-note'] ?? null }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function post(body: string, headers: Record<string, string> = {}): string {
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return `POST /greet HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** The requests a client who copied `value` from enclave.toml would send: header, small body, large body. */
function attempts(value: string): [string, string][] {
  const pad = 'x'.repeat(JSON_TEXT_POOL_MIN_BYTES + 1024);
  return [
    ['header', post('{}', { 'X-Client-Note': value })],
    ['body', post(JSON.stringify({ name: value }))],
    ['large body', post(JSON.stringify({ pad, name: value }))],
  ];
}

/** The 422 answer without its request id: the same for a secret as for a tampered value. */
function answer(status: number, body: Buffer | string): string {
  const { request_id: _id, ...rest } = json(typeof body === 'string' ? Buffer.from(body) : body) as Record<string, unknown>;
  return JSON.stringify({ status, ...rest });
}

describe.each([
  ['sliced on the event loop', false],
  ['in the decrypt pool', true],
])('HTTP pipeline from createForwarder (%s)', (_label, withPool) => {
  let keyring: Keyring;
  let app: Reflector;
  let fwd: HttpForwarder;
  let pool: DecryptPool | undefined;
  let sealed: string;
  let legacy: string;

  beforeAll(async () => {
    keyring = Keyring.generate();
    sealed = await sealWithCli(keyring, SEALED_TEXT);
    legacy = legacyValue(keyring, LEGACY_TEXT);
    app = await reflectingApp();
    pool = withPool ? new DecryptPool(keyring, { size: 1 }) : undefined;
    const config = configFromObject({ mode: 'http', app: { port: app.port, startup_grace_ms: 0 }, secrets: { DB_PASSWORD: sealed, OLD_TOKEN: legacy } });
    fwd = (await createForwarder({
      config,
      logger: pino({ level: 'silent' }),
      keyring,
      decryptScheduler: new DecryptScheduler(pool === undefined ? {} : { pool }),
      observer: { observeExchange() {}, rawRequest() {} },
      trxSink: createMemoryLogSink(),
    })) as HttpForwarder;
  });
  afterAll(async () => {
    await fwd?.close();
    await pool?.close();
    await app?.close();
  });

  it('a client value still decrypts into the app (control)', async () => {
    const c = encryptValue(CLIENT_TEXT, keyring.publicKeys());
    for (const [, raw] of attempts(c)) {
      const res = await dataRequest(fwd, raw, fakeContext());
      expect(res.status).toBe(200);
      expect(res.body.toString()).toContain(CLIENT_TEXT);
    }
  });

  it('refuses the sealed secret, the legacy one and its respellings as it refuses a tampered value; the app sees nothing', async () => {
    app.seen.length = 0;
    const tampered = tamperEv(encryptValue(CLIENT_TEXT, keyring.publicKeys()));
    for (const value of [sealed, legacy, ...respellings(legacy)]) {
      const expected = attempts(tampered);
      const got = attempts(value);
      for (let i = 0; i < got.length; i++) {
        const [where, raw] = got[i]!;
        const res = await dataRequest(fwd, raw, fakeContext());
        const ref = await dataRequest(fwd, expected[i]![1], fakeContext());
        expect(res.status, where).toBe(422);
        expect(answer(res.status, res.body), where).toBe(answer(ref.status, ref.body));
      }
    }
    expect(app.seen).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The whole agent (startAgentRuntime, as `run` assembles it): sessions on the main thread and on session
// workers, and the local API.

const native = nativeAvailable();

describe.each(native ? [1, 2] : [1])('the agent with [limits] workers = %i', (workers) => {
  let app: Reflector;
  let stack: AgentStack | undefined;
  const clients: TestClient[] = [];
  let sealed: string;
  let legacy: string;
  let keyring: Keyring;

  beforeAll(async () => {
    app = await reflectingApp();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await stack?.close();
    stack = undefined;
  });
  afterAll(async () => {
    await app?.close();
  });

  async function start(): Promise<AgentStack> {
    const { mkdtempSync } = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const stateDir = mkdtempSync(path.join(os.tmpdir(), 'ea-secrets-clients-'));
    keyring = await loadKeyring(devKeySource(stateDir)); // the keys the agent will open
    sealed = await sealWithCli(keyring, SEALED_TEXT);
    legacy = legacyValue(keyring, LEGACY_TEXT);
    const s = await startAgentStack({ appPort: app.port, limits: { workers }, stateDir, extra: { secrets: { DB_PASSWORD: sealed, OLD_TOKEN: legacy } } });
    const close = s.close.bind(s);
    stack = { ...s, close: async () => (await close(), (await import('node:fs')).rmSync(stateDir, { recursive: true, force: true })) };
    return stack;
  }

  let nextId = 1;
  /** One request: a Data message, or a stream when larger (a payload costs about two bytes per byte on the wire). */
  async function send(c: TestClient, raw: string): Promise<{ status: number; body: string }> {
    const id = nextId++;
    const bytes = utf8.encode(raw);
    let text: string;
    if (bytes.length <= 30_000) {
      c.send({ type: 'Data', id, payload: bytes });
      const got = await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, 15_000);
      const m = got.at(-1)!.message;
      if (m.type !== 'Data') throw new Error(`reply ${m.type}`);
      text = utf8.decode(m.payload);
    } else {
      c.send({ type: 'OpenStream', id, payload: bytes.subarray(0, 30_000) });
      for (let at = 30_000; at < bytes.length; at += 30_000) c.send({ type: 'StreamData', id, payload: bytes.subarray(at, at + 30_000) });
      c.send({ type: 'StreamClose', id, half: 'Write' });
      const got = await c.until((m) => (m.type === 'StreamClose' || m.type === 'Error') && m.id === id, 15_000);
      text = got.map((r) => (r.message.type === 'StreamData' && r.message.id === id ? utf8.decode(r.message.payload) : '')).join('');
    }
    return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)![1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) };
  }

  it('sessions: headers, bodies and large bodies holding a secret get the answer a tampered value gets', async () => {
    const s = await start();
    app.seen.length = 0;
    const tampered = tamperEv(encryptValue(CLIENT_TEXT, keyring.publicKeys()));
    // Several sessions, so that with two workers both serve some.
    for (let n = 0; n < 2 * workers; n++) {
      const c = await connectClient(s.port);
      clients.push(c);
      const ok = await send(c, post(JSON.stringify({ name: encryptValue(CLIENT_TEXT, keyring.publicKeys()) })));
      expect(ok.status).toBe(200);
      expect(ok.body).toContain(CLIENT_TEXT);
      for (const value of [sealed, legacy, respellings(legacy)[1]!]) {
        const expected = attempts(tampered);
        const got = attempts(value);
        for (let i = 0; i < got.length; i++) {
          const res = await send(c, got[i]![1]);
          const ref = await send(c, expected[i]![1]);
          expect(res.status, got[i]![0]).toBe(422);
          expect(answer(res.status, res.body), got[i]![0]).toBe(answer(ref.status, ref.body));
        }
      }
    }
    expect(app.seen.filter((t) => t.includes(SEALED_TEXT) || t.includes(LEGACY_TEXT))).toEqual([]);
    expect(s.log.text()).not.toContain(SEALED_TEXT);
    expect(s.log.text()).not.toContain(LEGACY_TEXT);
  }, 30_000);

  it('the local API: /decrypt refuses both as any undecryptable value; /encrypt refuses the reserved role', async () => {
    const s = await start();
    const base = `http://127.0.0.1:${s.runtime.apiPort!}`;
    const call = (p: string, body: string, headers: Record<string, string> = {}): Promise<Response> => fetch(base + p, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
    const ok = await call('/decrypt', JSON.stringify({ v: encryptValue(CLIENT_TEXT, keyring.publicKeys()) }));
    expect(await ok.json()).toEqual({ v: CLIENT_TEXT });
    const ref = await call('/decrypt', JSON.stringify({ v: tamperEv(sealed) }));
    const refText = `${ref.status} ${await ref.text()}`;
    expect(ref.status).toBe(422);
    const pad = 'x'.repeat(JSON_TEXT_POOL_MIN_BYTES + 1024);
    for (const value of [sealed, legacy, ...respellings(legacy)]) {
      for (const body of [JSON.stringify({ v: value }), JSON.stringify({ pad, v: value })]) {
        const r = await call('/decrypt', body);
        expect(`${r.status} ${await r.text()}`).toBe(refText);
      }
    }
    const enc = await call('/encrypt', '"x"', { 'x-evervault-data-role': 'enclave-secret' });
    expect(enc.status).toBe(400);
    expect(await enc.json()).toMatchObject({ error: 'API_RESERVED_ROLE' });
    expect((await call('/encrypt', '"x"', { 'x-evervault-data-role': 'pii' })).status).toBe(200);
  }, 30_000);
});

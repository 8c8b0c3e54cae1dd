// Values encrypted by the REAL @evervault/sdk (offline, for our keyring's public keys) decrypted
// automatically on their way into the app (ENCRYPTION.md §3): through createHttpForwarder with
// createDecryptStage, and once through the whole runtime assembly (startAgentRuntime, a Noise session).
import { afterEach, describe, expect, it } from 'vitest';
import { KeyMaterial, Keyring } from '../../src/crypto/keyring.ts';
import { parseEv } from '../../src/crypto/ev-format.ts';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import type { MemoryLogSink } from '../../src/http/log-sink.ts';
import { createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';
import { fromBase64, toBase64, utf8 } from '../../src/util/bytes.ts';
import { dataRequest, json, silentLogger, startApp } from '../http/helpers.ts';
import type { TestApp } from '../http/helpers.ts';
import { httpRequest, startAgentStack, statusOf } from '../faults/stack.ts';
import { connectClient } from '../responder/helpers.ts';
import { SDK_TOKEN_SHAPE, SDK_SAMPLE as SAMPLE, SDK_CASES as CASES, leaves, sdkFor } from './sdk.ts';

const keyring = Keyring.fromMaterial(KeyMaterial.generate());
const other = Keyring.generate();

const SAMPLE_LEAVES = 17;

let app: TestApp | undefined;
let fwd: HttpForwarder | undefined;
let sink: MemoryLogSink;

afterEach(async () => {
  await fwd?.close();
  await app?.close();
  fwd = undefined;
  app = undefined;
});

interface Echo {
  cl: string | null;
  te: string | null;
  card: string | null;
  body: string;
  bytes: number;
}

async function start(): Promise<void> {
  app = await startApp((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const card = req.headers['x-card'];
      const echo: Echo = { cl: req.headers['content-length'] ?? null, te: req.headers['transfer-encoding'] ?? null, card: typeof card === 'string' ? card : null, body: body.toString('utf8'), bytes: body.length };
      res.end(JSON.stringify(echo));
    });
  });
  sink = createMemoryLogSink();
  fwd = createHttpForwarder({ appPort: app.port, logger: silentLogger, logSink: sink, decrypt: createDecryptStage(keyring) });
}

function post(body: string, headers = ''): string {
  return `POST /pay HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${headers}Connection: close\r\n\r\n${body}`;
}

function chunked(body: string, size: number): string {
  let raw = 'POST /pay HTTP/1.1\r\nHost: a\r\nContent-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n';
  const b = Buffer.from(body);
  for (let i = 0; i < b.length; i += size) {
    const part = b.subarray(i, i + size);
    raw += `${part.length.toString(16)}\r\n${part.toString('latin1')}\r\n`;
  }
  return raw + '0\r\n\r\n';
}

async function lastRecord(n: number): Promise<Record<string, unknown>> {
  for (let i = 0; i < 100 && sink.records.length < n; i++) await new Promise((r) => setTimeout(r, 10));
  return sink.records[n - 1]!;
}

describe('automatic decryption of values from the real @evervault/sdk', () => {
  for (const { curve, role, version } of CASES) {
    it(`delivers ${version} (${curve}${role === null ? '' : ', role'}) objects to the app as the original typed JSON, with Content-Length or chunked`, async () => {
      await start();
      const ev = sdkFor(keyring, curve);
      const encrypted = (await ev.encrypt(SAMPLE, role)) as unknown;
      const tokens = leaves(encrypted);
      expect(tokens).toHaveLength(SAMPLE_LEAVES);
      for (const t of tokens) {
        expect(t).toMatch(SDK_TOKEN_SHAPE);
        expect(parseEv(t).version).toBe(version);
      }
      const header = (await ev.encrypt('4111 1111 1111 1111', role)) as string;
      const body = JSON.stringify(encrypted);

      const res = await dataRequest(fwd!, post(body, `X-Card: ${header}\r\n`));
      expect(res.status).toBe(200);
      const echo = json(res.body) as Echo;
      expect(JSON.parse(echo.body)).toEqual(SAMPLE);
      expect(echo.body).toBe(JSON.stringify(SAMPLE));
      expect(echo.cl).toBe(String(echo.bytes));
      expect(echo.card).toBe('4111 1111 1111 1111');
      expect(await lastRecord(1)).toMatchObject({ decrypted_fields: SAMPLE_LEAVES + 1 });

      const viaChunks = await dataRequest(fwd!, chunked(body, 97));
      const echo2 = json(viaChunks.body) as Echo;
      expect(JSON.parse(echo2.body)).toEqual(SAMPLE);
      expect(echo2.cl).toBe(String(echo2.bytes));
      expect(echo2.te).toBeNull();
      expect(await lastRecord(2)).toMatchObject({ decrypted_fields: SAMPLE_LEAVES });
      expect(app!.seen).toHaveLength(2);
    });
  }

  it('decrypts one body mixing all four versions and plain values', async () => {
    await start();
    const doc: Record<string, unknown> = { plain: 'x', list: [] };
    for (const { curve, role, version } of CASES) doc[version] = await sdkFor(keyring, curve).encrypt({ s: `for ${version}`, n: 1.5, b: false }, role);
    const res = await dataRequest(fwd!, post(JSON.stringify(doc)));
    expect(JSON.parse((json(res.body) as Echo).body)).toEqual({
      plain: 'x',
      list: [],
      ...Object.fromEntries(CASES.map(({ version }) => [version, { s: `for ${version}`, n: 1.5, b: false }])),
    });
    expect(await lastRecord(1)).toMatchObject({ decrypted_fields: 12 });
  });

  it('refuses SDK values for another enclave and tampered SDK values with 422; the app receives nothing', async () => {
    await start();
    for (const { curve, role } of CASES) {
      const foreign = (await sdkFor(other, curve).encrypt('secret-for-someone-else', role)) as string;
      const mine = (await sdkFor(keyring, curve).encrypt('secret-for-me', role)) as string;
      const parts = mine.split(':');
      const ct = fromBase64(parts.at(-2)!);
      ct[ct.length - 1]! ^= 0x80;
      parts[parts.length - 2] = toBase64(ct).replace(/=+$/, '');
      const tampered = parts.join(':');
      for (const bad of [foreign, tampered]) {
        const res = await dataRequest(fwd!, post(JSON.stringify({ ok: mine, v: bad })));
        expect(res.status).toBe(422);
        expect(json(res.body)).toMatchObject({ error: 'HTTP_DECRYPT_FAILED' });
        expect(res.body.toString()).not.toContain('secret-for');
        const viaHeader = await dataRequest(fwd!, post('{}', `X-Card: ${bad}\r\n`));
        expect(viaHeader.status).toBe(422);
      }
    }
    expect(app!.seen).toHaveLength(0);
    expect(JSON.stringify(sink.records)).not.toContain('secret-for');
  });
});

describe('the runtime decrypts by default', () => {
  it('startAgentRuntime in HTTP mode decrypts SDK values for its own keyring before the app sees them', { timeout: 30_000 }, async () => {
    await start();
    const stack = await startAgentStack({ appPort: app!.port });
    try {
      const c = await connectClient(stack.port);
      try {
        c.send({ type: 'RequestAttestation' });
        expect((await c.next()).message.type).toBe('Attestation');
        const ev = sdkFor(stack.runtime.keyring, 'prime256v1');
        const body = JSON.stringify(await ev.encrypt({ card: '4242424242424242', cvc: 123 }));
        c.send({ type: 'Data', id: 1, payload: httpRequest('POST', '/pay', body, { 'Content-Type': 'application/json', 'X-Card': (await ev.encrypt('hdr')) as string }) });
        const got = await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === 1, 10_000);
        const reply = got.at(-1)!.message;
        if (reply.type !== 'Data') throw new Error(`expected a Data reply, found ${reply.type}`);
        const text = utf8.decode(reply.payload);
        expect(statusOf(text)).toBe(200);
        const echo = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Echo;
        expect(JSON.parse(echo.body)).toEqual({ card: '4242424242424242', cvc: 123 });
        expect(echo.card).toBe('hdr');
        for (let i = 0; i < 100 && stack.trx.records.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
        expect(stack.trx.records[0]).toMatchObject({ decrypted_fields: 3 });
        expect(stack.log.text() + JSON.stringify(stack.trx.records)).not.toContain('4242424242424242');
      } finally {
        c.close();
      }
    } finally {
      await stack.close();
    }
  });
});

// enclave.toml [limits] keys reach the pipeline that startAgentRuntime assembles (as `run` and `start` do):
// max_request_bytes caps request bodies, max_decrypt_fields caps the ev: values decrypted per request.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { httpRequest, startAgentStack, statusOf, type AgentStack } from '../faults/stack.ts';
import { connectClient, type TestClient } from '../responder/helpers.ts';

let app: http.Server;
let seen: string[] = [];
let stack: AgentStack;
let client: TestClient;

beforeAll(async () => {
  app = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push(body);
      res.setHeader('content-type', 'application/json');
      res.end(body === '' ? '{}' : body);
    });
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  stack = await startAgentStack({ appPort: (app.address() as AddressInfo).port, limits: { max_request_bytes: 2048, max_decrypt_fields: 3 } });
  client = await connectClient(stack.port);
}, 30_000);

afterAll(async () => {
  client?.close();
  await stack?.close();
  app.closeAllConnections();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

let nextId = 1;
async function data(payload: Uint8Array): Promise<{ status: number; body: string }> {
  const id = nextId++;
  client.send({ type: 'Data', id, payload });
  const got = await client.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, 15_000);
  const m = got.at(-1)!.message as Extract<ServerMessage, { type: 'Data' | 'Error' }>;
  if (m.type === 'Error') throw new Error(`Error reply: ${m.message}`);
  const text = utf8.decode(m.payload);
  return { status: statusOf(text), body: text.slice(text.indexOf('\r\n\r\n') + 4) };
}

describe('[limits] through startAgentRuntime', () => {
  it('max_request_bytes: a Data request with a body over it gets 413 and the app sees nothing; at it, it is forwarded', async () => {
    seen = [];
    const over = await data(httpRequest('POST', '/up', 'x'.repeat(2049), { 'content-type': 'text/plain' }));
    expect(over.status).toBe(413);
    expect(JSON.parse(over.body)).toMatchObject({ error: 'HTTP_BODY_TOO_LARGE', message: 'request body of 2049 bytes larger than the 2048-byte request limit' });
    expect(seen).toEqual([]);
    const at = await data(httpRequest('POST', '/up', 'y'.repeat(2048), { 'content-type': 'text/plain' }));
    expect(at.status).toBe(200);
    expect(seen).toEqual(['y'.repeat(2048)]);
  });

  it('max_decrypt_fields: one ev: value over it gets 413 before decryption; at it, the values are decrypted', async () => {
    seen = [];
    const pub = stack.runtime.keyring.publicKeys();
    const four = JSON.stringify([1, 2, 3, 4].map((v) => encryptValue(v, pub)));
    const over = await data(httpRequest('POST', '/pay', four, { 'content-type': 'application/json' }));
    expect(over.status).toBe(413);
    expect(JSON.parse(over.body)).toMatchObject({ error: 'HTTP_TOO_MANY_ENCRYPTED_FIELDS' });
    expect(seen).toEqual([]);
    const three = JSON.stringify([1, 2, 3].map((v) => encryptValue(v, pub)));
    const ok = await data(httpRequest('POST', '/pay', three, { 'content-type': 'application/json' }));
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toEqual([1, 2, 3]);
  });

  it('max_decrypt_fields caps the local API /decrypt the same way (413 past it, decrypted at it)', async () => {
    const pub = stack.runtime.keyring.publicKeys();
    const base = `http://127.0.0.1:${stack.runtime.apiPort!}/decrypt`;
    const post = (values: number[]): Promise<Response> =>
      fetch(base, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(values.map((v) => encryptValue(v, pub))) });
    const over = await post([1, 2, 3, 4]);
    expect(over.status).toBe(413);
    expect(await over.json()).toMatchObject({ error: 'API_TOO_MANY_ENCRYPTED_FIELDS' });
    expect(await (await post([1, 2, 3])).json()).toEqual([1, 2, 3]);
  });
});

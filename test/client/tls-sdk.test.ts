// The Node SDK over https:// (src/client/tls-client.ts): connect() verifies the certificate-embedded document of
// every TLS connection before a request byte goes out, then offers the same Fetch-compatible API. The server is a
// minimal node:https server serving certificates in the documented format (tls-certs.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { ClientError, connect } from '../../src/client/node.ts';
import { attestedCert, p384Key, startAttestedHttpsServer, type AttestedHttpsServer } from './tls-certs.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

let dir: string;
let sim: NsmSimulator;
let other: NsmSimulator;
let pins: { PCR0: string; PCR1: string; PCR2: string };
const servers: AttestedHttpsServer[] = [];

async function server(s: NsmSimulator, opts: Parameters<typeof startAttestedHttpsServer>[1] = {}): Promise<AttestedHttpsServer> {
  const srv = await startAttestedHttpsServer(s, opts);
  servers.push(srv);
  return srv;
}

async function failure(p: Promise<unknown>): Promise<ClientError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ClientError);
    return err as ClientError;
  }
  throw new Error('expected a rejection');
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'tls-sdk-'));
  sim = await createNsmSimulator({ stateDir: path.join(dir, 'a'), identity: { agentVersion: 'v', app: 'app', config: '' } });
  other = await createNsmSimulator({ stateDir: path.join(dir, 'b'), identity: { agentVersion: 'v', app: 'other app', config: '' } });
  pins = { PCR0: hex(sim.pcrs[0]!), PCR1: hex(sim.pcrs[1]!), PCR2: hex(sim.pcrs[2]!) };
});

afterAll(async () => {
  for (const s of servers) await s.close();
  await rm(dir, { recursive: true, force: true });
});

describe('connect(https://…)', () => {
  it('verifies the certificate, then fetches over one keep-alive TLS connection (Response, json, post)', async () => {
    const srv = await server(sim);
    const client = await connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins, roots: [sim.rootPem] });
    try {
      expect(client.connected).toBe(true);
      expect(hex(client.attestation.pcrs.get(0)!)).toBe(pins.PCR0);
      const res = await client.fetch('/hello');
      expect(res).toBeInstanceOf(Response);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe('hello');
      expect(await client.json('/echo', { method: 'POST', json: { a: 1 } })).toEqual({ a: 1 });
      const big = new Uint8Array(300_000).fill(9);
      const echoed = new Uint8Array(await (await client.post('/echo', { body: big })).arrayBuffer());
      expect(echoed.length).toBe(big.length);
      expect((await client.get('/missing')).status).toBe(404);
      // Keep-alive: the pool reuses verified connections (the first one is connect()'s own).
      expect(srv.connections.length).toBeLessThan(srv.requests.length);
      expect(srv.requests.map((r) => r.url)).toEqual(['/hello', '/echo', '/echo', '/missing']);
    } finally {
      await client.close();
    }
    await expect(client.fetch('/hello')).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
  });

  it('a wrong PCR pin fails connect() with the attestation code; the server received no application byte', async () => {
    const srv = await server(sim);
    const err = await failure(connect(`https://127.0.0.1:${srv.port}/`, { pcrs: { ...pins, PCR1: '11'.repeat(48) }, roots: [sim.rootPem] }));
    expect(err.code).toBe('CLIENT_ATTESTATION_FAILED');
    expect(err.attestationCode).toBe('ATTESTATION_PCR_MISMATCH');
    await new Promise((r) => setTimeout(r, 50));
    // The client may cut the connection before the server has read its Finished (verification takes a few ms):
    // then the server never counts a finished handshake. Either way, no application byte arrived.
    expect(srv.connections.length).toBeLessThanOrEqual(1);
    expect(srv.connections.every((c) => c.bytes === 0)).toBe(true);
    expect(srv.requests).toEqual([]);
  });

  it('refuses the wrong root and a certificate whose document attests another key', async () => {
    const srv = await server(sim);
    expect((await failure(connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins, roots: [other.rootPem] }))).attestationCode).toBe('ATTESTATION_UNTRUSTED_ROOT');
    expect((await failure(connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins }))).attestationCode).toBe('ATTESTATION_UNTRUSTED_ROOT'); // AWS root by default
    const liar = await server(sim, { userData: p384Key().spkiDer });
    expect((await failure(connect(`https://127.0.0.1:${liar.port}/`, { pcrs: pins, roots: [sim.rootPem] }))).attestationCode).toBe('ATTESTED_CERT_KEY_MISMATCH');
    expect(srv.requests.length + liar.requests.length).toBe(0);
  });

  it('nonce: sends <nonce>.attest.<host> as SNI and requires that nonce in the document', async () => {
    const srv = await server(sim);
    const client = await connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins, roots: [sim.rootPem], nonce: true });
    try {
      expect(await (await client.fetch('/hello')).text()).toBe('hello');
      expect(srv.nonceNames).toHaveLength(1);
      const label = srv.nonceNames[0]!.split('.')[0]!;
      expect(srv.nonceNames[0]).toBe(`${label}.attest.127.0.0.1`);
      expect(label).toMatch(/^[A-Za-z0-9]{32}$/);
      expect(Buffer.from(client.attestation.nonce!).toString('base64')).toBe(label);
    } finally {
      await client.close();
    }
    const deaf = await server(sim, { ignoreNonce: true });
    const err = await failure(connect(`https://127.0.0.1:${deaf.port}/`, { pcrs: pins, roots: [sim.rootPem], nonce: true }));
    expect(err.attestationCode).toBe('ATTESTATION_NONCE_MISMATCH');
    expect(deaf.requests).toEqual([]);
  });

  it('verifies every new connection: after the enclave is replaced by another identity, requests fail and never reach it', async () => {
    const first = await server(sim);
    const port = first.port;
    const client = await connect(`https://127.0.0.1:${port}/`, { pcrs: pins, roots: [sim.rootPem, other.rootPem] });
    try {
      expect(await (await client.fetch('/hello')).text()).toBe('hello');
      // Same enclave, connections dropped: the next request reconnects and verifies again.
      first.closeConnections();
      await new Promise((r) => setTimeout(r, 50));
      expect(await (await client.fetch('/hello')).text()).toBe('hello');
      expect(first.connections.length).toBe(2);
      // Another enclave (other PCRs) takes the port over.
      await first.close();
      const impostor = await server(other, { port });
      const err = await failure(client.fetch('/hello'));
      expect(err.code).toBe('CLIENT_ATTESTATION_FAILED');
      expect(err.attestationCode).toBe('ATTESTATION_PCR_MISMATCH');
      expect(impostor.requests).toEqual([]);
      expect(impostor.connections.every((c) => c.bytes === 0)).toBe(true);
    } finally {
      await client.close();
    }
  });

  it('upgrade() over https: a WebSocket handshake and frames on a verified connection; a 404 is CLIENT_UPGRADE_FAILED', async () => {
    const srv = await server(sim);
    const client = await connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins, roots: [sim.rootPem] });
    try {
      const up = await client.upgrade('/ws', {
        headers: { Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==' },
      });
      expect(up.status).toBe(101);
      expect(up.headers.get('sec-websocket-accept')).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
      // One masked client text frame "hi" (RFC 6455 §5.3), echoed back unmasked.
      const mask = [1, 2, 3, 4];
      const payload = [...Buffer.from('hi')].map((b, i) => b ^ mask[i % 4]!);
      const writer = up.writable.getWriter();
      await writer.write(Uint8Array.from([0x81, 0x80 | 2, ...mask, ...payload]));
      const reader = up.readable.getReader();
      const { value } = await reader.read();
      expect(Buffer.from(value!).subarray(0, 4)).toEqual(Buffer.from([0x81, 2, 0x68, 0x69]));
      up.close();
      expect((await failure(client.upgrade('/nope', { headers: { Upgrade: 'websocket', Connection: 'Upgrade' } }))).code).toBe('CLIENT_UPGRADE_FAILED');
      // The refusal's reason phrase is the app's (decrypted) bytes: the status is reported, the phrase is not.
      const refused = await failure(client.upgrade('/refused-with-reason', { headers: { Upgrade: 'websocket', Connection: 'Upgrade' } }));
      expect([refused.code, refused.status]).toEqual(['CLIENT_UPGRADE_FAILED', 403]);
      expect(refused.message).not.toContain('4111');
    } finally {
      await client.close();
    }
  });

  /**
   * A hostile relay in front of `srv`: the first connection passes untouched; on every later one, `tamper` runs on
   * the client's socket right after the server's first handshake flight was relayed. `looping` resolves at the
   * 20th connection.
   */
  async function hostileRelay(srv: AttestedHttpsServer, tamper: (client: net.Socket) => void): Promise<{ port: number; looping: Promise<'looping'>; close(): void }> {
    let connections = 0;
    let loop!: () => void;
    const looping = new Promise<'looping'>((resolve) => (loop = () => resolve('looping')));
    const relay = net.createServer((c) => {
      const k = ++connections;
      if (k === 20) loop();
      const up = net.connect(srv.port, '127.0.0.1');
      c.on('error', () => {});
      up.on('error', () => {});
      c.pipe(up);
      up.on('end', () => c.end());
      up.on('data', (d: Buffer) => {
        if (c.destroyed) return;
        c.write(d);
        if (k > 1) tamper(c);
      });
      c.on('close', () => up.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    return { port: (relay.address() as net.AddressInfo).port, looping, close: () => relay.close() };
  }

  it.each([
    // A certificate that verifies, a socket already dead when it is handed over.
    ['resets it after the handshake', (c: net.Socket) => c.resetAndDestroy()],
    // No key needed: a garbage TLS record after the server's flight fails the socket (bad record MAC) before undici
    // listens to it; unheard, that 'error' was an uncaught exception that ended the client's process.
    ['appends a garbage TLS record', (c: net.Socket) => void c.write(Buffer.from('1703030010' + '00'.repeat(16), 'hex'))],
  ])('a relay that %s on a reconnect fails the request; the process and the client go on', async (_label, tamper) => {
    const srv = await server(sim);
    const relay = await hostileRelay(srv, tamper);
    const client = await connect(`https://127.0.0.1:${relay.port}/`, { pcrs: pins, roots: [sim.rootPem] });
    try {
      expect(await (await client.fetch('/hello')).text()).toBe('hello');
      srv.closeConnections();
      const outcome = await Promise.race([failure(client.fetch('/hello', { timeoutMs: 30_000 })), relay.looping]);
      expect(outcome).not.toBe('looping');
      expect((outcome as ClientError).code).toBe('CLIENT_CONNECT_FAILED');
    } finally {
      await client.close();
      relay.close();
    }
  });

  it("a malformed response (head or body) fails typed, and neither message nor cause carries the app's bytes", async () => {
    const SECRET = '4111111111111111';
    const key = p384Key();
    const cert = await attestedCert(sim, 'localhost', { key });
    const answers = [`HTTP/1.1 2x0 card=${SECRET}\r\n\r\n`, `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz${SECRET}\r\n`];
    let next = 0;
    const srv = tls.createServer({ key: key.keyPem, cert: cert.pem }, (socket) => {
      socket.on('error', () => {});
      socket.once('data', () => socket.end(answers[next++] ?? ''));
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const client = await connect(`https://127.0.0.1:${(srv.address() as net.AddressInfo).port}/`, { pcrs: pins, roots: [sim.rootPem] });
    try {
      const head = await failure(client.fetch('/'));
      expect(head.code).toBe('CLIENT_PROTOCOL');
      expect(inspect(head, { depth: 8 })).not.toContain(SECRET.slice(0, 6));
      const res = await client.fetch('/');
      const body = await failure(res.text());
      expect(body.code).toBe('CLIENT_PROTOCOL');
      expect(inspect(body, { depth: 8 })).not.toContain(SECRET.slice(0, 6));
    } finally {
      await client.close();
      srv.close();
    }
  });

  it('a response fetch cannot represent (status 999) releases its connection: later requests still get through', async () => {
    const key = p384Key();
    const cert = await attestedCert(sim, 'localhost', { key });
    let answered = 0;
    // The first answers never end (no length, connection kept open); then a good one.
    const srv = tls.createServer({ key: key.keyPem, cert: cert.pem }, (socket) => {
      socket.on('error', () => {});
      socket.on('data', () => void socket.write(answered++ < 2 ? 'HTTP/1.1 999 Nope\r\n\r\n' : 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'));
    });
    await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
    const client = await connect(`https://127.0.0.1:${(srv.address() as net.AddressInfo).port}/`, { pcrs: pins, roots: [sim.rootPem], maxInFlight: 2 });
    try {
      for (let i = 0; i < 2; i++) expect((await failure(client.fetch('/'))).code).toBe('CLIENT_PROTOCOL');
      // Both pool connections used to stay held by those unread answers: this one queued forever, deaf to abort.
      const third = client.fetch('/').then(async (r) => r.text());
      expect(await Promise.race([third, new Promise((resolve) => setTimeout(() => resolve('still pending after 5 s'), 5000))])).toBe('ok');
    } finally {
      await client.close();
      srv.close();
    }
  });

  it('refuses options that only apply to the Noise channel, and openStream', async () => {
    const srv = await server(sim);
    expect((await failure(connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins, roots: [sim.rootPem], headers: { a: 'b' } }))).code).toBe('CLIENT_BAD_OPTIONS');
    expect((await failure(connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins, roots: [sim.rootPem], transport: 'data' }))).code).toBe('CLIENT_BAD_OPTIONS');
    expect((await failure(connect('ws://127.0.0.1:1/', { pcrs: pins, nonce: true }))).code).toBe('CLIENT_BAD_OPTIONS');
    // nonce switches a check on: a value that is neither a boolean nor bytes (a string from an environment variable)
    // must not leave it silently off.
    for (const nonce of ['true', 1, {}]) {
      const err = await failure(connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins, roots: [sim.rootPem], nonce: nonce as unknown as boolean }));
      expect(err.code).toBe('CLIENT_BAD_OPTIONS');
      expect(err.message).toMatch(/^nonce: /);
    }
    const client = await connect(`https://127.0.0.1:${srv.port}/`, { pcrs: pins, roots: [sim.rootPem] });
    try {
      expect((await failure(client.openStream())).code).toBe('CLIENT_BAD_OPTIONS');
    } finally {
      await client.close();
    }
  });
});

// Socket errors of an https:// client, typed by what the caller may do next:
// - a connection reset after the request was written may have reached the app: CLIENT_RETRYABLE ("not re-sent"),
//   never CLIENT_CONNECT_FAILED (which says nothing was sent, so a caller would retry a payment);
// - a TLS failure while connecting names the TLS error code only: OpenSSL's text is not ours to pass on.
import net from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { ClientError, connect } from '../../src/client/node.ts';
import { startRawAttestedTls, type RawAttestedTls } from './tls-certs.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

let dir: string;
let sim: NsmSimulator;
let server: RawAttestedTls;
let plain: net.Server;
let plainPort: number;
/** Requests the server read; the first one's connection is reset once it has arrived. */
let requests = 0;
const plainSockets = new Set<net.Socket>();

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'https-socket-errors-'));
  sim = await createNsmSimulator({ stateDir: dir, identity: { agentVersion: 'v', app: 'app', config: '' } });
  server = await startRawAttestedTls(sim, (t, raw) => {
    t.on('data', () => {
      if (++requests === 1) raw.resetAndDestroy(); // the request reached us: RST
      else t.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
    });
  });
  // Not TLS at all: the client's handshake gets an HTTP answer.
  plain = net.createServer((s) => {
    plainSockets.add(s);
    s.on('error', () => {});
    s.on('close', () => plainSockets.delete(s));
    s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n');
  });
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
  plainPort = (plain.address() as net.AddressInfo).port;
});

afterAll(async () => {
  await server?.close();
  for (const s of plainSockets) s.destroy();
  await new Promise((resolve) => plain.close(resolve));
  await rm(dir, { recursive: true, force: true });
});

const pins = () => ({ PCR0: hex(sim.pcrs[0]!), PCR1: hex(sim.pcrs[1]!), PCR2: hex(sim.pcrs[2]!) });

describe('https:// socket errors', () => {
  it('a reset after the request was sent is CLIENT_RETRYABLE (may have reached the app), and the next request gets a fresh connection', async () => {
    const client = await connect(`https://127.0.0.1:${server.port}/`, { pcrs: pins(), roots: [sim.rootPem], requestTimeoutMs: 20_000 });
    try {
      const err = await client.fetch('/pay', { method: 'POST', body: 'x' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ClientError);
      expect((err as ClientError).code).toBe('CLIENT_RETRYABLE');
      expect((err as ClientError).message).toMatch(/\(ECONNRESET\) while the request was in flight; it was not re-sent/);
      expect(requests).toBe(1);
      const res = await client.fetch('/hello');
      expect(await res.text()).toBe('hello');
    } finally {
      await client.close();
    }
  });

  it('a TLS failure while connecting names the TLS error code, without OpenSSL\'s text or a cause', async () => {
    const err = await connect(`https://127.0.0.1:${plainPort}/`, { pcrs: pins(), roots: [sim.rootPem], connectTimeoutMs: 10_000 }).then(
      async (c) => {
        await c.close();
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ClientError);
    const e = err as ClientError;
    expect(e.code).toBe('CLIENT_CONNECT_FAILED');
    expect(e.message).toMatch(/^TLS connection to 127\.0\.0\.1:\d+ failed \(ERR_SSL_[A-Z_]+\)$/);
    expect(e.message).not.toMatch(/SSL routines|error:[0-9A-F]{8}/i);
    expect(e.cause).toBeUndefined();
    expect(e.retryable).toBe(true);
  });
});

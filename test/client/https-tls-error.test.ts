// An https:// request in flight whose connection gets a corrupt TLS record fails at once, typed, naming the TLS
// error code only — not after requestTimeoutMs: Node reports a bad record as 'error' on the TLSSocket without
// closing it, and undici fails a request only when its socket closes. The pool then dials (and verifies) afresh.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { ClientError, connect } from '../../src/client/node.ts';
import { startRawAttestedTls, type RawAttestedTls } from './tls-certs.ts';

/** A TLS application-data record that no key decrypts. */
const GARBAGE_RECORD = Buffer.concat([Buffer.from([0x17, 0x03, 0x03, 0x00, 0x40]), Buffer.alloc(64, 0xab)]);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

let dir: string;
let sim: NsmSimulator;
let server: RawAttestedTls;
let port: number;
/** TLS connections that finished a handshake; the first one answers its first request with a garbage record. */
let handshakes = 0;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'https-tls-error-'));
  sim = await createNsmSimulator({ stateDir: dir, identity: { agentVersion: 'v', app: 'app', config: '' } });
  server = await startRawAttestedTls(sim, (t, raw, k) => {
    handshakes = k;
    t.on('data', () => {
      // Written under TLS, on the raw TCP socket: the client's TLS layer is what must fail.
      if (k === 1) raw.write(GARBAGE_RECORD);
      else t.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
    });
  });
  port = server.port;
});

afterAll(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('https:// with a corrupt TLS record while a request is in flight', () => {
  it('fails the request at once, typed and naming the TLS error code; the next request gets a fresh verified connection', async () => {
    const pins = { PCR0: hex(sim.pcrs[0]!), PCR1: hex(sim.pcrs[1]!), PCR2: hex(sim.pcrs[2]!) };
    const client = await connect(`https://127.0.0.1:${port}/`, { pcrs: pins, roots: [sim.rootPem], requestTimeoutMs: 20_000 });
    try {
      let timer: NodeJS.Timeout | undefined;
      // A bound on this test's wait (not a performance check): requestTimeoutMs is 20 s, a hang would reach it.
      const stillWaiting = new Promise<'still waiting after 5 s'>((resolve) => (timer = setTimeout(() => resolve('still waiting after 5 s'), 5_000)));
      const attempt = client.fetch('/hello').then(
        () => 'answered',
        (err: unknown) => err,
      );
      const outcome = await Promise.race([attempt, stillWaiting]);
      clearTimeout(timer);
      expect(outcome).toBeInstanceOf(ClientError);
      const err = outcome as ClientError;
      expect(err.code).toBe('CLIENT_RETRYABLE');
      expect(err.message).toMatch(/the connection failed \(ERR_SSL_[A-Z_]+\) while the request was in flight/);
      // OpenSSL's own text ("error:0A000119:SSL routines:...") stays out of the message and of any cause.
      expect(err.message).not.toMatch(/SSL routines|error:[0-9A-F]{8}|bad record mac|decryption failed/i);
      expect(err.cause).toBeUndefined();

      const res = await client.fetch('/hello');
      expect(await res.text()).toBe('hello');
      expect(handshakes).toBe(2);
    } finally {
      await client.close();
    }
  });
});

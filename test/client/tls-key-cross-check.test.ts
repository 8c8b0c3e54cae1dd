// connectVerifiedTls binds the attestation to the key the TLS handshake proved as OpenSSL read it from the leaf,
// not only as the attestation check's own DER reader read it. Were the two readings ever to disagree about one
// certificate (a parser differential), a genuine document for the enclave's key could vouch for a connection
// whose handshake proved another key. Here the certificate check is made to report another key for a genuine
// server: the connection must be refused before a request byte is written.
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import type { PcrPins } from '../../src/attestation/verify.ts';
import type * as AttestedCert from '../../src/client/attested-cert.ts';
import { connectVerifiedTls } from '../../src/client/tls-connect.ts';
import { p384Key, startAttestedHttpsServer, type AttestedHttpsServer } from './tls-certs.ts';

const reading = vi.hoisted(() => ({ otherSpki: null as Uint8Array | null }));
vi.mock('../../src/client/attested-cert.ts', async (importOriginal) => {
  const real = await importOriginal<typeof AttestedCert>();
  return {
    ...real,
    verifyAttestedCertificate: async (...args: Parameters<typeof real.verifyAttestedCertificate>) => {
      const v = await real.verifyAttestedCertificate(...args);
      return reading.otherSpki === null ? v : { ...v, certificate: { ...v.certificate, spkiDer: reading.otherSpki } };
    },
  };
});

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
let dir: string;
let sim: NsmSimulator;
let server: AttestedHttpsServer;
let verify: { roots: string[]; pcrs: PcrPins };

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'tls-key-cross-'));
  sim = await createNsmSimulator({ stateDir: dir, identity: { agentVersion: 'v', app: 'app', config: '' } });
  server = await startAttestedHttpsServer(sim);
  verify = { roots: [sim.rootPem], pcrs: { PCR0: hex(sim.pcrs[0]!), PCR1: hex(sim.pcrs[1]!), PCR2: hex(sim.pcrs[2]!) } };
});

afterAll(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

describe('connectVerifiedTls: the handshake key and the attested key are one', () => {
  it('connects when both readings agree', async () => {
    reading.otherSpki = null;
    const { socket } = await connectVerifiedTls({ host: 'localhost', port: server.port, verify });
    socket.destroy();
  });

  it('refuses, before writing, when the check read another key than the one TLS proved', async () => {
    reading.otherSpki = p384Key().spkiDer;
    const before = server.connections.map((c) => c.bytes).reduce((a, b) => a + b, 0);
    const err = await connectVerifiedTls({ host: 'localhost', port: server.port, verify }).then(
      () => null,
      (e: unknown) => e as { code?: string; attestationCode?: string },
    );
    expect(err?.code).toBe('CLIENT_ATTESTATION_FAILED');
    expect(err?.attestationCode).toBe('ATTESTED_CERT_KEY_MISMATCH');
    await new Promise((r) => setTimeout(r, 100));
    expect(server.connections.map((c) => c.bytes).reduce((a, b) => a + b, 0)).toBe(before);
    expect(server.requests).toEqual([]);
  });

  it('an unreadable SPKI from the check is a mismatch, not a crash', async () => {
    reading.otherSpki = new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]);
    const err = await connectVerifiedTls({ host: 'localhost', port: server.port, verify }).then(
      () => null,
      (e: unknown) => e as { attestationCode?: string },
    );
    expect(err?.attestationCode).toBe('ATTESTED_CERT_KEY_MISMATCH');
  });

  it("a leaf key OpenSSL cannot hand out is a mismatch, not an unhandled rejection and a hang", async () => {
    reading.otherSpki = null;
    const spy = vi.spyOn(X509Certificate.prototype, 'publicKey', 'get').mockImplementation(() => {
      throw new Error('unsupported key');
    });
    try {
      const err = await connectVerifiedTls({ host: 'localhost', port: server.port, verify, timeoutMs: 5_000 }).then(
        () => null,
        (e: unknown) => e as { attestationCode?: string },
      );
      expect(err?.attestationCode).toBe('ATTESTED_CERT_KEY_MISMATCH');
    } finally {
      spy.mockRestore();
    }
  });
});

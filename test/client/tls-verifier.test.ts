// The attested-certificate verifier (src/client/attested-cert.ts) against good and tampered certificates built
// from the NSM simulator in the documented format (tls-certs.ts), plus its browser safety.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { parseAttestedCertificate, verifyAttestedCertificate } from '../../src/client/attested-cert.ts';
import { ROOT, walkImports } from '../util/import-graph.ts';
import { attestedCert, buildCert, evervaultShapedCert, p384Key, type AttestedCert } from './tls-certs.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

let dir: string;
let sim: NsmSimulator;
let other: NsmSimulator;
let good: AttestedCert;
let pins: { PCR0: string; PCR1: string; PCR2: string };

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'tls-verifier-'));
  sim = await createNsmSimulator({ stateDir: path.join(dir, 'a'), identity: { agentVersion: 'v', app: 'app', config: '' } });
  other = await createNsmSimulator({ stateDir: path.join(dir, 'b'), identity: { agentVersion: 'v', app: 'app', config: '' } });
  pins = { PCR0: hex(sim.pcrs[0]!), PCR1: hex(sim.pcrs[1]!), PCR2: hex(sim.pcrs[2]!) };
  good = await attestedCert(sim, 'enclave.test');
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const codeOf = async (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'passed',
    (err: { code?: string }) => err.code ?? String(err),
  );

describe('verifyAttestedCertificate', () => {
  it('accepts a good certificate (DER and PEM) and returns the SAN document, the host and the SPKI', async () => {
    const v = await verifyAttestedCertificate(good.der, { roots: [sim.rootPem], pcrs: pins });
    expect(v.certificate.hostnames).toEqual(['enclave.test']);
    expect(v.certificate.spkiDer).toEqual(good.key.spkiDer);
    expect(v.documentBytes).toEqual(good.document);
    expect(hex(v.attestation.userData!)).toBe(hex(good.key.spkiDer));
    const fromPem = await verifyAttestedCertificate(good.pem, { roots: [sim.rootPem], pcrs: pins });
    expect(fromPem.certificate.der).toEqual(good.der);
    expect(await codeOf(verifyAttestedCertificate(new TextEncoder().encode(good.pem), { roots: [sim.rootPem], pcrs: pins }))).toBe('passed');
  });

  it('refuses a document whose user_data is another key: ATTESTED_CERT_KEY_MISMATCH', async () => {
    const stolen = await attestedCert(sim, 'enclave.test', { userData: p384Key().spkiDer });
    expect(await codeOf(verifyAttestedCertificate(stolen.der, { roots: [sim.rootPem], pcrs: pins }))).toBe('ATTESTED_CERT_KEY_MISMATCH');
    // A genuine document lifted from one certificate into a certificate for the attacker's key.
    const attacker = p384Key();
    const lifted = await buildCert(attacker, ['enclave.test', `${hex(good.document)}.enclave.test`]);
    expect(await codeOf(verifyAttestedCertificate(lifted, { roots: [sim.rootPem], pcrs: pins }))).toBe('ATTESTED_CERT_KEY_MISMATCH');
  });

  it('refuses a wrong PCR pin, an expired NSM certificate, an untrusted root and a wrong nonce', async () => {
    const wrong = { ...pins, PCR2: '00'.repeat(47) + '01' };
    expect(await codeOf(verifyAttestedCertificate(good.der, { roots: [sim.rootPem], pcrs: wrong }))).toBe('ATTESTATION_PCR_MISMATCH');
    expect(await codeOf(verifyAttestedCertificate(good.der, { roots: [sim.rootPem], pcrs: pins, now: Date.now() + 4 * 3600_000 }))).toBe('ATTESTATION_CERT_EXPIRED');
    expect(await codeOf(verifyAttestedCertificate(good.der, { roots: [other.rootPem], pcrs: pins }))).toBe('ATTESTATION_UNTRUSTED_ROOT');
    expect(await codeOf(verifyAttestedCertificate(good.der, { pcrs: pins }))).toBe('ATTESTATION_UNTRUSTED_ROOT'); // default: the AWS root
    const nonce = new Uint8Array(24).fill(7);
    const fresh = await attestedCert(sim, 'x.attest.enclave.test', { nonce });
    expect(await codeOf(verifyAttestedCertificate(fresh.der, { roots: [sim.rootPem], pcrs: pins, nonce }))).toBe('passed');
    expect(await codeOf(verifyAttestedCertificate(fresh.der, { roots: [sim.rootPem], pcrs: pins, nonce: new Uint8Array(24).fill(8) }))).toBe('ATTESTATION_NONCE_MISMATCH');
    expect(await codeOf(verifyAttestedCertificate(good.der, { roots: [sim.rootPem], pcrs: pins, maxAgeMs: 1, now: Date.now() + 60_000 }))).toBe('ATTESTATION_TOO_OLD');
  });

  it('refuses a tampered document in the SAN (one flipped byte): the signature no longer verifies', async () => {
    const doc = good.document.slice();
    doc[doc.length - 10]! ^= 1;
    const tampered = await buildCert(good.key, ['enclave.test', `${hex(doc)}.enclave.test`]);
    expect(await codeOf(verifyAttestedCertificate(tampered, { roots: [sim.rootPem], pcrs: pins }))).toBe('ATTESTATION_SIGNATURE');
  });

  it('checks a separate document against the certificate (Evervault /.well-known), still binding the key', async () => {
    const plain = await buildCert(good.key, ['enclave.test']);
    expect(await codeOf(verifyAttestedCertificate(plain, { roots: [sim.rootPem], pcrs: pins }))).toBe('ATTESTED_CERT_NO_DOCUMENT');
    const wellKnown = await sim.attest({ userData: good.key.spkiDer, nonce: new Uint8Array(32) });
    expect(await codeOf(verifyAttestedCertificate(plain, { roots: [sim.rootPem], pcrs: pins, document: wellKnown }))).toBe('passed');
    const foreign = await sim.attest({ userData: p384Key().spkiDer });
    expect(await codeOf(verifyAttestedCertificate(plain, { roots: [sim.rootPem], pcrs: pins, document: foreign }))).toBe('ATTESTED_CERT_KEY_MISMATCH');
  });

  it('takes the longest first label (Evervault rule) and ignores short hex host names', async () => {
    const key = p384Key();
    const doc = await sim.attest({ userData: key.spkiDer });
    const der = await buildCert(key, ['cafe.example', `${hex(doc)}.enclave.test`, 'beef.enclave.test']);
    const parsed = parseAttestedCertificate(der);
    expect(parsed.document).toEqual(doc);
    expect(parsed.hostnames).toEqual(['cafe.example', 'beef.enclave.test']);
  });

  it("verifies Evervault's shape: RSA-CA-issued leaf, the document under every host name, a 256-byte nonce", async () => {
    const hosts = ['synthetic-cage.app-1bba8ba15402.cages.evervault.com', 'synthetic-cage.app_1bba8ba15402.cages.evervault.com'];
    const ev = await evervaultShapedCert(sim, hosts);
    const v = await verifyAttestedCertificate(ev.der, { roots: [sim.rootPem], pcrs: pins });
    expect(v.documentBytes).toEqual(ev.document);
    expect(v.attestation.nonce?.length).toBe(256);
    // The document's copies under each host name are not host names.
    expect(v.certificate.hostnames).toEqual(hosts);
    expect(v.certificate.subject).toContain('Evervault');
  });

  it('names garbage as ATTESTED_CERT_MALFORMED', async () => {
    expect(await codeOf(verifyAttestedCertificate(new Uint8Array([0x30, 0x03, 1, 2, 3])))).toBe('ATTESTED_CERT_MALFORMED');
    expect(await codeOf(verifyAttestedCertificate('not a pem'))).toBe('ATTESTED_CERT_MALFORMED');
    expect(await codeOf(verifyAttestedCertificate(good.der.subarray(0, 200)))).toBe('ATTESTED_CERT_MALFORMED');
  });

  it('is browser-safe: no node:* import and no Buffer reachable from it', () => {
    const { files, offenders } = walkImports(resolve(ROOT, 'src/client/attested-cert.ts'), { skipTypeOnly: true, forbiddenPackages: ['undici', 'ws'] });
    expect(offenders).toEqual([]);
    expect(files.map((f) => f.slice(ROOT.length + 1))).toContain('src/attestation/verify.ts');
    // The browser entry exports the verifier but never reaches the Node-only https client.
    const sdk = walkImports(resolve(ROOT, 'src/client/index.ts'), { skipTypeOnly: true }).files.map((f) => f.slice(ROOT.length + 1));
    expect(sdk).toContain('src/client/attested-cert.ts');
    expect(sdk).not.toContain('src/client/tls-client.ts');
    expect(sdk).not.toContain('src/client/tls-connect.ts');
  });
});

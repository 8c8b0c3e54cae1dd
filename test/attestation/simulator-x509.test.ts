// The simulator's own X.509 writer (simulator-x509.ts), beyond what the simulator's CA and leaves exercise: a
// validity across 2050 (UTCTime, then GeneralizedTime, as RFC 5280 wants and the strict reader enforces), the
// CA and leaf extensions, and signatures an independent strict parser (python3-cryptography) verifies.
import { execFile } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeName, mintCertificate, OID_C, OID_CN, OID_O } from '../../src/attestation/simulator-x509.ts';
import { parseCertificate } from '../../src/attestation/x509.ts';

const dir = mkdtempSync(join(tmpdir(), 'sim-x509-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const P384 = { name: 'ECDSA', namedCurve: 'P-384' } as const;

describe('simulator X.509 writer', () => {
  it('writes a CA and a leaf that both strict parsers accept, with times on either side of 2050', async () => {
    const caKeys = (await webcrypto.subtle.generateKey(P384, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const leafKeys = (await webcrypto.subtle.generateKey(P384, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const caName = encodeName([[OID_C, 'US'], [OID_O, 'Ünïcode O'], [OID_CN, 'x'.repeat(200)]]); // a long-form length
    const notBefore = Date.UTC(2049, 11, 31, 23, 59, 59, 500);
    const notAfter = Date.UTC(2050, 0, 1, 0, 0, 1);
    const ca = await mintCertificate({ subject: caName, issuer: caName, publicKey: caKeys.publicKey, signingKey: caKeys.privateKey, notBefore, notAfter, ca: true, pathLen: 0 });
    const leaf = await mintCertificate({
      subject: encodeName([[OID_C, 'US'], [OID_CN, 'leaf']]),
      issuer: caName,
      publicKey: leafKeys.publicKey,
      signingKey: caKeys.privateKey,
      notBefore,
      notAfter,
      ca: false,
    });

    const c = parseCertificate(ca, 'ca');
    expect(c.subject).toBe(c.issuer);
    expect(c.notBefore.toISOString()).toBe('2049-12-31T23:59:59.000Z'); // whole seconds
    expect(c.notAfter.toISOString()).toBe('2050-01-01T00:00:01.000Z');
    expect(c.ca).toEqual({ cA: true, pathLen: 0 });
    expect(c.keyUsage).toBe(0x86);
    expect(c.signatureAlgorithm).toBe('1.2.840.10045.4.3.3');
    const l = parseCertificate(leaf, 'leaf');
    expect(l.issuer).toBe(c.subject);
    expect(l.ca).toEqual({ cA: false });
    expect(l.keyUsage).toBe(0xc0);
    // UTCTime (0x17) for 2049, GeneralizedTime (0x18) for 2050.
    expect(Buffer.from(ca).includes(Buffer.from([0x17, 13, ...Buffer.from('491231235959Z')]))).toBe(true);
    expect(Buffer.from(ca).includes(Buffer.from([0x18, 15, ...Buffer.from('20500101000001Z')]))).toBe(true);

    writeFileSync(join(dir, 'ca.der'), ca);
    writeFileSync(join(dir, 'leaf.der'), leaf);
    const script = resolve(import.meta.dirname, 'strict-x509.py');
    const { stdout } = await promisify(execFile)('/usr/bin/python3', [script, join(dir, 'ca.der'), join(dir, 'leaf.der')], { timeout: 30_000 });
    const checked = JSON.parse(stdout) as { subject?: string; error?: string }[];
    expect(checked.map((x) => x.error)).toEqual([undefined, undefined]);
    expect(checked[0]!.subject).toContain('O=Ünïcode O');
  });
});

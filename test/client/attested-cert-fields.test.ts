// parseAttestedCertificate reads certificates with the attestation chain's strict DER reader (not pkijs). Its
// fields are checked here against independent parsers: OpenSSL builds the certificates (every GeneralName form
// in one SAN, RSA and EC keys) and node:crypto's X509Certificate reads them back.
import { execFileSync } from 'node:child_process';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAttestedCertificate } from '../../src/client/attested-cert.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'attested-cert-fields-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** A self-signed certificate from `openssl req`, DER. */
function opensslCert(keyArgs: string[], subject: string, exts: string[]): Uint8Array {
  const out = path.join(dir, `c${n++}`);
  execFileSync('openssl', ['req', '-x509', '-newkey', ...keyArgs, '-nodes', '-keyout', `${out}.key`, '-out', `${out}.pem`, '-subj', subject, '-days', '2', ...exts.flatMap((e) => ['-addext', e])], { stdio: 'ignore' });
  return new Uint8Array(new X509Certificate(readFileSync(`${out}.pem`)).raw);
}

function expectSameAsNode(der: Uint8Array): ReturnType<typeof parseAttestedCertificate> {
  const parsed = parseAttestedCertificate(der);
  const x = new X509Certificate(der);
  expect(Buffer.from(parsed.spkiDer)).toEqual(x.publicKey.export({ type: 'spki', format: 'der' }));
  expect(createPublicKey({ key: Buffer.from(parsed.spkiDer), format: 'der', type: 'spki' }).equals(x.publicKey)).toBe(true);
  expect(parsed.notBefore.getTime()).toBe(new Date(x.validFrom).getTime());
  expect(parsed.notAfter.getTime()).toBe(new Date(x.validTo).getTime());
  const nodeDns = (x.subjectAltName ?? '').split(', ').filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4));
  expect([...parsed.hostnames, ...(parsed.document === null ? [] : nodeDns.filter((d) => !parsed.hostnames.includes(d)))].sort()).toEqual(nodeDns.sort());
  return parsed;
}

describe('parseAttestedCertificate reads what OpenSSL wrote', () => {
  it('EC P-256 and P-384 and RSA keys: SPKI bytes, validity and subject', () => {
    for (const key of [['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['rsa:2048']]) {
      const parsed = expectSameAsNode(opensslCert(key, '/C=US/O=Example Org/CN=enclave.example', ['subjectAltName=DNS:enclave.example']));
      expect(parsed.subject).toBe('C=US, O=Example Org, CN=enclave.example');
      expect(parsed.hostnames).toEqual(['enclave.example']);
      expect(parsed.document).toBeNull();
    }
  });

  it('takes only the dNSNames of a SAN holding every other GeneralName form, in order', () => {
    const parsed = expectSameAsNode(
      opensslCert(['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], '/CN=x', ['subjectAltName=email:a@b.example,DNS:one.example,IP:192.0.2.1,URI:https://u.example/,IP:2001:db8::1,RID:1.2.3.4,DNS:two.example']),
    );
    expect(parsed.hostnames).toEqual(['one.example', 'two.example']);
  });

  it('finds the document in a long hex first label, with a critical SAN and other extensions around it', () => {
    const doc = 'a5'.repeat(2000);
    const parsed = expectSameAsNode(
      opensslCert(['ec', '-pkeyopt', 'ec_paramgen_curve:P-384'], '/CN=attested', ['basicConstraints=critical,CA:FALSE', `subjectAltName=critical,DNS:host.example,DNS:${doc.slice(0, 63)}.x.example`, 'keyUsage=digitalSignature', 'extendedKeyUsage=serverAuth']),
    );
    // 63 hex characters is a host name label, not a document (a document is kilobytes).
    expect(parsed.document).toBeNull();
    expect(parsed.hostnames).toEqual(['host.example', `${doc.slice(0, 63)}.x.example`]);
  });

  it("two first labels of the longest length: the last one is the document, as in Evervault's reduce", () => {
    const a = 'a5'.repeat(100);
    const b = 'b6'.repeat(100);
    const parsed = expectSameAsNode(opensslCert(['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], '/CN=x', [`subjectAltName=DNS:${a}.one.example,DNS:${b}.x.example`]));
    expect(parsed.document).toEqual(new Uint8Array(100).fill(0xb6));
    expect(parsed.hostnames).toEqual([`${a}.one.example`]);
  });

  it("a certificate without a SAN (OpenSSL's default extensions only) has no names and no document", () => {
    const parsed = expectSameAsNode(opensslCert(['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], '/CN=bare', []));
    expect(parsed.hostnames).toEqual([]);
    expect(parsed.document).toBeNull();
  });
});

describe('parseAttestedCertificate refuses what is not one well-formed certificate', () => {
  const good = opensslCert(['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'], '/CN=x', ['subjectAltName=DNS:a.example']);
  const codeOf = (input: Uint8Array): string => {
    try {
      parseAttestedCertificate(input);
      return 'parsed';
    } catch (err) {
      return (err as { code?: string }).code ?? String(err);
    }
  };

  it('trailing bytes, truncation, an indefinite length', () => {
    expect(codeOf(new Uint8Array([...good, 0]))).toBe('ATTESTED_CERT_MALFORMED');
    expect(codeOf(good.subarray(0, good.length - 1))).toBe('ATTESTED_CERT_MALFORMED');
    const indefinite = new Uint8Array([0x30, 0x80, ...good.subarray(4), 0, 0]);
    expect(codeOf(indefinite)).toBe('ATTESTED_CERT_MALFORMED');
  });

  it('two subjectAltName extensions', () => {
    // The SAN's extnID (2.5.29.17) rewritten into a second one is not possible in place; build one with two.
    const out = path.join(dir, 'two-san');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${out}.key`, '-out', `${out}.pem`, '-subj', '/CN=x', '-days', '1', '-addext', 'subjectAltName=DNS:a.example', '-addext', '2.5.29.17=DER:300d820b622e6578616d706c652e'], { stdio: 'ignore' });
    const der = new Uint8Array(new X509Certificate(readFileSync(`${out}.pem`)).raw);
    expect(codeOf(der)).toBe('ATTESTED_CERT_MALFORMED');
  });
});

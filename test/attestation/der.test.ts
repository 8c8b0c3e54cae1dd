// The strict DER reader behind certificate parsing (der.ts, x509.ts). Differential: every certificate of every
// real Nitro document and of a simulator chain parses to the same fields as pkijs/asn1js (an independent, general
// parser) reads. Strictness: encodings DER forbids are refused with ATTESTATION_CHAIN, never thrown raw.
import type * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DerError, DerReader, readTime, TAG } from '../../src/attestation/der.ts';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { ecdsaDerToRaw } from '../../src/attestation/ecdsa.ts';
import { AttestationError } from '../../src/attestation/errors.ts';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { parseCertificate } from '../../src/attestation/x509.ts';
import { concatBytes, fromHex, toHex } from '../../src/util/bytes.ts';
import { fixtureBytes, nitroIndex } from './fixtures.ts';

const NAMES: Record<string, string> = { '2.5.4.3': 'CN', '2.5.4.6': 'C', '2.5.4.7': 'L', '2.5.4.8': 'ST', '2.5.4.10': 'O', '2.5.4.11': 'OU' };

function pkijsView(der: Uint8Array) {
  const c = pkijs.Certificate.fromBER(der.slice());
  const name = (n: pkijs.RelativeDistinguishedNames) =>
    n.typesAndValues.map((tv) => `${NAMES[tv.type] ?? tv.type}=${String((tv.value.valueBlock as { value?: unknown }).value)}`).join(', ');
  const bc = c.extensions?.find((e) => e.extnID === '2.5.29.19')?.parsedValue as pkijs.BasicConstraints | undefined;
  const ku = c.extensions?.find((e) => e.extnID === '2.5.29.15')?.parsedValue as asn1js.BitString | undefined;
  const pl = bc?.pathLenConstraint;
  return {
    subject: name(c.subject),
    issuer: name(c.issuer),
    notBefore: c.notBefore.value.getTime(),
    notAfter: c.notAfter.value.getTime(),
    publicKey: toHex(c.subjectPublicKeyInfo.subjectPublicKey.valueBlock.valueHexView),
    tbs: toHex(c.tbsView),
    signature: toHex(c.signatureValue.valueBlock.valueHexView),
    cA: bc?.cA,
    pathLen: pl === undefined ? undefined : typeof pl === 'number' ? pl : pl.valueBlock.valueDec,
    keyUsage: ku?.valueBlock.valueHexView[0],
  };
}

function ourView(der: Uint8Array) {
  const p = parseCertificate(der, 'x');
  return {
    subject: p.subject,
    issuer: p.issuer,
    notBefore: p.notBefore.getTime(),
    notAfter: p.notAfter.getTime(),
    publicKey: toHex(p.publicKey),
    tbs: toHex(p.tbs),
    signature: toHex(p.signature),
    cA: p.ca?.cA,
    pathLen: p.ca?.pathLen,
    keyUsage: p.keyUsage,
  };
}

function chainCode(der: Uint8Array): string {
  try {
    parseCertificate(der, 'x');
    return 'PARSED';
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    return (err as AttestationError).code;
  }
}

const certs = nitroIndex.documents.flatMap((f) => {
  const d = parseAttestationDocument(fixtureBytes(f), { allowEmptyPublicKey: true }).document;
  return [d.certificate, ...d.cabundle].map((der, i) => ({ name: `${f.file} #${i}`, der }));
});
const sample = certs[0]!.der;

describe('certificates parse to the same fields as pkijs reads', () => {
  it.each(certs.map((c) => [c.name, c.der] as const))('%s', (_name, der) => {
    expect(ourView(der)).toEqual(pkijsView(der));
  });

  const dir = mkdtempSync(join(tmpdir(), 'der-sim-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  it('a simulator chain (its leaf, intermediate and root)', async () => {
    const sim = await createNsmSimulator({ stateDir: dir, identity: { agentVersion: '0.1.0', app: 'x', config: '' } });
    const d = parseAttestationDocument(await sim.attest({})).document;
    for (const der of [d.certificate, ...d.cabundle]) expect(ourView(der)).toEqual(pkijsView(der));
  });
});

describe('encodings DER forbids are refused as ATTESTATION_CHAIN', () => {
  it('starts from a certificate that parses', () => {
    expect(sample[0]).toBe(0x30);
    expect(sample[1]).toBe(0x82); // two length bytes: the surgery below relies on it
    expect(chainCode(sample)).toBe('PARSED');
  });

  it('a non-minimal outer length', () => {
    expect(chainCode(concatBytes(Uint8Array.of(0x30, 0x83, 0x00), sample.subarray(2)))).toBe('ATTESTATION_CHAIN');
  });

  it('an indefinite outer length', () => {
    expect(chainCode(concatBytes(Uint8Array.of(0x30, 0x80), sample.subarray(4), Uint8Array.of(0, 0)))).toBe('ATTESTATION_CHAIN');
  });

  it('a trailing byte, and every truncation', () => {
    expect(chainCode(concatBytes(sample, Uint8Array.of(0)))).toBe('ATTESTATION_CHAIN');
    for (let n = 0; n < sample.length; n++) expect(chainCode(sample.subarray(0, n))).toBe('ATTESTATION_CHAIN');
  });

  it('a DER BOOLEAN other than 00/FF and an encoded DEFAULT critical FALSE', () => {
    // basicConstraints with cA TRUE, as every Nitro CA certificate has: 30 xx 06 03 55 1d 13 01 01 ff 04 …
    const ca = certs.map((c) => c.der).find((d) => toHex(d).includes('0603551d130101ff'))!;
    const hex = toHex(ca);
    expect(chainCode(fromHex(hex.replace('0603551d130101ff', '0603551d13010101')))).toBe('ATTESTATION_CHAIN');
    expect(chainCode(fromHex(hex.replace('0603551d130101ff', '0603551d13010100')))).toBe('ATTESTATION_CHAIN');
  });

  it('a BIT STRING whose unused bits are not zero (a keyUsage hiding keyCertSign in them)', () => {
    // Nitro CAs' keyUsage is digitalSignature + keyCertSign + cRLSign: 03 02 01 86 (one unused bit). Claiming 7
    // unused bits leaves only digitalSignature for OpenSSL; a whole-byte reader would still see keyCertSign.
    const ca = certs.map((c) => c.der).find((d) => toHex(d).includes('0603551d0f0101ff040403020186'))!;
    expect(ca).toBeDefined();
    expect(chainCode(ca)).toBe('PARSED');
    expect(chainCode(fromHex(toHex(ca).replace('0603551d0f0101ff040403020186', '0603551d0f0101ff040403020786')))).toBe('ATTESTATION_CHAIN');
  });

  it('times that are not RFC 5280 DER (no seconds, a fraction, month 13, 30 February)', () => {
    const t = (tag: number, s: string) => new DerReader(concatBytes(Uint8Array.of(tag, s.length), new TextEncoder().encode(s))).next();
    expect(readTime(t(TAG.UTC_TIME, '251231235959Z'), 't').toISOString()).toBe('2025-12-31T23:59:59.000Z');
    expect(readTime(t(TAG.UTC_TIME, '491231235959Z'), 't').getUTCFullYear()).toBe(2049);
    expect(readTime(t(TAG.UTC_TIME, '500101000000Z'), 't').getUTCFullYear()).toBe(1950);
    expect(readTime(t(TAG.GENERALIZED_TIME, '20500101000000Z'), 't').getUTCFullYear()).toBe(2050);
    // Years 0–99 are those years, not 1900–1999 (Date.UTC's reading).
    expect(readTime(t(TAG.GENERALIZED_TIME, '00491231235959Z'), 't').toISOString()).toBe('0049-12-31T23:59:59.000Z');
    expect(() => readTime(t(TAG.GENERALIZED_TIME, '00490230000000Z'), 't')).toThrow(DerError);
    for (const [tag, s] of [
      [TAG.UTC_TIME, '2512312359Z'],
      [TAG.GENERALIZED_TIME, '20251231235959.5Z'],
      [TAG.UTC_TIME, '251301000000Z'],
      [TAG.UTC_TIME, '250230000000Z'],
      [TAG.UTC_TIME, '251231240000Z'],
      [TAG.UTC_TIME, '251231235959+0100'],
    ] as const) {
      expect(() => readTime(t(tag, s), 't'), s).toThrow(DerError);
    }
  });
});

describe('ecdsaDerToRaw', () => {
  const r = '01'.repeat(48);
  const s = '7f'.repeat(48);
  const seq = (body: string) => fromHex(`30${(body.length / 2).toString(16).padStart(2, '0')}${body}`);
  it('reads a minimal signature and pads short integers', () => {
    expect(toHex(ecdsaDerToRaw(seq(`0230${r}0230${s}`), 48)!)).toBe(r + s);
    expect(toHex(ecdsaDerToRaw(seq(`020101020101`), 48)!)).toBe('00'.repeat(47) + '01' + '00'.repeat(47) + '01');
    expect(toHex(ecdsaDerToRaw(seq(`02020080020101`), 48)!)).toBe('00'.repeat(47) + '80' + '00'.repeat(47) + '01');
  });
  it('refuses negative, non-minimal, oversized, extra or trailing parts', () => {
    for (const bad of [seq(`020180020101`), seq(`02020001020101`), seq(`0231${'01'.repeat(49)}020101`), seq(`020101020101020101`), concatBytes(seq(`020101020101`), Uint8Array.of(0))]) {
      expect(ecdsaDerToRaw(bad, 48)).toBeUndefined();
    }
  });
});

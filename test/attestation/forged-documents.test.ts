// Forged documents built by independent tools (forged-documents.py: python3-cryptography and python3-cbor2) under
// a root the test trusts, so every refusal below is the rule its name gives, not an untrusted root: CA rights
// (basicConstraints, keyUsage, pathLen), unknown critical extensions, validity windows, the leaf's curve, the COSE
// protected header, CBOR strictness (duplicate keys, indefinite lengths, trailing bytes, tags), PCR maps and the
// types of nonce/user_data/public_key. The controls pass, so a refusal is never an artefact of the forging.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttestationError } from '../../src/attestation/errors.ts';
import { verifyAttestation, type PcrPins, type VerifyExpectations } from '../../src/attestation/verify.ts';
import { fromHex } from '../../src/util/bytes.ts';

const SCRIPT = resolve(import.meta.dirname, 'forged-documents.py');

/** Case → the verifier's verdict. */
const EXPECTED: Record<string, string> = {
  control: 'PASSED',
  'control-two-intermediates': 'PASSED',
  'control-pathlen0-above-leaf': 'PASSED',
  'int-no-basic-constraints': 'ATTESTATION_CHAIN',
  'int-not-ca': 'ATTESTATION_CHAIN',
  'int-key-usage-without-cert-sign': 'ATTESTATION_CHAIN',
  'int-pathlen0-above-another-ca': 'ATTESTATION_CHAIN',
  'int-unknown-critical-extension': 'ATTESTATION_CHAIN',
  'int-name-constraints': 'ATTESTATION_CHAIN',
  'int-expired': 'ATTESTATION_CERT_EXPIRED',
  'leaf-is-ca': 'ATTESTATION_CHAIN',
  'leaf-without-digital-signature': 'ATTESTATION_CHAIN',
  'leaf-unknown-critical-extension': 'ATTESTATION_CHAIN',
  'leaf-expired': 'ATTESTATION_CERT_EXPIRED',
  'leaf-not-yet-valid': 'ATTESTATION_CERT_EXPIRED',
  'leaf-p256': 'ATTESTATION_CHAIN',
  'cose-alg-es256': 'ATTESTATION_STRUCTURE',
  'cose-extra-kid': 'ATTESTATION_STRUCTURE',
  'cose-crit-label': 'ATTESTATION_STRUCTURE',
  'cose-alg-as-text-label': 'ATTESTATION_STRUCTURE',
  'cose-duplicate-alg': 'ATTESTATION_MALFORMED',
  'cose-empty-protected': 'ATTESTATION_MALFORMED',
  'pcrs-text-indexes': 'ATTESTATION_STRUCTURE',
  'pcrs-without-pcr8': 'ATTESTATION_PCR_MISSING',
  'pcrs-empty': 'ATTESTATION_STRUCTURE',
  'pcrs-47-byte-value': 'ATTESTATION_STRUCTURE',
  'pcrs-negative-index': 'ATTESTATION_STRUCTURE',
  'pcrs-pcr0-truncated-to-32': 'ATTESTATION_PCR_MISMATCH',
  'nonce-as-text': 'ATTESTATION_STRUCTURE',
  'nonce-as-array': 'ATTESTATION_STRUCTURE',
  'nonce-null': 'ATTESTATION_NONCE_MISMATCH',
  'user-data-as-array': 'ATTESTATION_STRUCTURE',
  'public-key-as-text': 'ATTESTATION_STRUCTURE',
  'certificate-in-tag-24': 'ATTESTATION_MALFORMED',
  'payload-trailing-byte': 'ATTESTATION_MALFORMED',
  'payload-duplicate-nonce': 'ATTESTATION_MALFORMED',
  'payload-duplicate-pcrs': 'ATTESTATION_MALFORMED',
  'payload-indefinite-map': 'ATTESTATION_MALFORMED',
  'pcrs-duplicate-index': 'ATTESTATION_MALFORMED',
  'envelope-tag-98': 'ATTESTATION_MALFORMED',
  'envelope-five-items': 'ATTESTATION_MALFORMED',
  'envelope-indefinite-array': 'ATTESTATION_MALFORMED',
  'envelope-97-byte-signature': 'ATTESTATION_STRUCTURE',
  'cose-signed-by-another-key': 'ATTESTATION_SIGNATURE',
  'look-alike-root': 'ATTESTATION_UNTRUSTED_ROOT',
  'look-alike-chain-under-trusted-root': 'ATTESTATION_CHAIN',
};

let dir: string;
let meta: { now: number; pcrs: PcrPins; nonce: string; cases: string[] };
let exp: VerifyExpectations;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'forged-documents-'));
  await promisify(execFile)('/usr/bin/python3', [SCRIPT, dir], { timeout: 60_000 });
  meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as typeof meta;
  exp = { roots: [readFileSync(join(dir, 'root.pem'), 'utf8')], pcrs: meta.pcrs, now: meta.now + 1000, nonce: fromHex(meta.nonce) };
}, 90_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function verdict(name: string): Promise<string> {
  return verifyAttestation(new Uint8Array(readFileSync(join(dir, `${name}.cbor`))), exp).then(
    () => 'PASSED',
    (err: unknown) => {
      if (err instanceof AttestationError) return err.code;
      throw err;
    },
  );
}

describe('verifyAttestation on documents forged by independent tools', () => {
  it('the forger wrote exactly the cases this test expects', () => {
    expect([...meta.cases].sort()).toEqual(Object.keys(EXPECTED).sort());
  });

  it('passes the controls and refuses every forgery for its own reason', async () => {
    const got: Record<string, string> = {};
    for (const name of meta.cases) got[name] = await verdict(name);
    expect(got).toEqual(EXPECTED);
  });
});

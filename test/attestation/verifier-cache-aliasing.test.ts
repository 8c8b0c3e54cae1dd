// The verifier's process-wide certificate cache must own what it vouches for. verifyAttestation hands the caller
// the decoded document (the SDK exposes it as `client.attestation`), and the cache is keyed by a certificate's
// bytes as they were when it was parsed: were the cached entry a view into the document's certificate, a later
// write to that document (an app that wipes or reuses it) would change the key and the signed bytes a later
// verification of the same certificate trusts, without changing the cache key.
import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { coseSign1SigStructure, parseCoseSign1 } from '../../src/attestation/document.ts';
import { AttestationError } from '../../src/attestation/errors.ts';
import { encodeCbor } from '../../src/attestation/nsm-messages.ts';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { verifyAttestation, type VerifyExpectations } from '../../src/attestation/verify.ts';
import { clearVerifierCaches, parseCertificate } from '../../src/attestation/x509.ts';

const T0 = Date.UTC(2025, 5, 1, 12, 0, 0);
const nonce = Uint8Array.from({ length: 32 }, (_, i) => i);
let sim: NsmSimulator;
let dir: string;
let exp: VerifyExpectations;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'verifier-cache-'));
  sim = await createNsmSimulator({ stateDir: dir, identity: { agentVersion: 'v', app: 'app', config: '' }, now: () => T0 });
  exp = { roots: [sim.rootPem], pcrs: { PCR0: sim.pcrs[0]!, PCR1: sim.pcrs[1]!, PCR2: sim.pcrs[2]! }, now: T0 + 1000, nonce };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeEach(() => clearVerifierCaches());

async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'PASSED',
    (err: unknown) => {
      if (err instanceof AttestationError) return err.code;
      throw err;
    },
  );
}

/** `genuine` with its payload (and so its leaf certificate) unchanged, COSE-signed by `key` instead of the leaf's. */
async function resigned(genuine: Uint8Array, key: webcrypto.CryptoKey): Promise<Uint8Array> {
  const cose = parseCoseSign1(genuine);
  const toSign = coseSign1SigStructure(cose.protectedBytes, cose.payload);
  const sig = new Uint8Array(await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, key, toSign));
  return encodeCbor([cose.protectedBytes, new Map(), cose.payload, sig]);
}

describe('the certificate cache owns its bytes', () => {
  it("a write to a verified document's certificate never makes another key's signature pass for that certificate", async () => {
    const genuine = await sim.attest({ nonce });
    const returned = await verifyAttestation(genuine, exp);
    const attacker = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const attackerSpki = new Uint8Array(await webcrypto.subtle.exportKey('spki', attacker.publicKey));
    // The caller overwrites the leaf's key in the document it was handed (same length: a P-384 SPKI).
    const leafSpki = parseCertificate(returned.certificate.slice(), 'certificate').spki;
    expect(attackerSpki.length).toBe(leafSpki.length);
    const at = indexOf(returned.certificate, leafSpki);
    returned.certificate.set(attackerSpki, at);

    // Same leaf certificate bytes as before, but the COSE signature is the attacker's.
    const forged = await resigned(genuine, attacker.privateKey);
    expect(await codeOf(verifyAttestation(forged, exp))).toBe('ATTESTATION_SIGNATURE');
    // And the genuine document still verifies with the genuine key.
    expect(await codeOf(verifyAttestation(genuine, exp))).toBe('PASSED');
  });

  it("wiping a verified document's certificate and cabundle leaves later verifications of the same chain intact", async () => {
    const genuine = await sim.attest({ nonce });
    const returned = await verifyAttestation(genuine, exp);
    returned.certificate.fill(0);
    for (const c of returned.cabundle) c.fill(0);
    expect(await codeOf(verifyAttestation(genuine, exp))).toBe('PASSED');
  });

  it('a caller reusing the buffer of a DER root it passed does not change the trusted root', async () => {
    const rootBuf = sim.rootDer.slice();
    const withDer = { ...exp, roots: [rootBuf] };
    expect(await codeOf(verifyAttestation(await sim.attest({ nonce }), withDer))).toBe('PASSED');
    const copy = rootBuf.slice();
    rootBuf.fill(0);
    expect(await codeOf(verifyAttestation(await sim.attest({ nonce }), { ...exp, roots: [copy] }))).toBe('PASSED');
  });
});

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error('needle not found');
}

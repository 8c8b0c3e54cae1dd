// debug / allowDebugEnclave / allowEmptyPublicKey must be booleans: a truthy string such as "false" (read from an
// environment variable) used to switch the chain and signature checks off.
import { describe, expect, it } from 'vitest';
import { parseCoseSign1 } from '../../src/attestation/document.ts';
import { AttestationError } from '../../src/attestation/errors.ts';
import { encodeCbor } from '../../src/attestation/nsm-messages.ts';
import { verifyAttestation, type VerifyExpectations } from '../../src/attestation/verify.ts';
import { fixtureBytes, isEmptyPublicKeyFixture, nitroIndex, pinsOf } from './fixtures.ts';

const prod = nitroIndex.documents.find((d) => !d.debug_mode && !isEmptyPublicKeyFixture(d))!;
const debugDoc = nitroIndex.documents.find((d) => d.debug_mode && !isEmptyPublicKeyFixture(d))!;

/** `prod` with its COSE signature replaced by garbage: passes only when the signature is not checked. */
function forged(): Uint8Array {
  const cose = parseCoseSign1(fixtureBytes(prod));
  return encodeCbor([cose.protectedBytes, new Map(), cose.payload, new Uint8Array(96).fill(0x42)]);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => 'PASSED',
    (e: unknown) => (e instanceof AttestationError ? e.code : Promise.reject(e)),
  );
}

describe('boolean expectations', () => {
  const base = { now: new Date(prod.verify_at), pcrs: pinsOf(prod) };

  it('a forged signature fails without debug and passes with debug: true (the baseline)', async () => {
    expect(await codeOf(verifyAttestation(forged(), base))).toBe('ATTESTATION_SIGNATURE');
    expect(await codeOf(verifyAttestation(forged(), { ...base, debug: true }))).toBe('PASSED');
  });

  it.each(['false', 'true', 1, 0, {}])('debug: %j is refused as ATTESTATION_BAD_EXPECTATIONS', async (v) => {
    const err = await verifyAttestation(forged(), { ...base, debug: v } as unknown as VerifyExpectations).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttestationError);
    expect((err as AttestationError).code).toBe('ATTESTATION_BAD_EXPECTATIONS');
    expect((err as AttestationError).message).toMatch(/^debug must be true or false/);
  });

  it('allowDebugEnclave: "false" is refused, not taken as permission', async () => {
    const exp = { now: new Date(debugDoc.verify_at), pcrs: pinsOf(debugDoc), allowDebugEnclave: 'false' } as unknown as VerifyExpectations;
    expect(await codeOf(verifyAttestation(fixtureBytes(debugDoc), exp))).toBe('ATTESTATION_BAD_EXPECTATIONS');
    expect(await codeOf(verifyAttestation(fixtureBytes(debugDoc), { ...exp, allowDebugEnclave: false }))).toBe('ATTESTATION_DEBUG_ENCLAVE');
  });

  it('allowEmptyPublicKey must be a boolean too', async () => {
    expect(await codeOf(verifyAttestation(fixtureBytes(prod), { ...base, allowEmptyPublicKey: 'yes' } as unknown as VerifyExpectations))).toBe('ATTESTATION_BAD_EXPECTATIONS');
    expect(await codeOf(verifyAttestation(fixtureBytes(prod), { ...base, allowEmptyPublicKey: false }))).toBe('PASSED');
  });
});

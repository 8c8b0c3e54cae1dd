// A crafted chain must reject verifyAttestation with an AttestationError and leave no promise rejection
// unhandled: in the SDK, `enclave-agent proxy` and the CLI an unhandled rejection kills the process.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAttestationDocument, parseCoseSign1 } from '../../src/attestation/document.ts';
import { AttestationError } from '../../src/attestation/errors.ts';
import { encodeCbor } from '../../src/attestation/nsm-messages.ts';
import { decodeStrict, type CborMap } from '../../src/attestation/cbor.ts';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { clearVerifierCaches, verifyChain, parseTrustAnchor } from '../../src/attestation/x509.ts';
import { AWS_NITRO_ROOT_G1_PEM } from '../../src/attestation/aws-root.ts';
import { fixtureBytes, isEmptyPublicKeyFixture, nitroIndex, pinsOf } from './fixtures.ts';

const fixture = nitroIndex.documents.find((f) => !f.debug_mode && !isEmptyPublicKeyFixture(f))!;

/** The fixture re-encoded with `edit` applied to its payload map; the COSE signature is left as it was. */
function reencoded(edit: (payload: CborMap) => void): Uint8Array {
  const cose = parseCoseSign1(fixtureBytes(fixture));
  const payload = decodeStrict(cose.payload) as CborMap;
  edit(payload);
  // cbor-x writes integers above 2^32 as floats; a BigInt keeps the timestamp a CBOR unsigned integer.
  payload.set('timestamp', BigInt(payload.get('timestamp') as number) as unknown as number);
  return encodeCbor([cose.protectedBytes, new Map(), encodeCbor(payload), cose.signature]);
}

/** A copy of `der` with the last byte (inside the signature value) flipped: still DER, signature wrong. */
function badSignature(der: Uint8Array): Uint8Array {
  const out = der.slice();
  out[out.length - 1]! ^= 0x01;
  return out;
}

/** The crafted document: leaf signature broken, and the last intermediate duplicated so a later link fails its name check. */
function craftedDocument(): Uint8Array {
  return reencoded((p) => {
    const bundle = p.get('cabundle') as Uint8Array[];
    p.set('cabundle', [...bundle, bundle[bundle.length - 1]!]);
    p.set('certificate', badSignature(p.get('certificate') as Uint8Array));
  });
}

/** Lets pending signature checks settle and Node report any rejection left unhandled. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

describe('chain failures leave no unhandled rejection', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  beforeEach(() => {
    unhandled.length = 0;
    clearVerifierCaches();
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(() => {
    process.off('unhandledRejection', onUnhandled);
  });

  it('verifyAttestation rejects with ATTESTATION_CHAIN for a bad leaf signature plus a later broken link', async () => {
    const doc = craftedDocument();
    const err = await verifyAttestation(doc, { now: new Date(fixture.verify_at), pcrs: pinsOf(fixture) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttestationError);
    expect((err as AttestationError).code).toBe('ATTESTATION_CHAIN');
    await settle();
    expect(unhandled).toEqual([]);
  });

  it('verifyChain rejects without leaving a signature check unhandled', async () => {
    const { document } = parseAttestationDocument(craftedDocument());
    const anchors = [parseTrustAnchor(AWS_NITRO_ROOT_G1_PEM)];
    const err = await verifyChain(document.certificate, document.cabundle, anchors, new Date(fixture.verify_at)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttestationError);
    await settle();
    expect(unhandled).toEqual([]);
  });

  it('reports the name mismatch before any signature is checked (synchronous checks come first)', async () => {
    const { document } = parseAttestationDocument(craftedDocument());
    const anchors = [parseTrustAnchor(AWS_NITRO_ROOT_G1_PEM)];
    const err = (await verifyChain(document.certificate, document.cabundle, anchors, new Date(fixture.verify_at)).catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/is issued by .* but the next certificate up/);
    await settle();
  });

  it('the COSE check started before verifyChain is handled when the chain fails (garbage COSE signature)', async () => {
    const doc = craftedDocument();
    const cose = parseCoseSign1(doc);
    const garbage = encodeCbor([cose.protectedBytes, new Map(), cose.payload, new Uint8Array(96).fill(0xee)]);
    const err = await verifyAttestation(garbage, { now: new Date(fixture.verify_at), pcrs: pinsOf(fixture) }).catch((e: unknown) => e);
    expect((err as AttestationError).code).toBe('ATTESTATION_CHAIN');
    await settle();
    expect(unhandled).toEqual([]);
  });
});

// The verifier's test suite, shared by verify.test.ts (Node) and verify.browser.test.ts (happy-dom).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { AttestationError } from '../../src/attestation/errors.ts';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { AWS_NITRO_ROOT_G1_PEM, verifyAttestation, type VerifyExpectations } from '../../src/attestation/verify.ts';
import { concatBytes, fromHex, toHex } from '../../src/util/bytes.ts';
import { fixtureBytes, indexOfBytes, isEmptyPublicKeyFixture, nitroIndex, pinsOf, prng, type NitroFixture } from './fixtures.ts';

const DAY = 24 * 60 * 60 * 1000;
const ZERO48 = '00'.repeat(48);
const ZERO_PINS = { PCR0: ZERO48, PCR1: ZERO48, PCR2: ZERO48 };

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof AttestationError) return err.code;
    throw err;
  }
  return 'PASSED';
}

async function failure(p: Promise<unknown>): Promise<AttestationError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    return err as AttestationError;
  }
  throw new Error('expected the verification to fail, but it passed');
}

/** Expectations under which fixture `f` passes. */
function passing(f: NitroFixture): VerifyExpectations {
  return { now: new Date(f.verify_at), pcrs: pinsOf(f), allowEmptyPublicKey: isEmptyPublicKeyFixture(f), allowDebugEnclave: f.debug_mode };
}

export function defineVerifyTests(env: string): void {
  describe(`verifyAttestation on the real Nitro documents (${env})`, () => {
    for (const f of nitroIndex.documents) {
      describe(f.file, () => {
        const bytes = fixtureBytes(f);

        it('verifies at verify_at with its PCRs and returns the decoded document', async () => {
          const doc = await verifyAttestation(bytes, passing(f));
          expect(doc.moduleId).toBe(f.module_id);
          expect(doc.timestamp).toBe(f.timestamp_ms);
          expect(toHex(doc.pcrs.get(0)!)).toBe(f.pcr0);
          expect(doc.pcrs.size).toBe(16);
          if (f.nonce_hex && !f.nonce_hex.includes('...')) expect(toHex(doc.nonce!)).toBe(f.nonce_hex);
        });

        it('verifies with its nonce and a generous maxAgeMs, and fails when the document is older than maxAgeMs', async () => {
          const { document } = parseAttestationDocument(bytes, { allowEmptyPublicKey: true });
          // One minute after the document was made (inside its certificate's window).
          const exp = { ...passing(f), now: f.timestamp_ms + 60_000, ...(document.nonce ? { nonce: document.nonce } : {}) };
          await expect(verifyAttestation(bytes, { ...exp, maxAgeMs: 5 * 60_000 })).resolves.toBeTruthy();
          const err = await failure(verifyAttestation(bytes, { ...exp, maxAgeMs: 1000 }));
          expect(err.code).toBe('ATTESTATION_TOO_OLD');
        });

        it('fails one day after verify_at because the signing certificate expired', async () => {
          const err = await failure(verifyAttestation(bytes, { ...passing(f), now: new Date(f.verify_at).getTime() + DAY }));
          expect(err.code).toBe('ATTESTATION_CERT_EXPIRED');
          expect(err.message).toMatch(/valid .* → .*; verification time is/);
        });

        it('fails before the signing certificate was issued', async () => {
          expect(await codeOf(verifyAttestation(bytes, { ...passing(f), now: new Date(f.valid_from).getTime() - 1000 }))).toBe('ATTESTATION_CERT_EXPIRED');
        });

        it('fails with a wrong PCR0 and names expected and found values', async () => {
          const wrong = (f.pcr0.startsWith('00') ? '11' : '00') + f.pcr0.slice(2);
          const err = await failure(verifyAttestation(bytes, { ...passing(f), pcrs: { ...pinsOf(f), PCR0: wrong } }));
          expect(err.code).toBe('ATTESTATION_PCR_MISMATCH');
          expect(err.message).toContain(`PCR0 expected ${wrong}, found ${f.pcr0}`);
        });

        it('passes when one of several allowed PCR sets matches (rolling deploy), fails when none does', async () => {
          const other = { PCR0: 'ab'.repeat(48), PCR1: f.pcr1, PCR2: f.pcr2 };
          await expect(verifyAttestation(bytes, { ...passing(f), pcrs: [other, pinsOf(f)] })).resolves.toBeTruthy();
          const err = await failure(verifyAttestation(bytes, { ...passing(f), pcrs: [other, { ...other, PCR2: 'cd'.repeat(48) }] }));
          expect(err.code).toBe('ATTESTATION_PCR_MISMATCH');
          expect(err.message).toContain('none of the 2 allowed PCR sets');
        });

        it('fails against a different trusted root', async () => {
          const err = await failure(verifyAttestation(bytes, { ...passing(f), roots: [simRootPem()] }));
          expect(err.code).toBe('ATTESTATION_UNTRUSTED_ROOT');
          expect(err.message).toContain('aws.nitro-enclaves');
        });

        it('passes with the AWS root given explicitly as PEM or DER', async () => {
          const der = fromHex(toHex(parseAttestationDocument(bytes, { allowEmptyPublicKey: true }).document.cabundle[0]!));
          await expect(verifyAttestation(bytes, { ...passing(f), roots: [AWS_NITRO_ROOT_G1_PEM] })).resolves.toBeTruthy();
          await expect(verifyAttestation(bytes, { ...passing(f), roots: [der] })).resolves.toBeTruthy();
        });

        it('fails with a wrong nonce', async () => {
          const err = await failure(verifyAttestation(bytes, { ...passing(f), nonce: new Uint8Array(32).fill(9) }));
          expect(err.code).toBe('ATTESTATION_NONCE_MISMATCH');
          expect(err.message).toContain('0909');
        });

        it('fails with any single flipped byte in the protected header, payload, certificates or signature', async () => {
          const { cose, document } = parseAttestationDocument(bytes, { allowEmptyPublicKey: true });
          const exp = passing(f);
          const rnd = prng(0x5eed ^ bytes.length);
          const positions = new Set<number>();
          const protAt = indexOfBytes(bytes, cose.protectedBytes);
          for (let i = 0; i < cose.protectedBytes.length; i++) positions.add(protAt + i);
          const sigAt = bytes.length - cose.signature.length;
          for (let i = 0; i < cose.signature.length; i++) positions.add(sigAt + i); // every signature byte
          const payloadAt = indexOfBytes(bytes, cose.payload);
          for (let i = 0; i < 48; i++) positions.add(payloadAt + Math.floor(rnd() * cose.payload.length));
          for (const cert of [document.certificate, ...document.cabundle]) {
            const at = indexOfBytes(bytes, cert);
            expect(at).toBeGreaterThan(0);
            for (let i = 0; i < 12; i++) positions.add(at + Math.floor(rnd() * cert.length));
          }
          const passed: number[] = [];
          for (const pos of positions) {
            const copy = bytes.slice();
            copy[pos]! ^= 1 + Math.floor(rnd() * 255);
            if ((await codeOf(verifyAttestation(copy, exp))) === 'PASSED') passed.push(pos);
          }
          expect(passed).toEqual([]);
          expect(positions.size).toBeGreaterThan(150);
        });
      });
    }

    it('rejects the document with an empty public_key by default, naming the rule (reference-client behaviour)', async () => {
      const f = nitroIndex.documents.find(isEmptyPublicKeyFixture)!;
      const err = await failure(verifyAttestation(fixtureBytes(f), { ...passing(f), allowEmptyPublicKey: false }));
      expect(err.code).toBe('ATTESTATION_STRUCTURE');
      expect(err.message).toBe('public_key must be 1–1024 bytes; found 0');
    });

    it('passes a debug-mode document with debug: true and all-zero PCRs, at any time and with no root', async () => {
      const debugDocs = nitroIndex.documents.filter((f) => f.debug_mode);
      expect(debugDocs.length).toBeGreaterThan(0);
      for (const f of debugDocs) {
        const doc = await verifyAttestation(fixtureBytes(f), { debug: true, pcrs: ZERO_PINS, allowEmptyPublicKey: isEmptyPublicKeyFixture(f), now: Date.UTC(2040, 0, 1) });
        expect(doc.moduleId).toBe(f.module_id);
      }
    });

    it('still checks PCRs in debug mode: a production document fails zero pins', async () => {
      const f = nitroIndex.documents.find((d) => !d.debug_mode)!;
      expect(await codeOf(verifyAttestation(fixtureBytes(f), { debug: true, pcrs: ZERO_PINS }))).toBe('ATTESTATION_PCR_MISMATCH');
    });

    it('refuses a genuine debug-mode document in production mode even when the caller pinned zeros', async () => {
      const f = nitroIndex.documents.find((d) => d.debug_mode && !isEmptyPublicKeyFixture(d))!;
      const prod = { now: new Date(f.verify_at), pcrs: ZERO_PINS };
      expect(await codeOf(verifyAttestation(fixtureBytes(f), prod))).toBe('ATTESTATION_DEBUG_ENCLAVE');
      // Opting in keeps the chain and signature check: the same document still verifies against AWS.
      await expect(verifyAttestation(fixtureBytes(f), { ...prod, allowDebugEnclave: true })).resolves.toBeTruthy();
      expect(await codeOf(verifyAttestation(fixtureBytes(f), { ...prod, allowDebugEnclave: true, roots: [simRootPem()] }))).toBe('ATTESTATION_UNTRUSTED_ROOT');
    });

    it('rejects unusable expectations with ATTESTATION_BAD_EXPECTATIONS before reading the document', async () => {
      const f = nitroIndex.documents[1]!;
      const bytes = fixtureBytes(f);
      expect(await codeOf(verifyAttestation(bytes, { ...passing(f), pcrs: { ...pinsOf(f), PCR0: 'zz' } }))).toBe('ATTESTATION_BAD_EXPECTATIONS');
      expect(await codeOf(verifyAttestation(bytes, { ...passing(f), pcrs: { ...pinsOf(f), PCR1: 'abcd' } }))).toBe('ATTESTATION_BAD_EXPECTATIONS');
      expect(await codeOf(verifyAttestation(bytes, { ...passing(f), pcrs: [] }))).toBe('ATTESTATION_BAD_EXPECTATIONS');
      expect(await codeOf(verifyAttestation(bytes, { ...passing(f), roots: ['not a pem'] }))).toBe('ATTESTATION_BAD_EXPECTATIONS');
      expect(await codeOf(verifyAttestation(bytes, { ...passing(f), now: Number.NaN }))).toBe('ATTESTATION_BAD_EXPECTATIONS');
    });
  });

  // ------------------------------------------------------------------------------------------ synthetic cases

  let sim: NsmSimulator;
  let stateDir: string;
  const simNow = Date.UTC(2025, 5, 1, 12, 0, 0);
  const identity = { agentVersion: '0.1.0', app: 'node server.js', config: '[app]\nport = 8008\n' };
  const simRootPem = () => sim.rootPem;
  const simPins = () => ({ PCR0: sim.pcrs[0]!, PCR1: sim.pcrs[1]!, PCR2: sim.pcrs[2]!, PCR8: sim.pcrs[8]! });
  const simExp = (nonce?: Uint8Array): VerifyExpectations => ({ roots: [sim.rootPem], pcrs: simPins(), now: simNow + 1000, ...(nonce ? { nonce } : {}) });

  beforeAll(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'nsm-sim-verify-'));
    sim = await createNsmSimulator({ stateDir, identity, now: () => simNow });
  });
  afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

  describe(`verifyAttestation on simulator documents (${env})`, () => {
    const nonce = Uint8Array.from({ length: 32 }, (_, i) => i);

    it('passes with the simulator root, its PCRs (8 included) and the nonce', async () => {
      const doc = await verifyAttestation(await sim.attest({ nonce }), simExp(nonce));
      expect(toHex(doc.nonce!)).toBe(toHex(nonce));
    });

    it('fails with the AWS root (the default)', async () => {
      const doc = await sim.attest({ nonce });
      expect(await codeOf(verifyAttestation(doc, { ...simExp(nonce), roots: undefined }))).toBe('ATTESTATION_UNTRUSTED_ROOT');
    });

    it('fails with a wrong nonce, and with no nonce in the document when one is expected', async () => {
      const doc = await sim.attest({ nonce });
      const other = nonce.slice();
      other[31]! ^= 1;
      const err = await failure(verifyAttestation(doc, simExp(other)));
      expect(err.code).toBe('ATTESTATION_NONCE_MISMATCH');
      expect(err.message).toBe(`nonce expected ${toHex(other)} (32 bytes), found ${toHex(nonce)} (32 bytes)`);
      expect(await codeOf(verifyAttestation(await sim.attest({}), simExp(nonce)))).toBe('ATTESTATION_NONCE_MISMATCH');
    });

    it('with maxAgeMs, refuses a document dated beyond now + the clock skew as ATTESTATION_FROM_FUTURE', async () => {
      const at = simNow + 1000;
      const dated = (ms: number) => sim.issueDocument({ nonce }, { payload: (p) => p.set('timestamp', BigInt(ms)) });
      const tenMinutesAhead = await dated(at + 10 * 60_000);
      const err = await failure(verifyAttestation(tenMinutesAhead, { ...simExp(nonce), maxAgeMs: 5 * 60_000 }));
      expect(err.code).toBe('ATTESTATION_FROM_FUTURE');
      expect(err.message).toBe(`document timestamp ${new Date(at + 600_000).toISOString()} is 600000 ms after ${new Date(at).toISOString()}; at most 60000 ms of clock skew accepted`);
      // Within the default 60 s skew it passes; a stricter skew refuses it; the skew is stated, not unbounded.
      const halfMinuteAhead = await dated(at + 30_000);
      await expect(verifyAttestation(halfMinuteAhead, { ...simExp(nonce), maxAgeMs: 5 * 60_000 })).resolves.toBeTruthy();
      expect(await codeOf(verifyAttestation(halfMinuteAhead, { ...simExp(nonce), maxAgeMs: 5 * 60_000, maxFutureSkewMs: 10_000 }))).toBe('ATTESTATION_FROM_FUTURE');
      expect(await codeOf(verifyAttestation(await dated(at + 60_001), { ...simExp(nonce), maxAgeMs: 5 * 60_000 }))).toBe('ATTESTATION_FROM_FUTURE');
      expect(await codeOf(verifyAttestation(await dated(at + 60_000), { ...simExp(nonce), maxAgeMs: 5 * 60_000 }))).toBe('PASSED');
      // A timestamp past Date's range is a structure error (document.ts), never a RangeError, maxAgeMs or not.
      for (const exp of [{ ...simExp(nonce), maxAgeMs: 1000 }, simExp(nonce)]) {
        const far = await failure(verifyAttestation(await dated(Number.MAX_SAFE_INTEGER), exp));
        expect([far.code, far.message]).toEqual(['ATTESTATION_STRUCTURE', `timestamp must be a positive integer (ms since epoch) of at most 8640000000000000; found number ${Number.MAX_SAFE_INTEGER}`]);
      }
    });

    it('checks no timestamp bound without maxAgeMs, and refuses an unusable maxFutureSkewMs', async () => {
      const doc = await sim.issueDocument({ nonce }, { payload: (p) => p.set('timestamp', BigInt(simNow + 10 * 60_000)) });
      await expect(verifyAttestation(doc, simExp(nonce))).resolves.toBeTruthy();
      for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
        expect(await codeOf(verifyAttestation(doc, { ...simExp(nonce), maxAgeMs: 1000, maxFutureSkewMs: bad }))).toBe('ATTESTATION_BAD_EXPECTATIONS');
      }
    });

    it('fails with PCR8 missing even when the other PCRs match', async () => {
      const doc = await sim.issueDocument({ nonce }, { payload: (p) => (p.get('pcrs') as Map<number, Uint8Array>).delete(8) });
      const err = await failure(verifyAttestation(doc, { ...simExp(nonce), pcrs: { ...simPins(), PCR8: undefined } }));
      expect(err.code).toBe('ATTESTATION_PCR_MISSING');
      expect(err.message).toMatch(/^PCR 8 missing/);
    });

    it('fails with a wrong PCR8 when PCR8 is pinned', async () => {
      expect(await codeOf(verifyAttestation(await sim.attest({ nonce }), { ...simExp(nonce), pcrs: { ...simPins(), PCR8: 'ee'.repeat(48) } }))).toBe('ATTESTATION_PCR_MISMATCH');
    });

    const oversize: [string, (p: Map<string, unknown>) => void, RegExp][] = [
      ['user_data of 513 bytes', (p) => p.set('user_data', new Uint8Array(513)), /^user_data must be 0–512 bytes; found 513$/],
      ['nonce of 513 bytes', (p) => p.set('nonce', new Uint8Array(513)), /^nonce must be 0–512 bytes; found 513$/],
      ['public_key of 1025 bytes', (p) => p.set('public_key', new Uint8Array(1025)), /^public_key must be 1–1024 bytes; found 1025$/],
      ['a 9-entry cabundle', (p) => p.set('cabundle', Array.from({ length: 9 }, () => new Uint8Array(8))), /^cabundle must have 1–8 entries; found 9$/],
      ['a 1025-byte cabundle entry', (p) => p.set('cabundle', [new Uint8Array(1025)]), /^cabundle\[0\] must be a 1–1024-byte string/],
      ['a 40-byte PCR', (p) => (p.get('pcrs') as Map<number, Uint8Array>).set(3, new Uint8Array(40)), /^PCR3 must be a 32, 48 or 64-byte string/],
      ['PCR index 32', (p) => (p.get('pcrs') as Map<number, Uint8Array>).set(32, new Uint8Array(48)), /^PCR index must be an integer in \[0, 32\)/],
      ['digest SHA256', (p) => p.set('digest', 'SHA256'), /^digest must be "SHA384"; found "SHA256"$/],
      ['an empty module_id', (p) => p.set('module_id', ''), /^module_id must be non-empty text/],
      ['a missing certificate', (p) => p.delete('certificate'), /^certificate must be a 1–1024-byte string; found absent$/],
    ];
    for (const [what, mutate, message] of oversize) {
      it(`rejects a signed document with ${what} as ATTESTATION_STRUCTURE`, async () => {
        const doc = await sim.issueDocument({ nonce }, { payload: mutate });
        const err = await failure(verifyAttestation(doc, simExp(nonce)));
        expect(err.code).toBe('ATTESTATION_STRUCTURE');
        expect(err.message).toMatch(message);
      });
    }

    it('rejects a document over 16 KiB as ATTESTATION_MALFORMED', async () => {
      const doc = await sim.issueDocument({ nonce }, { payload: (p) => p.set('padding', new Uint8Array(16 * 1024)) });
      const err = await failure(verifyAttestation(doc, simExp(nonce)));
      expect(err.code).toBe('ATTESTATION_MALFORMED');
      expect(err.message).toMatch(/^document is \d+ bytes; the limit is 16384$/);
    });

    it('rejects every truncation of a document as ATTESTATION_MALFORMED', async () => {
      const doc = await sim.attest({ nonce });
      const cuts = [0, 1, 2, 6, 7, 10, doc.length >> 1, doc.length - 97, doc.length - 1];
      for (const n of cuts) {
        const err = await failure(verifyAttestation(doc.subarray(0, n), simExp(nonce)));
        expect([n, err.code]).toEqual([n, 'ATTESTATION_MALFORMED']);
      }
    });

    it('accepts the document wrapped in COSE tag 18, and rejects other tags', async () => {
      const doc = await sim.attest({ nonce });
      await expect(verifyAttestation(concatBytes(Uint8Array.of(0xd2), doc), simExp(nonce))).resolves.toBeTruthy();
      expect(await codeOf(verifyAttestation(concatBytes(Uint8Array.of(0xd1), doc), simExp(nonce)))).toBe('ATTESTATION_MALFORMED');
      expect(await codeOf(verifyAttestation(concatBytes(Uint8Array.of(0xd2, 0xd2), doc), simExp(nonce)))).toBe('ATTESTATION_MALFORMED');
    });

    it('rejects extra trailing bytes after the COSE_Sign1', async () => {
      const doc = await sim.attest({ nonce });
      const err = await failure(verifyAttestation(concatBytes(doc, Uint8Array.of(0)), simExp(nonce)));
      expect(err.code).toBe('ATTESTATION_MALFORMED');
      expect(err.message).toContain('1 trailing byte(s)');
    });

    it('rejects a document signed by a leaf of another simulator (same shape, wrong key)', async () => {
      const otherDir = mkdtempSync(join(tmpdir(), 'nsm-sim-other-'));
      try {
        const other = await createNsmSimulator({ stateDir: otherDir, identity, now: () => simNow });
        const doc = await other.attest({ nonce });
        expect(await codeOf(verifyAttestation(doc, simExp(nonce)))).toBe('ATTESTATION_UNTRUSTED_ROOT');
      } finally {
        rmSync(otherDir, { recursive: true, force: true });
      }
    });
  });
}

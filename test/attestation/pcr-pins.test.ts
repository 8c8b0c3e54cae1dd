// Pins for any PCR (PCR3: the parent's IAM role, PCR4: its instance id, ...) are compared, and a key that names
// no PCR is refused instead of being silently ignored — in the library and in the CLI's --pcrs.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { AttestationError } from '../../src/attestation/errors.ts';
import { verifyAttestation, type PcrPins, type VerifyExpectations } from '../../src/attestation/verify.ts';
import { runCli } from '../../src/cli/run.ts';
import { toHex } from '../../src/util/bytes.ts';
import { fixtureBytes, fixturePath, nitroIndex, pinsOf } from './fixtures.ts';

// A production document whose PCR3 and PCR4 are set (it carries PCR0…PCR15).
const f = nitroIndex.documents.find((d) => d.file === 'evervault_beta_valid-attestation-doc-bytes.cbor')!;
const bytes = fixtureBytes(f);
const pcr = (i: number): string => toHex(parseAttestationDocument(bytes).document.pcrs.get(i)!);
const flip = (hex: string): string => (hex.startsWith('00') ? '11' : '00') + hex.slice(2);
const exp = (pcrs: unknown): VerifyExpectations => ({ now: new Date(f.verify_at), pcrs: pcrs as PcrPins });

async function failure(p: Promise<unknown>): Promise<AttestationError> {
  const err = await p.then(
    () => new Error('expected the verification to fail, but it passed'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AttestationError);
  return err as AttestationError;
}

describe('verifyAttestation with pins beyond PCR0/1/2/8', () => {
  it('fails with a wrong PCR3 and names it', async () => {
    const err = await failure(verifyAttestation(bytes, exp({ ...pinsOf(f), PCR3: flip(pcr(3)) })));
    expect(err.code).toBe('ATTESTATION_PCR_MISMATCH');
    expect(err.message).toContain(`PCR3 expected ${flip(pcr(3))}, found ${pcr(3)}`);
  });

  it('passes with the right PCR3 and PCR4 (hex in any case), fails with a wrong PCR4', async () => {
    await expect(verifyAttestation(bytes, exp({ ...pinsOf(f), PCR3: pcr(3).toUpperCase(), PCR4: pcr(4) }))).resolves.toBeTruthy();
    const err = await failure(verifyAttestation(bytes, exp({ ...pinsOf(f), PCR3: pcr(3), PCR4: flip(pcr(4)) })));
    expect(err.message).toMatch(/^PCR4 expected/);
  });

  it('fails with ATTESTATION_PCR_MISSING when a pinned PCR is absent from the document', async () => {
    const err = await failure(verifyAttestation(bytes, exp({ ...pinsOf(f), PCR31: '00'.repeat(48) })));
    expect(err.code).toBe('ATTESTATION_PCR_MISSING');
    expect(err.message).toContain('PCR31 expected');
    expect(err.message).toContain('the document has no PCR31');
  });

  it('compares extra pins in every allowed set', async () => {
    const good = { ...pinsOf(f), PCR3: pcr(3) };
    const bad = { ...pinsOf(f), PCR3: flip(pcr(3)) };
    await expect(verifyAttestation(bytes, exp([bad, good]))).resolves.toBeTruthy();
    const err = await failure(verifyAttestation(bytes, exp([bad, { ...good, PCR4: flip(pcr(4)) }])));
    expect(err.code).toBe('ATTESTATION_PCR_MISMATCH');
    expect(err.message).toContain('[0] PCR3 expected');
    expect(err.message).toContain('[1] PCR4 expected');
  });

  it.each([
    ['pcr8', /pcrs: "pcr8" is not a PCR name; expected PCR0…PCR31; did you mean PCR8\? \(names are case-sensitive\)/],
    ['PCR08', /"PCR08" is not a PCR name.*did you mean PCR8\?$/],
    ['PCR32', /"PCR32" is not a PCR name; expected PCR0…PCR31$/],
    ['IAMRole', /"IAMRole" is not a PCR name/],
  ])('rejects the key %s with ATTESTATION_BAD_EXPECTATIONS naming it', async (key, message) => {
    const err = await failure(verifyAttestation(bytes, exp({ ...pinsOf(f), [key]: flip(pcr(8)) })));
    expect(err.code).toBe('ATTESTATION_BAD_EXPECTATIONS');
    expect(err.message).toMatch(message);
  });

  it("accepts nitro-cli's HashAlgorithm when it says SHA-384, rejects another", async () => {
    await expect(verifyAttestation(bytes, exp({ HashAlgorithm: 'Sha384 { ... }', ...pinsOf(f) }))).resolves.toBeTruthy();
    const err = await failure(verifyAttestation(bytes, exp({ HashAlgorithm: 'Sha256', ...pinsOf(f) })));
    expect(err.code).toBe('ATTESTATION_BAD_EXPECTATIONS');
    expect(err.message).toContain('HashAlgorithm must name SHA-384');
  });

  it('still requires PCR0, PCR1 and PCR2, and a pin set that is an object', async () => {
    const { PCR0: _omit, ...rest } = pinsOf(f);
    expect((await failure(verifyAttestation(bytes, exp({ ...rest, PCR3: pcr(3) })))).message).toBe('pcrs.PCR0 is required');
    expect((await failure(verifyAttestation(bytes, exp(['PCR0'])))).message).toMatch(/pcrs must be an object/);
  });
});

describe('--pcrs in the CLI (attestation inspect; fetch, proxy and attest share the parser)', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'pcr-pins-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const base = `PCR0=${f.pcr0},PCR1=${f.pcr1},PCR2=${f.pcr2}`;
  async function inspect(pcrs: string) {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCli(['attestation', 'inspect', fixturePath(f), '--at', f.verify_at, '--pcrs', pcrs], { out: (l) => out.push(l), err: (l) => err.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
    return { code, out: out.join('\n'), err: err.join('\n') };
  }

  it('compares PCR3 given inline (names in any case) and fails on a wrong one', async () => {
    expect((await inspect(`${base},pcr3=${pcr(3)},PCR4=${pcr(4)}`)).code).toBe(0);
    const r = await inspect(`${base},PCR3=${flip(pcr(3))}`);
    expect(r.code).toBe(1);
    expect(r.out).toContain(`Verdict: FAIL ATTESTATION_PCR_MISMATCH: PCR3 expected ${flip(pcr(3))}`);
  });

  it('compares PCR4 from a JSON file, and keeps taking a nitro-cli Measurements object', async () => {
    const file = join(tmp, 'pins.json');
    writeFileSync(file, JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: f.pcr0, PCR1: f.pcr1, PCR2: f.pcr2, PCR4: flip(pcr(4)) } }));
    const r = await inspect(file);
    expect(r.code).toBe(1);
    expect(r.out).toContain('ATTESTATION_PCR_MISMATCH: PCR4 expected');
  });

  it.each([
    ['PCR40', `${base},PCR40=${pcr(3)}`, /--pcrs: "PCR40" is not a PCR name; expected PCR0…PCR31/],
    ['IAM', `${base},IAM=${pcr(3)}`, /--pcrs: "IAM" is not a PCR name/],
    ['pcr1 after PCR1', `${base},pcr1=${f.pcr1}`, /--pcrs: PCR1 is given twice/],
  ])('exits 2 naming a bad key: %s', async (_label, pcrs, message) => {
    const r = await inspect(pcrs);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
  });

  it('exits 2 for a misspelt key in a JSON file', async () => {
    const file = join(tmp, 'typo.json');
    writeFileSync(file, JSON.stringify({ PCR0: f.pcr0, PCR1: f.pcr1, PCR2: f.pcr2, PRC8: f.pcr0 }));
    const r = await inspect(file);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--pcrs: "PRC8" is not a PCR name/);
  });
});

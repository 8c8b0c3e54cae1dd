// Scanning request bodies in bounded steps: countJsonCandidateSteps and decryptJsonSteps examine at most
// SCAN_STEP_STRINGS strings per next(), so a body of near-tokens ("ev:Tk9D:A:A:A:$", no valid value) is
// worked through in many small steps a DecryptScheduler can interleave with other requests — before, one
// call examined every string of the body at once. No timings: the bound is on the work per step.
import { describe, expect, it } from 'vitest';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { countJsonCandidateSteps, decryptJsonSteps, decryptJsonTokens, mayHoldCandidates } from '../../src/crypto/json-decrypt.ts';
import { SCAN_STEP_STRINGS } from '../../src/crypto/json-scan.ts';
import { Keyring } from '../../src/crypto/keyring.ts';

const keyring = Keyring.generate();
const enc = (v: string | number | boolean): string => encryptValue(v, keyring.publicKeys());

/** Runs steps to the end; returns the result and how many next() calls it took. */
function run<T>(steps: Iterator<unknown, T>): { value: T; steps: number } {
  for (let n = 1; ; n++) {
    const r = steps.next();
    if (r.done === true) return { value: r.value, steps: n };
  }
}

const NEAR = 'ev:Tk9D:A:A:A:$';
const nearBody = (n: number): string => JSON.stringify(Array<string>(n).fill(NEAR));

describe('countJsonCandidateSteps', () => {
  it('counts every string value of the form ev:…$, valid or not; not "ev:" elsewhere, nor object keys (never decrypted)', () => {
    const doc = JSON.stringify({ [enc('k')]: [enc(1), NEAR, 'ev:nope-nope$', 'ev:x', 'see ev:Tk9D:…:$', 'prev: 1'], b: enc(true), [NEAR]: 1 });
    expect(run(countJsonCandidateSteps(doc)).value).toBe(4);
    expect(run(countJsonCandidateSteps(`{ ${Array.from({ length: 50 }, (_, i) => `"ev:Tk9D:A:A:${i}:$" :\n ${i}`).join(', ')} }`)).value).toBe(0);
    expect(run(countJsonCandidateSteps('{"rev:": "a ev:Tk9D:x:$"}')).value).toBe(0);
    expect(mayHoldCandidates('{"rev:": "a ev:Tk9D:x:$"}')).toBe(false);
    expect(mayHoldCandidates(`["${NEAR}"]`)).toBe(true);
  });

  it('stops once past stopAfter', () => {
    expect(run(countJsonCandidateSteps(nearBody(100), 5)).value).toBe(6);
    expect(run(countJsonCandidateSteps(nearBody(100), 0)).value).toBe(1);
  });

  it('examines at most SCAN_STEP_STRINGS strings per step', () => {
    const n = 20 * SCAN_STEP_STRINGS;
    const r = run(countJsonCandidateSteps(nearBody(n)));
    expect(r.value).toBe(n);
    expect(r.steps).toBeGreaterThanOrEqual(n / SCAN_STEP_STRINGS);
  });
});

describe('decryptJsonSteps over near-tokens', () => {
  it('examines at most SCAN_STEP_STRINGS strings per step, and leaves near-tokens as they are', () => {
    const n = 20 * SCAN_STEP_STRINGS;
    const body = nearBody(n);
    const r = run(decryptJsonSteps(body, keyring));
    expect(r.value).toEqual({ json: body, count: 0 });
    expect(r.steps).toBeGreaterThanOrEqual(n / SCAN_STEP_STRINGS);
  });

  it('still decrypts the values among them, one value per step at most', () => {
    const body = JSON.stringify([NEAR, enc('a'), NEAR, enc(2), { [NEAR]: enc(false) }]);
    const r = run(decryptJsonSteps(body, keyring));
    expect(r.value.count).toBe(3);
    expect(JSON.parse(r.value.json)).toEqual([NEAR, 'a', NEAR, 2, { [NEAR]: false }]);
    expect(r.steps).toBeGreaterThanOrEqual(4);
    expect(decryptJsonTokens(body, keyring)).toEqual(r.value);
  });
});

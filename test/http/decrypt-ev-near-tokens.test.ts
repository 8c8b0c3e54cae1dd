// A JSON body of strings that look like ev: values but fail the grammar ("ev:Tk9D:A:A:A:$", the security
// review's shape: no key, no valid value) once held the agent's event loop for seconds: every candidate was
// parsed synchronously, with an exception per failure, before the DecryptScheduler's slicing. Now:
//   - every such string counts toward max_decrypt_fields, so a body of them is answered 413 after a bounded
//     count, before anything is decrypted or forwarded;
//   - counting, decrypting and searching a not-JSON body run as scheduler steps of a bounded number of strings
//     (or token ends), so with a scheduler that runs one step per event-loop turn, a large body takes many
//     turns, and a small request started alongside is answered first.
// No timings: the bounds are on work per turn (turns counted with setImmediate) and on the order of answers.
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { DecryptScheduler } from '../../src/crypto/decrypt-scheduler.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { SCAN_STEP_STRINGS } from '../../src/crypto/json-scan.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import type { DecryptOutput } from '../../src/http/stages/decrypt.ts';
import { HOLDS_MAX_CANDIDATE_CHARS, HOLDS_STEP_CHARS, HOLDS_STEP_ENDS, createDecryptStage, holdsTokenSteps } from '../../src/http/stages/decrypt-ev.ts';

const keyring = Keyring.generate();
const NEAR = '"ev:Tk9D:A:A:A:$"';
const nearJson = (n: number): string => `[${Array<string>(n).fill(NEAR).join(',')}]`;

/** Calls the stage as the pipeline does, for a JSON POST with `body`. */
function input(body: string, requestId = 'r'): Parameters<ReturnType<typeof createDecryptStage>>[0] {
  const bytes = Buffer.from(body);
  return {
    method: 'POST',
    url: '/pay',
    headers: ['Host', 'app.test', 'Content-Type', 'application/json'],
    body: Readable.from([bytes]),
    contentLength: bytes.length,
    maxBufferedBodyBytes: 16 * 1024 * 1024,
    requestId,
  };
}

/** Event-loop turns (setImmediate callbacks of another party) that ran until `p` settled. */
async function turnsUntil<T>(p: Promise<T>): Promise<{ turns: number; result: PromiseSettledResult<T> }> {
  let settled = false;
  let turns = 0;
  const done = Promise.allSettled([p]).then(([r]) => {
    settled = true;
    return r!;
  });
  const tick = (): void => {
    if (settled) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  const result = await done;
  return { turns, result };
}

/** A scheduler that runs one step per turn: each turn's work is then one step, whatever the machine's speed. */
const oneStepPerTurn = (): DecryptScheduler => new DecryptScheduler({ sliceMs: 1e-9 });

describe('decrypt stage: a body of near-tokens', () => {
  it('is answered 413 HTTP_TOO_MANY_ENCRYPTED_FIELDS under the default cap: look-alikes count like values', async () => {
    const stage = createDecryptStage(keyring);
    const out = stage(input(nearJson(5000)));
    await expect(out).rejects.toMatchObject({ code: 'HTTP_TOO_MANY_ENCRYPTED_FIELDS', status: 413 });
  });

  it('as object keys is not counted (keys are never decrypted): many ev:-looking keys, few values → decrypted, keys kept', async () => {
    const value = encryptValue('4111', keyring.publicKeys());
    const keyToken = encryptValue('k', keyring.publicKeys());
    // 5,000 keys shaped like values (near-tokens and one valid token), one value each that is not ev:, then two values.
    const keys = Array.from({ length: 5000 }, (_, i) => [`ev:Tk9D:A:A:${i}:$`, i] as const);
    const doc = { ...Object.fromEntries(keys), [keyToken]: 'plain', card: value, also: [value] };
    const stage = createDecryptStage(keyring, { maxFields: 16 });
    // Before: every key counted toward the cap, 413 although nothing but the two values would be decrypted.
    const out = await Promise.resolve(stage(input(JSON.stringify(doc))));
    expect(out!.decryptedFields).toBe(2);
    const sent = JSON.parse((await readAll(out!.body!)).toString()) as Record<string, unknown>;
    expect(sent).toEqual({ ...Object.fromEntries(keys), [keyToken]: 'plain', card: '4111', also: ['4111'] });
  });

  it('as object keys does not hide values over the cap: still 413', async () => {
    const value = encryptValue('4111', keyring.publicKeys());
    const stage = createDecryptStage(keyring, { maxFields: 3 });
    const doc = Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`ev:Tk9D:A:A:${i}:$`, value]));
    await expect(Promise.resolve(stage(input(JSON.stringify(doc))))).rejects.toMatchObject({ code: 'HTTP_TOO_MANY_ENCRYPTED_FIELDS', status: 413 });
  });

  it('is counted and scanned in steps of at most SCAN_STEP_STRINGS strings, one step per turn here', async () => {
    const n = 40 * SCAN_STEP_STRINGS;
    const stage = createDecryptStage(keyring, { maxFields: 10 * n, scheduler: oneStepPerTurn() });
    const { turns, result } = await turnsUntil(Promise.resolve(stage(input(nearJson(n)))));
    expect(result.status).toBe('fulfilled');
    // Nothing decrypted: the body goes on byte for byte.
    const out = (result as PromiseFulfilledResult<DecryptOutput | null>).value!;
    expect(out.decryptedFields).toBe(0);
    expect(turns).toBeGreaterThanOrEqual(n / SCAN_STEP_STRINGS);
  });

  it('in a body that is not JSON, is searched in steps of at most HOLDS_STEP_ENDS token ends, then forwarded', async () => {
    const n = 40 * HOLDS_STEP_ENDS;
    const stage = createDecryptStage(keyring, { scheduler: oneStepPerTurn() });
    const { turns, result } = await turnsUntil(Promise.resolve(stage(input(nearJson(n) + 'x'))));
    expect(result.status).toBe('fulfilled');
    expect((result as PromiseFulfilledResult<DecryptOutput | null>).value!.decryptedFields).toBe(0);
    expect(turns).toBeGreaterThanOrEqual(n / HOLDS_STEP_ENDS);
  });

  it('in a body that is not JSON, walks a long run of token characters before one `:$` in steps of HOLDS_STEP_CHARS', () => {
    const run = 'A'.repeat(20 * HOLDS_STEP_CHARS);
    for (const text of [`x ev: ${run}:$`, `x ${run}:$ ev:`]) {
      const steps = holdsTokenSteps(text);
      let yields = 0;
      let r = steps.next();
      for (; r.done !== true; r = steps.next()) yields++;
      expect(r.value).toBe(false);
      expect(yields).toBeGreaterThanOrEqual(20);
    }
    // and still finds a token at the end of such a run
    const token = encryptValue('4111', keyring.publicKeys());
    expect(drainSteps(holdsTokenSteps(`{${'A'.repeat(3 * HOLDS_STEP_CHARS)} ${token}`))).toBe(true);
  });

  it('in a body that is not JSON, searches for the next `:$` in steps too (one search over 8 MiB of colons was one step)', () => {
    for (const body of [':'.repeat(8 * 1024 * 1024) + '$', ': '.repeat(4 * 1024 * 1024) + 'ev:']) {
      let yields = 0;
      const steps = holdsTokenSteps(body);
      let r = steps.next();
      for (; r.done !== true; r = steps.next()) yields++;
      expect(r.value).toBe(false);
      expect(yields).toBeGreaterThanOrEqual(body.length / HOLDS_STEP_CHARS - 1);
    }
  });

  it('in a body that is not JSON, counts a candidate too long to parse as a token (refused, never forwarded): no step parses megabytes', async () => {
    // `ev:` × 7, then 4 M escaped slashes, then `:$`: each `ev:` was parsed over the whole 8 MiB, `\/` unescaped
    // first (5.3 s in one step); the body was then forwarded.
    const body = 'ev:'.repeat(7) + '\\/'.repeat(4 * 1024 * 1024) + ':$';
    let yields = 0;
    const steps = holdsTokenSteps(body);
    let r = steps.next();
    for (; r.done !== true; r = steps.next()) yields++;
    expect(r.value).toBe(true);
    expect(yields).toBeGreaterThanOrEqual(body.length / HOLDS_STEP_CHARS - 1); // the walk itself stays in steps
    // Just under the bound a candidate is still parsed (and this one is no token); just over, it is refused.
    const near = (n: number): string => `x ev:Tk9D:${'A'.repeat(16)}:${'B'.repeat(44)}:${'C'.repeat(n)}:$`;
    const fixed = near(0).length;
    expect(drainSteps(holdsTokenSteps(near(HOLDS_MAX_CANDIDATE_CHARS - fixed + 2)))).toBe(false);
    expect(drainSteps(holdsTokenSteps(near(HOLDS_MAX_CANDIDATE_CHARS - fixed + 3)))).toBe(true);
    const stage = createDecryptStage(keyring);
    await expect(Promise.resolve(stage(input(`{"a":"${body}`)))).rejects.toMatchObject({ code: 'HTTP_BAD_REQUEST', status: 400 });
  });

  it('does not hold back a small request with a value started alongside: it is answered first', async () => {
    const n = 40 * SCAN_STEP_STRINGS;
    const scheduler = oneStepPerTurn();
    const stage = createDecryptStage(keyring, { maxFields: 10 * n, scheduler });
    const order: string[] = [];
    let bigDone = false;
    const big = Promise.resolve(stage(input(nearJson(n), 'big'))).then(() => {
      bigDone = true;
      order.push('big');
    });
    // Start the small one once the big one's body is being worked on by the scheduler (or is done: a failure).
    while (scheduler.active === 0 && !bigDone) await new Promise((r) => setImmediate(r));
    const small = Promise.resolve(stage(input(JSON.stringify({ card: encryptValue('4111', keyring.publicKeys()) }), 'small'))).then((o) => {
      order.push('small');
      return o;
    });
    const [, smallOut] = await Promise.all([big, small]);
    expect(smallOut!.decryptedFields).toBe(1);
    expect(order).toEqual(['small', 'big']);
  });
});

async function readAll(body: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

function drainSteps<T>(steps: Iterator<void, T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done === true) return r.value;
  }
}

// The "is this body UTF-8 JSON" check of the HTTP decrypt stage, moved off the event loop: DecryptPool's
// isJsonText answers what jsonText (json-text.ts) would, DecryptScheduler.jsonText gives the very text of
// the inline path (or null), large bodies go to the pool as one job of the budget (EvBusyError past it,
// released however the pool answers), small ones and pool-less schedulers stay inline and take no slot.
import { afterAll, describe, expect, it, vi } from 'vitest';
import { DecryptPool } from '../../src/crypto/decrypt-pool.ts';
import { DecryptScheduler, JSON_TEXT_POOL_MIN_BYTES, type DecryptSchedulerPool } from '../../src/crypto/decrypt-scheduler.ts';
import { EvBusyError, EvPoolError } from '../../src/crypto/errors.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { MAX_DEPTH } from '../../src/crypto/json-lex.ts';
import { jsonText } from '../../src/crypto/json-text.ts';
import { Keyring } from '../../src/crypto/keyring.ts';

const keyring = Keyring.generate();
const pool = new DecryptPool(keyring, { size: 1 });
afterAll(async () => {
  await pool.close();
});

const token = encryptValue('4242', keyring.publicKeys());
/** A JSON array of `s` padded past the pool threshold with plain strings (ASCII and multi-byte). */
const padded = (inner: string): string => `[${inner},${JSON.stringify('x'.repeat(JSON_TEXT_POOL_MIN_BYTES))},"naïve 🙂 ✓"]`;
const bytes = (...parts: (string | number[])[]): Buffer => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

/** Bodies for both paths: each names what it is; all hold "ev:". */
const CASES: Record<string, Buffer> = {
  'valid JSON with a token': bytes(padded(JSON.stringify({ card: token }))),
  'valid JSON with near-tokens': bytes(padded('"ev:Tk9D:A:A:A:$","ev:not-a-token","ev:"')),
  'a leading BOM (kept in the text)': bytes([0xef, 0xbb, 0xbf], padded(JSON.stringify(token))),
  'a BOM only, then nothing': bytes([0xef, 0xbb, 0xbf], '"ev:"'),
  'invalid UTF-8 (a lone continuation byte)': bytes(padded(`"${token}"`).slice(0, 20), [0x80], padded('"ev:"').slice(1)),
  'invalid UTF-8 (an encoded surrogate)': bytes('["ev:', [0xed, 0xa0, 0x80], '"', ',' + JSON.stringify('y'.repeat(JSON_TEXT_POOL_MIN_BYTES)) + ']'),
  'invalid UTF-8 (an overlong slash)': bytes(padded('"ev:Tk9D'), [0xc0, 0xaf], '"'),
  'invalid UTF-8 (a truncated sequence at the end)': bytes(padded('"ev:"'), [0xe2, 0x9c]),
  'invalid JSON (trailing comma)': bytes(padded(`"${token}"`).slice(0, -1), ',]'),
  'invalid JSON (unquoted token)': bytes(`[${token},`, JSON.stringify('z'.repeat(JSON_TEXT_POOL_MIN_BYTES)), ']'),
  'invalid JSON (trailing garbage)': bytes(padded(JSON.stringify(token)), ' garbage'),
  'invalid JSON (two BOMs)': bytes([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf], padded('"ev:"')),
};

describe('DecryptPool.isJsonText', () => {
  it('answers what jsonText says, for every case, and leaves the caller’s bytes as they were', async () => {
    for (const [name, b] of Object.entries(CASES)) {
      const before = Buffer.from(b);
      expect(await pool.isJsonText(b), name).toBe(jsonText(b) !== null);
      expect(b.equals(before), name).toBe(true); // neither detached nor changed
    }
    expect(Object.values(CASES).filter((b) => jsonText(b) !== null)).toHaveLength(4); // the cases mean what they say
  });

  it('reads only the view it is given, not the rest of its ArrayBuffer', async () => {
    const whole = Buffer.from(`garbage [${JSON.stringify(token)}] garbage`);
    const view = whole.subarray(8, whole.length - 8);
    expect(await pool.isJsonText(view)).toBe(true);
    expect(await pool.isJsonText(whole)).toBe(false);
  });

  it('rejects with EvPoolError once closed', async () => {
    const closed = new DecryptPool(keyring, { size: 1 });
    await closed.close();
    await expect(closed.isJsonText(Buffer.from('[]'))).rejects.toBeInstanceOf(EvPoolError);
  });
});

describe('jsonText: nesting', () => {
  /** `levels` arrays, one inside the other, around `core`. */
  const nested = (levels: number, core = ''): Buffer => Buffer.from('['.repeat(levels) + core + ']'.repeat(levels));

  it('is not JSON past MAX_DEPTH arrays/objects, and JSON.parse never runs on such a body (10–20× its per-byte cost)', async () => {
    const parse = vi.spyOn(JSON, 'parse');
    try {
      const core = JSON.stringify(token);
      expect(jsonText(nested(MAX_DEPTH, core))).toBe(nested(MAX_DEPTH, core).toString());
      expect(parse).toHaveBeenCalledTimes(1);
      parse.mockClear();
      for (const deep of [nested(MAX_DEPTH + 1, core), nested(32_000, core), Buffer.from('{"a":'.repeat(MAX_DEPTH + 1) + '1' + '}'.repeat(MAX_DEPTH + 1))]) {
        expect(jsonText(deep)).toBeNull();
        expect(await pool.isJsonText(deep)).toBe(false); // the pool's worker answers the same
      }
      expect(parse).not.toHaveBeenCalled();
    } finally {
      parse.mockRestore();
    }
  });

  it('counts only structure: brackets inside strings (escaped quotes too) and siblings do not add levels', () => {
    const inString = `[${JSON.stringify('['.repeat(MAX_DEPTH * 2))}, "\\\\", "\\"[[[", ${JSON.stringify(token)}]`;
    expect(jsonText(Buffer.from(inString))).toBe(inString);
    const siblings = `[${Array(MAX_DEPTH * 2).fill('[{}]').join(',')}]`;
    expect(jsonText(Buffer.from(siblings))).toBe(siblings);
    const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), nested(MAX_DEPTH + 1)]);
    expect(jsonText(bom)).toBeNull();
  });
});

describe('DecryptScheduler.jsonText', () => {
  it('gives exactly the inline text (or null) with a pool, for every case', async () => {
    const scheduler = new DecryptScheduler({ pool });
    for (const [name, b] of Object.entries(CASES)) {
      expect(b.length >= JSON_TEXT_POOL_MIN_BYTES || name.includes('BOM only'), name).toBe(true);
      expect(await scheduler.jsonText(b), name).toBe(jsonText(b));
    }
    expect(scheduler.active).toBe(0);
  });

  /** A pool whose isJsonText answers when the test says so, counting calls. */
  function heldPool(): { pool: DecryptSchedulerPool; calls: () => number; answer(v: boolean | Error): void } {
    let calls = 0;
    const waiting: ((v: boolean | Error) => void)[] = [];
    return {
      pool: {
        keyring,
        decryptJson: (text) => pool.decryptJson(text),
        isJsonText: () => {
          calls++;
          return new Promise<boolean>((resolve, reject) => waiting.push((v) => (v instanceof Error ? reject(v) : resolve(v))));
        },
      },
      calls: () => calls,
      answer: (v) => waiting.shift()!(v),
    };
  }

  it('charges one job of the budget for a large body: EvBusyError beside it, released when the pool answers or fails', async () => {
    const held = heldPool();
    const scheduler = new DecryptScheduler({ maxConcurrent: 1, pool: held.pool });
    const big = CASES['valid JSON with a token']!;
    const first = scheduler.jsonText(big);
    expect(scheduler.active).toBe(1);
    await expect(scheduler.jsonText(big)).rejects.toBeInstanceOf(EvBusyError);
    await expect(scheduler.run([].values())).rejects.toBeInstanceOf(EvBusyError);
    await expect(scheduler.decryptJson('[]', keyring)).rejects.toBeInstanceOf(EvBusyError);
    // A small body is checked here at once, without a slot, even while the budget is spent.
    expect(await scheduler.jsonText(Buffer.from(`[${JSON.stringify(token)}]`))).toBe(`[${JSON.stringify(token)}]`);
    expect(held.calls()).toBe(1);
    held.answer(true);
    expect(await first).toBe(big.toString('utf8'));
    expect(scheduler.active).toBe(0);
    const second = scheduler.jsonText(big);
    held.answer(false);
    expect(await second).toBeNull();
    const third = scheduler.jsonText(big);
    held.answer(new EvPoolError('EV_POOL_WORKER_FAILED', 'a decrypt worker stopped (exit 1)'));
    await expect(third).rejects.toBeInstanceOf(EvPoolError);
    expect(scheduler.active).toBe(0);
    expect(held.calls()).toBe(3);
  });

  it('takes a slot of the shared budget across schedulers (session threads) and gives it back', async () => {
    const held = heldPool();
    let taken = 0;
    const slots = { max: 1, tryAcquire: () => (taken < 1 ? (taken++, true) : false), release: () => void taken--, get active() { return taken; } };
    const a = new DecryptScheduler({ slots, pool: held.pool });
    const b = new DecryptScheduler({ slots });
    const job = a.jsonText(CASES['invalid JSON (trailing garbage)']!);
    expect(slots.active).toBe(1);
    await expect(b.run([].values())).rejects.toBeInstanceOf(EvBusyError);
    held.answer(false);
    expect(await job).toBeNull();
    expect(slots.active).toBe(0);
  });

  it('without a pool checks inline, whatever the size, and takes no slot', async () => {
    const scheduler = new DecryptScheduler({ maxConcurrent: 1 });
    const blocker = scheduler.run([undefined].values()); // the one slot, taken
    for (const [name, b] of Object.entries(CASES)) expect(await scheduler.jsonText(b), name).toBe(jsonText(b));
    await blocker;
  });
});

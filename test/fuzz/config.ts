// Shared settings of the fuzz properties (test/fuzz/*.fuzz.test.ts).
//
//   FUZZ_RUNS  cases per property (default 10,000: what `npm test` runs in CI)
//   FUZZ_SEED  fast-check seed (default fixed, so CI is reproducible; fast-check prints the seed and the
//              counterexample path of a failure)
//   FUZZ_PATH  replay one failure: the `path` fast-check printed (use with its seed and `-t '<test name>'`)
//
// `npm run fuzz -- --runs 1000000 --seed 42` sets these and runs test/fuzz (see scripts/fuzz.ts).
import type fc from 'fast-check';

function intFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name}: expected an integer, found ${JSON.stringify(raw)}`);
  return n;
}

/** Cases per property. */
export const FUZZ_RUNS = intFromEnv('FUZZ_RUNS', 10_000);
if (FUZZ_RUNS < 1) throw new Error(`FUZZ_RUNS: expected at least 1, found ${FUZZ_RUNS}`);
/** The fixed default seed of CI runs. */
export const DEFAULT_FUZZ_SEED = 0x0e_c1a5e;
export const FUZZ_SEED = intFromEnv('FUZZ_SEED', DEFAULT_FUZZ_SEED);
const FUZZ_PATH = process.env.FUZZ_PATH || undefined;

/** True when the runs were raised above the CI default (longer runs get longer vitest timeouts). */
export const LONG_RUN = FUZZ_RUNS > 10_000;

/**
 * fast-check parameters of one property. `share` scales the run count for properties whose single case
 * already covers many inputs (e.g. every prefix of a message): the count never drops below FUZZ_RUNS × share.
 */
export function fuzzParams<T>(share = 1): fc.Parameters<T> {
  return {
    numRuns: Math.max(1, Math.round(FUZZ_RUNS * share)),
    seed: FUZZ_SEED,
    ...(FUZZ_PATH === undefined ? {} : { path: FUZZ_PATH }),
  };
}

/** vitest timeout for a property test: generous in CI, scaled for long runs. */
export function fuzzTimeout(baseMs = 60_000): number {
  return LONG_RUN ? Math.ceil(baseMs * (FUZZ_RUNS / 10_000)) : baseMs;
}

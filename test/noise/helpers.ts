import { expect } from 'vitest';
import { NoiseError, type NoisePrimitives } from '../../src/noise/index.ts';
import { noblePrimitives } from '../../src/noise/suite-noble.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';

/** Both primitive suites: every behaviour test runs against each. */
export const suites: NoisePrimitives[] = [nodePrimitives, noblePrimitives];

/** The code of the NoiseError `fn` throws; fails if it throws anything else or nothing. */
export function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NoiseError);
    return (err as NoiseError).code;
  }
  throw new Error('expected a NoiseError, nothing was thrown');
}

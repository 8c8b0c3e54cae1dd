// Shared access to the real Nitro documents in ../shared/fixtures/nitro (see index.json there).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

export const NITRO_DIR = resolve(process.cwd(), '../shared/fixtures/nitro');

export interface NitroFixture {
  file: string;
  module_id: string;
  timestamp_ms: number;
  debug_mode: boolean;
  valid_from: string;
  valid_until: string;
  verify_at: string;
  pcr0: string;
  pcr1: string;
  pcr2: string;
  nonce_hex: string | null;
  public_key_hex: string | null;
  structure_note?: string;
}

export const nitroIndex = JSON.parse(readFileSync(resolve(NITRO_DIR, 'index.json'), 'utf8')) as {
  root_pem: string;
  root_sha256: string;
  documents: NitroFixture[];
};

export function fixtureBytes(f: NitroFixture): Uint8Array {
  return new Uint8Array(readFileSync(resolve(NITRO_DIR, f.file)));
}

export function fixturePath(f: NitroFixture): string {
  return resolve(NITRO_DIR, f.file);
}

export const awsRootPath = resolve(NITRO_DIR, nitroIndex.root_pem);

/** The one real document with an empty public_key (rejected by default, see its structure_note). */
export const isEmptyPublicKeyFixture = (f: NitroFixture): boolean => f.public_key_hex === '';

export const pinsOf = (f: NitroFixture) => ({ PCR0: f.pcr0, PCR1: f.pcr1, PCR2: f.pcr2 });

/** Index of `needle` in `hay`, or -1. */
export function indexOfBytes(hay: Uint8Array, needle: Uint8Array, from = 0): number {
  outer: for (let i = from; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** Deterministic PRNG (mulberry32) so sampled positions are reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

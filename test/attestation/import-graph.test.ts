// The verifier must run in browsers: nothing reachable from src/attestation/verify.ts (our files and the
// packages they pull in, followed file by file) may import a Node built-in, and our files may not use Buffer.
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, walkImports } from '../util/import-graph.ts';

// The verifier's walk follows type-only imports too (stricter than a bundler).
const walk = (entry: string) => walkImports(entry);

describe('browser safety of the verifier', () => {
  it('reaches no node: (or bare built-in) import and no Buffer from src/attestation/verify.ts', () => {
    const { files, offenders } = walk(resolve(ROOT, 'src/attestation/verify.ts'));
    expect(offenders).toEqual([]);
    // The walk really followed the graph: our modules (the DER reader, the ECDSA seam).
    const rel = files.map((f) => f.slice(ROOT.length + 1));
    expect(rel).toEqual(
      expect.arrayContaining(['src/attestation/document.ts', 'src/attestation/cbor.ts', 'src/attestation/x509.ts', 'src/attestation/der.ts', 'src/attestation/ecdsa.ts', 'src/util/bytes.ts']),
    );
    expect(rel).not.toContain('src/attestation/ecdsa-node.ts');
  });

  it('catches a node: import when one is there (the walker is not blind)', () => {
    const { offenders } = walk(resolve(ROOT, 'src/attestation/simulator.ts'));
    expect(offenders.some((o) => o.includes('imports node:crypto'))).toBe(true);
  });
});

// The SDK must run in a browser bundle: nothing reachable from src/client/index.ts (our files and the packages
// they pull in, followed file by file as a bundler would) may import a Node built-in, undici or ws, and our
// files may not use Buffer. src/client/node.ts is the one Node entry and must not be reachable from index.ts.
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, walkImports } from '../util/import-graph.ts';

const walk = (entry: string) => walkImports(entry, { skipTypeOnly: true, forbiddenPackages: ['undici', 'ws'] });

describe('browser safety of the client SDK', () => {
  it('reaches no node:* / built-in / undici / ws import and no Buffer from src/client/index.ts', () => {
    const { files, offenders } = walk(resolve(ROOT, 'src/client/index.ts'));
    expect(offenders).toEqual([]);
    const rel = files.map((f) => f.slice(ROOT.length + 1));
    // The walk really followed the graph: every SDK file, the verifier, the noble suite and its packages.
    expect(rel).toEqual(
      expect.arrayContaining([
        'src/client/channel.ts',
        'src/client/session.ts',
        'src/client/fetch.ts',
        'src/client/stream.ts',
        'src/client/reconnect.ts',
        'src/client/http-codec.ts',
        'src/attestation/verify.ts',
        'src/noise/suite-noble.ts',
        'src/wire/frames.ts',
        'src/wire/messages.ts',
      ]),
    );
    expect(rel.some((f) => f.includes('node_modules/@noble/'))).toBe(true);
    expect(rel).not.toContain('src/client/node.ts');
    expect(rel).not.toContain('src/noise/suite-node.ts');
  });

  it('catches the Node entry (the walker is not blind)', () => {
    const { offenders } = walk(resolve(ROOT, 'src/client/node.ts'));
    expect(offenders.some((o) => o.includes('imports node:stream'))).toBe(true);
    expect(offenders.some((o) => o.includes('imports undici'))).toBe(true);
  });
});

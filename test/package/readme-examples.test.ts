// The README's SDK examples are the files in examples/ that test/package/pack-install.test.ts runs and
// type-checks: the README shows them verbatim, so it cannot drift from what is tested.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '../..');
const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');

describe('README SDK examples', () => {
  it.each(['node.mjs', 'browser.js'])('examples/%s appears in the README verbatim, as a code block', (file) => {
    const text = readFileSync(path.join(REPO, 'examples', file), 'utf8');
    expect(readme).toContain('```js\n' + text + '```\n');
  });

  it.each(['node-require.cjs', 'typescript.ts'])('the README names examples/%s', (file) => {
    expect(readme).toContain(`examples/${file}`);
  });
});

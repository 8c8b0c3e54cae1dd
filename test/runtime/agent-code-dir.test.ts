// agentCodeDir: the directory the app's sandbox makes read-only because the agent starts worker threads from
// it after the app. It was the nearest directory above the agent's modules holding any package.json: where the
// agent's own had none (the bundle's files copied without their marker), one the app left higher up — at / in
// an image whose WORKDIR is / — made that whole tree the agent's code. Failed before: the old function took no
// layout and walked from this checkout.
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { agentCodeDir } from '../../src/runtime/die-with-agent.ts';

const root = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'agent-code-dir-')));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Writes `file` (and its directories) under root; its file: URL. */
function place(file: string, text = ''): string {
  const full = path.join(root, file);
  mkdirSync(path.dirname(full), { recursive: true });
  writeFileSync(full, text);
  return pathToFileURL(full).href;
}

describe('agentCodeDir', () => {
  it("the bundle: the directory of its flat files, not one above holding the app's package.json", () => {
    place('image/package.json', '{ "name": "the-app", "type": "module" }');
    const chunk = place('image/opt/enclave-agent/dist/chunk-ABC.js');
    expect(agentCodeDir(chunk, true)).toBe(path.join(root, 'image/opt/enclave-agent/dist'));
  });

  it('an npm install or checkout: the package root two levels above src/runtime or dist/runtime, whatever package.json lies above it', () => {
    place('app/package.json', '{ "name": "the-app" }');
    const installed = place('app/node_modules/enclave-agent/dist/runtime/die-with-agent.js');
    expect(agentCodeDir(installed, false)).toBe(path.join(root, 'app/node_modules/enclave-agent'));
    expect(agentCodeDir()).toBe(realpathSync(path.join(import.meta.dirname, '../..'))); // this checkout, from src/runtime
  });

  it('resolves symbolic links: the read-only mount must be the real directory', () => {
    symlinkSync(path.join(root, 'image/opt/enclave-agent'), path.join(root, 'agent-link'));
    expect(agentCodeDir(pathToFileURL(path.join(root, 'agent-link/dist/cli.js')).href, true)).toBe(path.join(root, 'image/opt/enclave-agent/dist'));
  });
});

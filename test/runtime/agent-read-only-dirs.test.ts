// agentReadOnlyDirs: what the app's sandbox makes read-only because the agent's worker threads load code from it
// after the app has started — the agent's code and, found by resolving its dependencies as Node does, the
// node_modules they lie in. Failed before: there was no such list; the sandbox held the agent's own directory
// only, and in an npm install its dependencies (hoisted beside the app's) stayed writable to a root app.
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentReadOnlyDirs } from '../../src/runtime/agent-read-only-dirs.ts';
import { agentCodeDir } from '../../src/runtime/die-with-agent.ts';
import { SandboxDirsError } from '../../src/runtime/errors.ts';

const root = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'agent-read-only-dirs-')));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** agentReadOnlyDirs for the agent's code at `codeDir`, without a native addon. */
const dirsOf = (codeDir: string, strict = true): string[] => agentReadOnlyDirs({ codeDir, strict, addon: null });

/** A package at `dir` (under root) whose package.json has `fields`; its full path. */
function pkg(dir: string, fields: Record<string, Record<string, string>> = {}): string {
  const full = path.join(root, dir);
  mkdirSync(full, { recursive: true });
  writeFileSync(path.join(full, 'package.json'), JSON.stringify({ name: path.basename(dir), ...fields }));
  return full;
}

describe('agentReadOnlyDirs', () => {
  it("an npm install: the app's node_modules, where the agent's dependencies and theirs are hoisted", () => {
    const code = pkg('npm/app/node_modules/enclave-agent', {
      dependencies: { pino: '1', nested: '1' },
      optionalDependencies: { 'not-installed': '1' },
      peerDependencies: { '@scope/peer': '1' },
    });
    pkg('npm/app/node_modules/pino', { dependencies: { 'sonic-boom': '1' } });
    pkg('npm/app/node_modules/sonic-boom');
    pkg('npm/app/node_modules/@scope/peer');
    pkg('npm/app/node_modules/enclave-agent/node_modules/nested', { dependencies: { 'sonic-boom': '1' } });
    pkg('npm/app/src', { dependencies: { pino: '1' } }); // the app's own code stays writable
    expect(dirsOf(code)).toEqual([path.join(root, 'npm/app/node_modules')]);
  });

  it('every dependency inside the agent (a checkout, a global install, the bundle): its own directory alone', () => {
    const code = pkg('own/agent', { dependencies: { pino: '1' } });
    pkg('own/agent/node_modules/pino', { dependencies: { 'sonic-boom': '1' } });
    pkg('own/agent/node_modules/sonic-boom');
    pkg('own/node_modules/sonic-boom'); // found second by Node, never reached
    expect(dirsOf(code)).toEqual([code]);
    const bundle = path.join(root, 'own/opt/enclave-agent/dist');
    mkdirSync(bundle, { recursive: true });
    writeFileSync(path.join(bundle, 'package.json'), '{ "type": "module" }\n');
    expect(dirsOf(bundle)).toEqual([bundle]);
    expect(agentReadOnlyDirs()).toEqual([agentCodeDir()]); // this checkout: its node_modules is inside it
  });

  it("a transitive dependency found above the agent's own node_modules", () => {
    const code = pkg('deep/app/node_modules/enclave-agent', { dependencies: { nested: '1' } });
    pkg('deep/app/node_modules/enclave-agent/node_modules/nested', { dependencies: { hoisted: '1' } });
    pkg('deep/app/node_modules/hoisted');
    expect(dirsOf(code)).toEqual([path.join(root, 'deep/app/node_modules')]);
  });

  it("pnpm: the links and the store's real directories, all in the app's node_modules", () => {
    const store = 'pnpm/app/node_modules/.pnpm';
    const code = pkg(`${store}/enclave-agent@1/node_modules/enclave-agent`, { dependencies: { pino: '1' } });
    pkg(`${store}/pino@1/node_modules/pino`);
    symlinkSync('../../pino@1/node_modules/pino', path.join(root, `${store}/enclave-agent@1/node_modules/pino`));
    expect(dirsOf(code)).toEqual([path.join(root, 'pnpm/app/node_modules')]);
  });

  it('a package linked from outside any node_modules (npm link, a workspace): that package too, and where its own dependencies lie', () => {
    const code = pkg('link/app/node_modules/enclave-agent', { dependencies: { linked: '1' } });
    const linked = pkg('link/work/linked', { dependencies: { dep: '1' } });
    pkg('link/work/linked/node_modules/dep');
    symlinkSync(linked, path.join(root, 'link/app/node_modules/linked'));
    // The link itself lies in the app's node_modules: a root app that could write there would point it elsewhere.
    expect(dirsOf(code).sort()).toEqual([path.join(root, 'link/app/node_modules'), linked].sort());
  });

  // Failed before (no throw): [the agent's code, the link's target]; the link itself, in the app's writable
  // directory, could be replaced by one to the app's own packages, where the agent's threads would then load pino.
  it('refuses a node_modules that is a link in a writable directory: the app could replace the link', () => {
    const code = pkg('linked-nm/app/enclave-agent', { dependencies: { pino: '1' } });
    pkg('linked-nm/cache/node_modules/pino');
    symlinkSync(path.join(root, 'linked-nm/cache/node_modules'), path.join(root, 'linked-nm/app/node_modules'));
    expect(() => dirsOf(code)).toThrow(SandboxDirsError);
    expect(() => dirsOf(code)).toThrow(`${path.join(root, 'linked-nm/app/node_modules')} is a symbolic link in ${path.join(root, 'linked-nm/app')}, which is writable`);
    // Inside a read-only directory the same link cannot be replaced (a checkout whose node_modules is a link).
    const own = pkg('linked-own/agent', { dependencies: { pino: '1' } });
    pkg('linked-own/store/node_modules/pino');
    symlinkSync(path.join(root, 'linked-own/store/node_modules'), path.join(own, 'node_modules'));
    expect(dirsOf(own).sort()).toEqual([own, path.join(root, 'linked-own/store/node_modules')].sort());
  });

  // Failed before (no throw): [the agent's code, ws/node_modules]; ws/packages/node_modules, created by the app,
  // would have been found before ws/node_modules.
  it("refuses a writable directory between a package and its dependencies' node_modules (a workspace's packages/)", () => {
    const code = pkg('ws/packages/enclave-agent', { dependencies: { pino: '1' } });
    pkg('ws/node_modules/pino');
    expect(() => dirsOf(code)).toThrow(`${path.join(root, 'ws/packages/node_modules')} does not exist and ${path.join(root, 'ws/packages')} is writable`);
    // An unprivileged agent's app gets no read-only mounts (its user can write these files anyway): not refused.
    expect(dirsOf(code, false)).toEqual([path.join(root, 'ws/node_modules'), code]);
  });

  // Failed before: [dist] alone. Session threads load the addon after the app has started, each resolving its real
  // path anew: a link the app put at /opt/enclave-agent/native/enclave_native.node had its library dlopen'ed there.
  it("the Docker layer: the bundle's directory and the native addon's beside it", () => {
    const dist = path.join(root, 'layer/opt/enclave-agent/dist');
    mkdirSync(dist, { recursive: true });
    writeFileSync(path.join(dist, 'package.json'), '{ "type": "module" }\n');
    const native = path.join(root, 'layer/opt/enclave-agent/native');
    mkdirSync(native, { recursive: true });
    writeFileSync(path.join(native, 'enclave_native.node'), '');
    expect(agentReadOnlyDirs({ codeDir: dist, strict: true, addon: path.join(native, 'enclave_native.node') })).toEqual([dist, native]);
    // No addon there: nothing more (an agent without vsock).
    expect(agentReadOnlyDirs({ codeDir: dist, strict: true, addon: path.join(root, 'layer/none/enclave_native.node') })).toEqual([dist]);
    // Reached through a link: refused, the link's directory is writable.
    symlinkSync(native, path.join(root, 'layer/opt/native-link'));
    expect(() => agentReadOnlyDirs({ codeDir: dist, strict: true, addon: path.join(root, 'layer/opt/native-link/enclave_native.node') })).toThrow(/reached through a symbolic link/);
  });
});

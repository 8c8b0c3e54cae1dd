// The addon is optional: the install hook never fails the install, and a missing addon is a clear typed error.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const root = process.cwd();
// .ci/run exports ENCLAVE_AGENT_REQUIRE_ADDON=1; the optional-addon behaviour is checked with it off.
const optional = { ...process.env, ENCLAVE_AGENT_REQUIRE_ADDON: '' };
const brokenCompiler = { CC: '/nonexistent/cc', CXX: '/nonexistent/c++' };

it('the install hook prints one line and exits 0 when the compiler is missing', () => {
  // A copy of the script and native/ sources, so the real build output is never touched.
  mkdirSync(path.join(tmp.dir, 'scripts'));
  cpSync(path.join(root, 'scripts/build-native.mjs'), path.join(tmp.dir, 'scripts/build-native.mjs'));
  cpSync(path.join(root, 'native/binding.gyp'), path.join(tmp.dir, 'native/binding.gyp'));
  cpSync(path.join(root, 'native/src'), path.join(tmp.dir, 'native/src'), { recursive: true });
  const r = spawnSync(process.execPath, [path.join(tmp.dir, 'scripts/build-native.mjs')], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...optional, ...brokenCompiler },
  });
  expect(r.status).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^enclave-agent: native addon not built \(.+\); vsock and \/dev\/nsm unavailable — see native\/build-native\.log$/);
  expect(existsSync(path.join(tmp.dir, 'native/build-native.log'))).toBe(true);
  expect(existsSync(path.join(tmp.dir, 'native/build/Release/enclave_native.node'))).toBe(false);
});

it('the install hook fails (exit 1) when ENCLAVE_AGENT_REQUIRE_ADDON=1 and the build fails or is skipped', () => {
  // the copy made by the test above (vitest runs a file's tests in order)
  const script = path.join(tmp.dir, 'scripts/build-native.mjs');
  expect(existsSync(script)).toBe(true);
  const failed = spawnSync(process.execPath, [script], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, ...brokenCompiler, ENCLAVE_AGENT_REQUIRE_ADDON: '1' },
  });
  expect(failed.status).toBe(1);
  expect(failed.stderr).toMatch(/^enclave-agent: native addon not built \(.+\)/);
  expect(failed.stderr).toContain('is required (ENCLAVE_AGENT_REQUIRE_ADDON=1): failing');
  const skipped = spawnSync(process.execPath, [script], {
    encoding: 'utf8',
    env: { ...process.env, ENCLAVE_AGENT_SKIP_NATIVE: '1', ENCLAVE_AGENT_REQUIRE_ADDON: '1' },
  });
  expect(skipped.status).toBe(1);
  expect(skipped.stderr).toContain('is required (ENCLAVE_AGENT_REQUIRE_ADDON=1)');
});

it('the install hook keeps the addon when only the static sandbox wrapper fails to link', () => {
  // What a machine without the C library's static archive (Amazon Linux, Fedora without glibc-static) sees: the
  // wrapper's -static link fails after the addon was built. The host bridge needs only the addon.
  const dir = path.join(tmp.dir, 'no-static');
  mkdirSync(path.join(dir, 'scripts'), { recursive: true });
  cpSync(path.join(root, 'scripts/build-native.mjs'), path.join(dir, 'scripts/build-native.mjs'));
  cpSync(path.join(root, 'native/src'), path.join(dir, 'native/src'), { recursive: true });
  const gyp = readFileSync(path.join(root, 'native/binding.gyp'), 'utf8');
  expect(gyp).toContain('"ldflags": ["-static"]');
  writeFileSync(path.join(dir, 'native/binding.gyp'), gyp.replace('"ldflags": ["-static"]', '"ldflags": ["-static", "-lno_such_static_archive"]'));
  const r = spawnSync(process.execPath, [path.join(dir, 'scripts/build-native.mjs')], { encoding: 'utf8', timeout: 120_000, env: optional });
  expect(r.status).toBe(0);
  const lines = r.stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^enclave-agent: native addon built without the app sandbox wrapper \(static link failed: .*glibc-static.*\); `enclave-agent run` cannot start an app/);
  expect(existsSync(path.join(dir, 'native/build/Release/enclave_native.node'))).toBe(true);
  expect(existsSync(path.join(dir, 'native/build/Release/enclave_die_with_parent'))).toBe(false);
}, 150_000);

it('the install hook can be skipped explicitly', () => {
  const r = spawnSync(process.execPath, [path.join(root, 'scripts/build-native.mjs')], {
    encoding: 'utf8',
    env: { ...optional, ENCLAVE_AGENT_SKIP_NATIVE: '1' },
  });
  expect(r.status).toBe(0);
  expect(r.stdout.trim()).toMatch(/^enclave-agent: native addon build skipped/);
});

it('without the addon, vsock and the NSM ioctl fail with NativeUnavailableError (NATIVE_UNAVAILABLE)', () => {
  const script = `
    import { listenVsock } from './src/transport/vsock.ts';
    import { nativeNsmIoctl } from './src/attestation/nsm-native.ts';
    import { nativeAvailable } from './src/transport/native.ts';
    const seen = [];
    for (const f of [() => listenVsock({ port: 0 }, { onConnection() {} }), () => nativeNsmIoctl()(new Uint8Array([1]))]) {
      try { await f(); seen.push('no error'); } catch (e) { seen.push({ name: e.name, code: e.code, message: e.message }); }
    }
    console.log(JSON.stringify({ available: nativeAvailable(), seen }));
  `;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    cwd: root,
    timeout: 30_000,
    env: { ...process.env, ENCLAVE_AGENT_NATIVE_ADDON: path.join(tmp.dir, 'missing.node') },
  });
  expect(r.stderr).toBe('');
  const out = JSON.parse(r.stdout.trim()) as { available: boolean; seen: { name: string; code: string; message: string }[] };
  expect(out.available).toBe(false);
  expect(out.seen).toHaveLength(2);
  for (const e of out.seen) {
    expect(e).toMatchObject({ name: 'NativeUnavailableError', code: 'NATIVE_UNAVAILABLE' });
    expect(e.message).toMatch(/^vsock\/NSM unavailable: the native addon was not built \(.*missing\.node does not exist/);
  }
});

// `enclave-agent run` with [secrets] and with keyrings unfit for production, as a real child process (TCP for
// vsock, the NSM simulator for /dev/nsm): a secret that does not decrypt stops the boot naming its variable
// (never its value) before the app starts; a value sealed without the enclave-secret role reaches the app with a
// warning naming its variable; a KMS-sealed value fails to load; the dev and sealed-file keyrings print one clear
// warning line each.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { devKeySource, KeyMaterial, Keyring, loadKeyring, sealKeyMaterial } from '../../src/crypto/keyring.ts';
import { sealSecret } from '../../src/crypto/secrets.ts';
import { toHex } from '../../src/util/bytes.ts';
import { runBin } from '../cli/spawn.ts';
import { tamperEv } from '../crypto/ev-forge.ts';

const MARKER = `SECRET-MARKER-run-${process.pid}`;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-run-secrets-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(name: string, toml: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string; appRan: boolean }> {
  const d = path.join(dir, name);
  const cfg = path.join(d, 'enclave.toml');
  const ran = path.join(d, 'app-ran');
  mkdirSync(d, { recursive: true });
  writeFileSync(cfg, `[api]\nenabled = false\n${toml}\n`);
  const r = await runBin(['run', '--config', cfg, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(d, 'state'), '--loopback', 'off', '--', 'sh', '-c', `touch ${ran}; sleep 30`], { env, timeoutMs: 45_000 });
  return { ...r, appRan: existsSync(ran) };
}

describe('run: [secrets] and keyring warnings', () => {
  it('dev keyring: warns in one line; a secret that does not decrypt stops the boot naming the variable, before the app', async () => {
    const state = path.join(dir, 'dev', 'state');
    const keyring = await loadKeyring(devKeySource(state)); // the keys run will open
    const pub = keyring.publicKeys();
    const r = await run('dev', `[secrets]\nGOOD = "${encryptValue('fine', pub)}"\nDB_PASSWORD = "${tamperEv(encryptValue(MARKER, pub))}"\n`);
    expect(r.code).toBe(1);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('WARNING'));
    expect(warnings).toEqual([
      `enclave-agent run: WARNING: [keyring] source = "dev": the ev: keys live and die with this enclave (${path.join(state, 'keys.json')}); values encrypted now will not decrypt after a restart or on another replica. Development only: use [keyring] source = "kms" in production.`,
    ]);
    expect(r.stderr).toMatch(/enclave-agent run: SECRET_DOES_NOT_DECRYPT: secrets\.DB_PASSWORD: does not decrypt with this enclave's keys/);
    expect(r.stdout).toMatch(/"level":40,[^\n]*"keyring":"dev"[^\n]*live and die with this enclave/);
    expect(r.stdout).toMatch(/"variable":"DB_PASSWORD"[^\n]*a secret does not decrypt/);
    expect(r.appRan).toBe(false);
    expect(r.stdout + r.stderr).not.toContain(MARKER);
  }, 60_000);

  it('a value sealed without the enclave-secret role still reaches the app, with a warning naming the variable only', async () => {
    const d = path.join(dir, 'legacy');
    const state = path.join(d, 'state');
    const keyring = await loadKeyring(devKeySource(state));
    const out = path.join(d, 'app-env');
    mkdirSync(d, { recursive: true });
    const cfg = path.join(d, 'enclave.toml');
    const legacy = encryptValue(`${MARKER}-old`, keyring.publicKeys()); // as `secrets seal` wrote them before the role
    writeFileSync(cfg, `[api]\nenabled = false\n[app]\nrestart = "never"\n[secrets]\nDB_PASSWORD = "${sealSecret(MARKER, keyring.publicKeys())}"\nOLD_TOKEN = "${legacy}"\n`);
    const r = await runBin(['run', '--config', cfg, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', state, '--loopback', 'off', '--', 'sh', '-c', `printf '%s|%s' "$DB_PASSWORD" "$OLD_TOKEN" > ${out}`], { timeoutMs: 45_000 });
    expect(r.code).toBe(0);
    expect(readFileSync(out, 'utf8')).toBe(`${MARKER}|${MARKER}-old`);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('WARNING') && !l.includes('[keyring]'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^enclave-agent run: WARNING: secrets\.OLD_TOKEN: sealed without the enclave-secret data role: .*enclave-agent secrets seal OLD_TOKEN/);
    expect(r.stdout).toMatch(/"level":40,[^\n]*"code":"SECRET_WITHOUT_ROLE","variable":"OLD_TOKEN"/);
    expect(r.stdout + r.stderr).not.toContain(MARKER);
    expect(r.stdout + r.stderr).not.toContain(legacy);
  }, 60_000);

  it('sealed-file keyring with a host-supplied unseal key: warned as development-only', async () => {
    const unseal = randomBytes(32);
    const r0 = path.join(dir, 'sealed.bin');
    writeFileSync(r0, sealKeyMaterial(KeyMaterial.generate(), unseal));
    writeFileSync(path.join(dir, 'unseal.hex'), toHex(unseal));
    const r = await run('sealed', `[keyring]\nsource = "sealed-file"\npath = "${r0}"\n[secrets]\nDB_PASSWORD = "${encryptValue(MARKER, Keyring.generate().publicKeys())}"\n`, { ENCLAVE_AGENT_UNSEAL_KEY_FILE: path.join(dir, 'unseal.hex') });
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n').filter((l) => l.includes('WARNING'))).toEqual([
      'enclave-agent run: WARNING: [keyring] source = "sealed-file" is development-only: its unseal key comes from the host ($ENCLAVE_AGENT_UNSEAL_KEY_FILE), so whoever runs the parent instance can open the keyring. Use [keyring] source = "kms" in production.',
    ]);
    expect(r.stderr).toMatch(/SECRET_DOES_NOT_DECRYPT: secrets\.DB_PASSWORD/); // sealed for other keys
    expect(r.appRan).toBe(false);
  }, 60_000);

  it('a malformed KMS-sealed value fails to load, naming the variable', async () => {
    const r = await run('kms', '[secrets]\nAPI_KEY = "kms:AQICAHhsomething"\n');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/CONFIG_BAD_VALUE: .*secrets\.API_KEY: not a well-formed kms: value/);
    expect(r.appRan).toBe(false);
  }, 60_000);
});

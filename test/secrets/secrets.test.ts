// [secrets]: the config rules (names, ev: values only, never echoing a value), decryption into the app's
// environment (string/number/boolean text, a value that does not open names its variable), and
// `enclave-agent secrets seal NAME` (value from stdin only, output that run can decrypt).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/run.ts';
import type { CliIo } from '../../src/cli/types.ts';
import { configFromObject, parseConfig } from '../../src/config.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { devKeySource, KeyMaterial, Keyring, loadKeyring } from '../../src/crypto/keyring.ts';
import { sealKeyring } from '../../src/crypto/sealed-keyring.ts';
import { appEnvironment, decryptSecrets } from '../../src/crypto/secrets.ts';
import { toBase64, utf8 } from '../../src/util/bytes.ts';
import { tamperEv } from '../crypto/ev-forge.ts';

const MARKER = 'SECRET-MARKER-secrets-unit-7f3a';
let dir: string;
let keyring: Keyring;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-secrets-'));
  keyring = await loadKeyring(devKeySource(path.join(dir, 'state')));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configError(secrets: Record<string, unknown>): { code: string; message: string } {
  try {
    configFromObject({ secrets });
  } catch (err) {
    return err as { code: string; message: string };
  }
  throw new Error('the config loaded');
}

describe('[secrets] in enclave.toml', () => {
  it('loads NAME = "ev:…" entries, and defaults to none', () => {
    const pub = keyring.publicKeys();
    const a = encryptValue('x', pub);
    const b = encryptValue(42, pub, { curve: 'secp256k1' });
    const c = parseConfig(`[secrets]\nDB_PASSWORD = "${a}"\n_N2 = "${b}"\n`);
    expect(c.secrets).toEqual({ DB_PASSWORD: a, _N2: b });
    expect(configFromObject({}).secrets).toEqual({});
  });

  it('refuses bad names, non-ev values (without quoting them), malformed kms: values, reserved names', () => {
    const ev = encryptValue('x', keyring.publicKeys());
    for (const name of ['db_password', '1ABC', 'A-B', 'A B', '']) {
      expect(configError({ [name]: ev })).toMatchObject({ code: 'CONFIG_BAD_VALUE', message: expect.stringContaining('is not an environment variable name') });
    }
    const plain = configError({ API_TOKEN: MARKER });
    expect(plain).toMatchObject({ code: 'CONFIG_BAD_VALUE', message: expect.stringContaining('secrets.API_TOKEN: expected an ev: value') });
    expect(plain.message).not.toContain(MARKER);
    expect(configError({ API_TOKEN: `ev:Tk9D:${MARKER}` }).message).not.toContain(MARKER); // ev-looking but malformed
    expect(configError({ PORT: 5 })).toMatchObject({ code: 'CONFIG_BAD_VALUE', message: expect.stringContaining('secrets.PORT: expected an ev: or kms: string') });
    expect(configError({ DB: `kms:${MARKER}` })).toMatchObject({ code: 'CONFIG_BAD_VALUE', message: expect.stringMatching(/secrets\.DB: not a well-formed kms: value/) });
    expect(configError({ DB: `kms:${MARKER}` }).message).not.toContain(MARKER);
    expect(configError({ HTTPS_PROXY: ev })).toMatchObject({ code: 'CONFIG_BAD_VALUE', message: expect.stringContaining('secrets.HTTPS_PROXY') });
    expect(() => configFromObject({ secrets: 'x' })).toThrow(/secrets: expected a table/);
  });
});

describe('decrypting secrets for the app', () => {
  it('gives the app the text of strings, numbers (exact) and booleans', () => {
    const pub = keyring.publicKeys();
    const secrets = {
      S: encryptValue(MARKER, pub),
      N: encryptValue(1234567.125, pub),
      F: encryptValue(-0.5, pub, { curve: 'secp256k1' }),
      B: encryptValue(false, pub, { role: 'db' }),
      U: encryptValue('pässwörd ✓', pub),
    };
    expect(decryptSecrets(secrets, keyring)).toEqual({ S: MARKER, N: '1234567.125', F: '-0.5', B: 'false', U: 'pässwörd ✓' });
  });

  it('a value that does not decrypt (tampered, or for another keyring) names the variable, never the value', () => {
    const pub = keyring.publicKeys();
    const good = encryptValue('fine', pub);
    for (const bad of [tamperEv(encryptValue(MARKER, pub)), encryptValue(MARKER, Keyring.generate().publicKeys())]) {
      let err: { code: string; variable: string; message: string } | undefined;
      try {
        decryptSecrets({ A_OK: good, DB_PASSWORD: bad }, keyring);
      } catch (e) {
        err = e as typeof err;
      }
      expect(err).toMatchObject({ code: 'SECRET_DOES_NOT_DECRYPT', variable: 'DB_PASSWORD', message: expect.stringMatching(/^secrets\.DB_PASSWORD: does not decrypt with this enclave's keys \(AUTHENTICATION_FAILED/) });
      expect(err!.message).not.toContain(MARKER);
      expect(err!.message).not.toContain(bad);
    }
  });

  it("builds the app's environment without touching the agent's own", () => {
    const before = { ...process.env };
    const env = appEnvironment(process.env, { HTTP_PROXY: 'http://127.0.0.1:3128' }, { DB_PASSWORD: MARKER, PATH: '/secret/bin' });
    expect(env).toMatchObject({ HTTP_PROXY: 'http://127.0.0.1:3128', DB_PASSWORD: MARKER, PATH: '/secret/bin' });
    expect(process.env).toEqual(before);
    expect(process.env.DB_PASSWORD).toBeUndefined();
  });
});

function io(stdin: string | Uint8Array): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const bytes = typeof stdin === 'string' ? utf8.encode(stdin) : stdin;
  return { stdout, stderr, out: (l) => stdout.push(l), err: (l) => stderr.push(l), stdin: () => Promise.resolve(bytes) };
}

describe('enclave-agent secrets seal NAME', () => {
  it('reads the value from stdin and prints an ev: value and the TOML line, which load and decrypt to it', async () => {
    const t = io(`${MARKER}\n`);
    expect(await runCli(['secrets', 'seal', 'DB_PASSWORD', '--state-dir', path.join(dir, 'state'), '--config', path.join(dir, 'none.toml')], t)).toBe(1); // missing config file
    const t2 = io(`${MARKER}\n`);
    expect(await runCli(['secrets', 'seal', 'DB_PASSWORD', '--state-dir', path.join(dir, 'state')], t2)).toBe(0);
    expect(t2.stdout).toHaveLength(2);
    const [value, line] = t2.stdout as [string, string];
    expect(value).toMatch(/^ev:QkTC:/); // the enclave-secret data role (secrets-not-for-clients.test.ts)
    expect(line).toBe(`DB_PASSWORD = "${value}"`);
    expect(t2.stdout.join('\n') + t2.stderr.join('\n')).not.toContain(MARKER);
    const cfg = parseConfig(`[secrets]\n${line}\n`);
    expect(decryptSecrets(cfg.secrets, keyring)).toEqual({ DB_PASSWORD: MARKER }); // the trailing newline dropped
  });

  it('with --key (as keys public prints it), --curve, --type', async () => {
    const t = io('8080');
    expect(await runCli(['secrets', 'seal', 'PORT_NUMBER', '--key', toBase64(keyring.publicKey('secp256k1')), '--curve', 'secp256k1', '--type', 'number'], t)).toBe(0);
    expect(t.stdout[0]).toMatch(/^ev:S0lS:number:/);
    expect(decryptSecrets({ PORT_NUMBER: t.stdout[0]! }, keyring)).toEqual({ PORT_NUMBER: '8080' });
    const b = io('maybe');
    expect(await runCli(['secrets', 'seal', 'FLAG', '--key', toBase64(keyring.publicKey('p256')), '--type', 'boolean'], b)).toBe(2);
    expect(b.stderr.join('')).toMatch(/--type boolean/);
  });

  it('the app gets exactly the text sealed: spaces kept, numbers as written (one trailing newline dropped)', async () => {
    const key = toBase64(keyring.publicKey('p256'));
    const sealed = async (stdin: string, type = 'string'): Promise<string> => {
      const t = io(stdin);
      expect(await runCli(['secrets', 'seal', 'V', '--key', key, '--type', type], t)).toBe(0);
      return decryptSecrets({ V: t.stdout[0]! }, keyring).V!;
    };
    expect(await sealed('  pass word  ')).toBe('  pass word  ');
    expect(await sealed('\tsecret\t\n')).toBe('\tsecret\t');
    expect(await sealed('pw\n\n')).toBe('pw\n');
    expect(await sealed('12345678901234567890', 'number')).toBe('12345678901234567890');
    expect(await sealed('1.50', 'number')).toBe('1.50');
    expect(await sealed('-2.5e+10', 'number')).toBe('-2.5e+10');
  });

  it('with [keyring] source = "kms": seals for the public keys recorded in the sealed-keyring file (no KMS call)', async () => {
    const material = KeyMaterial.generate();
    const file = path.join(dir, 'keyring.sealed.json');
    writeFileSync(file, sealKeyring(material, randomBytes(32), { keyId: 'arn:aws:kms:us-east-1:111122223333:key/test', region: 'us-east-1', ciphertextBlob: randomBytes(64) }));
    const cfg = path.join(dir, 'kms.toml');
    writeFileSync(cfg, `[keyring]\nsource = "kms"\nfile = "${file}"\nregion = "us-east-1"\n`);
    const t = io(MARKER);
    expect(await runCli(['secrets', 'seal', 'API_TOKEN', '--config', cfg], t)).toBe(0);
    expect(decryptSecrets({ API_TOKEN: t.stdout[0]! }, Keyring.fromMaterial(material))).toEqual({ API_TOKEN: MARKER });
    expect(() => decryptSecrets({ API_TOKEN: t.stdout[0]! }, keyring)).toThrow(/secrets\.API_TOKEN: does not decrypt/);
  });

  it('never takes the value from the command line, and refuses bad names, empty input and non-dev keyrings without --key', async () => {
    const argv = io('');
    expect(await runCli(['secrets', 'seal', 'DB_PASSWORD', MARKER, '--state-dir', path.join(dir, 'state')], argv)).toBe(2);
    expect(argv.stderr.join('')).toMatch(/expected one argument, the variable NAME \(the value comes from standard input\), found 2/);
    expect(argv.stderr.join('')).not.toContain(MARKER);
    const lower = io('x');
    expect(await runCli(['secrets', 'seal', 'db_password', '--state-dir', path.join(dir, 'state')], lower)).toBe(2);
    expect(lower.stderr.join('')).toMatch(/NAME must be an environment variable name/);
    const empty = io('\n');
    expect(await runCli(['secrets', 'seal', 'DB_PASSWORD', '--state-dir', path.join(dir, 'state')], empty)).toBe(2);
    expect(empty.stderr.join('')).toMatch(/no value on standard input/);
    const sealedCfg = path.join(dir, 'sealed.toml');
    writeFileSync(sealedCfg, '[keyring]\nsource = "sealed-file"\npath = "/x"\n');
    const sealed = io('x');
    expect(await runCli(['secrets', 'seal', 'DB_PASSWORD', '--config', sealedCfg], sealed)).toBe(2);
    expect(sealed.stderr.join('')).toMatch(/source = "sealed-file": give the enclave's public key with --key/);
  });
});

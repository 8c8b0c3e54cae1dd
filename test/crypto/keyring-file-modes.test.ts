// keys.json is trusted only where nobody else can read or replace it (issue 14, item 5): a group- or world-writable
// state directory, a key file with group/other access, or one owned by another user (or reached through a symlink
// to one) is refused with a typed error naming the path and the mode/owner, never the keys. Tests run as root, so
// "another user" is made with chown to uid 65534; the check compares with process.getuid().
import { chmod, chown, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { devKeySource, loadKeyring } from '../../src/crypto/keyring.ts';

const OTHER_UID = 65534;
const dirs: string[] = [];
async function stateDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ea-keymodes-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function refusal(dir: string): Promise<{ code: string; message: string }> {
  const err = (await loadKeyring(devKeySource(dir)).then(
    () => null,
    (e: unknown) => e,
  )) as { name: string; code: string; message: string } | null;
  expect(err?.name).toBe('KeyringError');
  return err!;
}

describe('devKeySource refuses state others could read or swap', () => {
  it('a group- or world-writable state directory, with keys.json in it or not', async () => {
    for (const mode of [0o777, 0o770, 0o1777, 0o702]) {
      const dir = await stateDir();
      await loadKeyring(devKeySource(dir));
      const keys = await readFile(join(dir, 'keys.json'), 'utf8');
      await chmod(dir, mode);
      const err = await refusal(dir);
      expect(err.code).toBe('KEYRING_INSECURE_DIR');
      expect(err.message).toBe(`state directory ${dir} is group- or world-writable (mode 0${(mode & 0o777).toString(8)}); expected 0700 or 0755 at most`);
      const { p256, secp256k1 } = JSON.parse(keys) as Record<string, string>;
      for (const hex of [p256!, secp256k1!]) expect(err.message).not.toContain(hex);

      // Without keys.json the agent would generate keys into that directory: refused as well, nothing written.
      await rm(join(dir, 'keys.json'));
      expect((await refusal(dir)).code).toBe('KEYRING_INSECURE_DIR');
      await expect(readFile(join(dir, 'keys.json'))).rejects.toMatchObject({ code: 'ENOENT' });
    }
  });

  it('a state directory owned by another user', async () => {
    const dir = await stateDir();
    await loadKeyring(devKeySource(dir));
    await chown(dir, OTHER_UID, OTHER_UID);
    const err = await refusal(dir);
    expect(err.code).toBe('KEYRING_INSECURE_DIR');
    expect(err.message).toBe(`state directory ${dir} is owned by uid ${OTHER_UID}, expected the agent's uid ${process.getuid!()}`);
  });

  it('a key file owned by another user, directly or through a symlink', async () => {
    const dir = await stateDir();
    await loadKeyring(devKeySource(dir));
    const file = join(dir, 'keys.json');
    await chown(file, OTHER_UID, OTHER_UID);
    const err = await refusal(dir);
    expect(err.code).toBe('KEYRING_INSECURE_FILE');
    expect(err.message).toBe(`key file ${file} is owned by uid ${OTHER_UID}, expected the agent's uid ${process.getuid!()}`);

    const elsewhere = await stateDir();
    const planted = join(elsewhere, 'planted.json');
    await writeFile(planted, JSON.stringify({ version: 1, p256: '11'.repeat(32), secp256k1: '22'.repeat(32) }), { mode: 0o600 });
    await chown(planted, OTHER_UID, OTHER_UID);
    const dir2 = await stateDir();
    await symlink(planted, join(dir2, 'keys.json'));
    expect((await refusal(dir2)).code).toBe('KEYRING_INSECURE_FILE');
  });

  it('a key file with any group or other access; 0600 and 0400 load', async () => {
    const dir = await stateDir();
    const first = await loadKeyring(devKeySource(dir));
    const file = join(dir, 'keys.json');
    for (const mode of [0o640, 0o604, 0o620, 0o602, 0o660]) {
      await chmod(file, mode);
      const err = await refusal(dir);
      expect([mode.toString(8), err.code]).toEqual([mode.toString(8), 'KEYRING_INSECURE_FILE']);
      expect(err.message).toContain(`(mode 0${mode.toString(8)}); expected 0600`);
    }
    for (const mode of [0o600, 0o400]) {
      await chmod(file, mode);
      expect((await loadKeyring(devKeySource(dir))).keyIds).toEqual(first.keyIds);
    }
  });

  it('a 0755 state directory is fine (what mkdir makes under umask 022)', async () => {
    const parent = await stateDir();
    const dir = join(parent, 'state');
    await mkdir(dir, { mode: 0o755 });
    await chmod(dir, 0o755);
    const a = await loadKeyring(devKeySource(dir));
    expect((await loadKeyring(devKeySource(dir))).keyIds).toEqual(a.keyIds);
  });
});

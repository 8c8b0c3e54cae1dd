import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { decryptToken, encryptValue } from '../../src/crypto/ev-format.ts';
import { KeyMaterial, Keyring, devKeySource, encryptedFileKeySource, loadKeyring, sealKeyMaterial, unsealKeyMaterial } from '../../src/crypto/keyring.ts';
import { toBase64, toHex } from '../../src/util/bytes.ts';

const dirs: string[] = [];
async function tmp(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ea-keyring-'));
  dirs.push(d);
  return d;
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('devKeySource', () => {
  it('generates keys once into keys.json with mode 0600 and reuses them after a restart', async () => {
    const dir = join(await tmp(), 'state');
    const first = await loadKeyring(devKeySource(dir));
    const st = await stat(join(dir, 'keys.json'));
    expect(st.mode & 0o777).toBe(0o600);
    expect((await stat(dir)).mode & 0o077).toBe(0);
    const token = encryptValue('persisted', first.publicKeys());
    const second = await loadKeyring(devKeySource(dir));
    expect(second.keyIds).toEqual(first.keyIds);
    expect(decryptToken(token, second)).toBe('persisted');
  });

  it('gives two concurrent first starts the same keys', async () => {
    const dir = await tmp();
    const [a, b] = await Promise.all([loadKeyring(devKeySource(dir)), loadKeyring(devKeySource(dir))]);
    expect(a.keyIds).toEqual(b.keyIds);
  });

  it('refuses a key file readable by others and a corrupt one, with typed errors', async () => {
    const dir = await tmp();
    await loadKeyring(devKeySource(dir));
    const file = join(dir, 'keys.json');
    await chmod(file, 0o644);
    await expect(loadKeyring(devKeySource(dir))).rejects.toMatchObject({ name: 'KeyringError', code: 'KEYRING_INSECURE_FILE' });
    await writeFile(file, '{"version":1}', { mode: 0o600 });
    await chmod(file, 0o600);
    await expect(loadKeyring(devKeySource(dir))).rejects.toMatchObject({ code: 'KEYRING_BAD_FILE' });
    await writeFile(file, JSON.stringify({ version: 1, p256: '00'.repeat(32), secp256k1: '11'.repeat(32) }));
    await expect(loadKeyring(devKeySource(dir))).rejects.toMatchObject({ code: 'KEYRING_BAD_KEY' });
  });
});

describe('encryptedFileKeySource', () => {
  it('round-trips a sealed blob and refuses a wrong unseal key or a tampered file', async () => {
    const dir = await tmp();
    const material = KeyMaterial.generate();
    const unsealKey = new Uint8Array(32).fill(7);
    const blob = sealKeyMaterial(material, unsealKey);
    expect(blob.length).toBe(97);
    expect(Buffer.from(blob.subarray(0, 5)).toString('latin1')).toBe('EAKS\x01');
    const file = join(dir, 'sealed.bin');
    await writeFile(file, blob);
    const kr = await loadKeyring(encryptedFileKeySource(file, unsealKey));
    expect(kr.keyIds).toEqual(Keyring.fromMaterial(material).keyIds);

    const wrong = new Uint8Array(32).fill(8);
    await expect(loadKeyring(encryptedFileKeySource(file, wrong))).rejects.toMatchObject({ name: 'KeyringError', code: 'KEYRING_UNSEAL_FAILED' });
    const tampered = Uint8Array.from(blob);
    tampered[40] = tampered[40]! ^ 1;
    expect(() => unsealKeyMaterial(tampered, unsealKey)).toThrow(expect.objectContaining({ code: 'KEYRING_UNSEAL_FAILED' }));
    expect(() => unsealKeyMaterial(blob.subarray(1), unsealKey)).toThrow(expect.objectContaining({ code: 'KEYRING_BAD_FILE' }));
    expect(() => encryptedFileKeySource(file, new Uint8Array(16))).toThrow(expect.objectContaining({ code: 'KEYRING_BAD_UNSEAL_KEY' }));
    await expect(loadKeyring(encryptedFileKeySource(join(dir, 'missing'), unsealKey))).rejects.toMatchObject({ code: 'KEYRING_IO' });
  });
});

describe('KeyMaterial.wipe', () => {
  it('zeroes what scalars() handed out copies of and leaves no generation', () => {
    const material = KeyMaterial.generate();
    const keyIds = Keyring.fromMaterial(material).keyIds;
    // A keyring built before the wipe has its own keys (the ECDH objects): it keeps working.
    const kr = Keyring.fromMaterial(material);
    material.wipe();
    expect(material.generations).toBe(0);
    expect(material.scalars()).toEqual([]);
    expect(() => material.privateKey('p256')).toThrow(expect.objectContaining({ code: 'KEYRING_BAD_KEY' }));
    expect(kr.keyIds).toEqual(keyIds);
  });
});

describe('Keyring', () => {
  const material = KeyMaterial.generate();
  const kr = Keyring.fromMaterial(material);
  const secrets = (['p256', 'secp256k1'] as const).flatMap((c) => [toHex(material.privateKey(c)), toBase64(material.privateKey(c))]);

  it('never shows private keys in JSON, util.inspect or string conversion', () => {
    const shown = [JSON.stringify(kr), JSON.stringify({ material }), inspect(kr, { depth: 10, showHidden: true }), inspect(material, { depth: 10, showHidden: true }), String(material), `${kr}`];
    for (const s of shown) for (const secret of secrets) expect(s).not.toContain(secret);
    expect(JSON.stringify({ material })).toContain('[redacted]');
    expect(inspect(kr)).toContain('[redacted]');
  });

  it('accepts scalars with leading zero bytes (generated keys are always 32 bytes)', () => {
    const scalar = (c: 'p256' | 'secp256k1'): Uint8Array => {
      const k = KeyMaterial.generate().privateKey(c);
      k[0] = 0;
      return k;
    };
    const m = new KeyMaterial({ p256: scalar('p256'), secp256k1: scalar('secp256k1') });
    const k = Keyring.fromMaterial(m);
    expect(decryptToken(encryptValue('z', k.publicKeys()), k)).toBe('z');
    for (let i = 0; i < 50; i++) expect(KeyMaterial.generate().privateKey('p256').length).toBe(32);
  });

  it('publishes compressed points, stable key ids and an 86-byte CBOR attestation key', () => {
    const pub = kr.publicKeys();
    expect(pub.p256.length).toBe(33);
    expect(pub.secp256k1.length).toBe(33);
    expect(kr.keyIds.p256).toMatch(/^[0-9a-f]{16}$/);
    const att = kr.attestationPublicKey();
    expect(att.length).toBe(86);
    const expected = Buffer.concat([
      Buffer.from([0xa2, 0x64]), Buffer.from('p256'), Buffer.from([0x58, 33]), pub.p256,
      Buffer.from([0x69]), Buffer.from('secp256k1'), Buffer.from([0x58, 33]), pub.secp256k1,
    ]);
    expect(Buffer.from(att).equals(expected)).toBe(true);
    // publicKeys() hands out copies
    pub.p256[1] = pub.p256[1]! ^ 0xff;
    expect(kr.publicKeys().p256[1]).not.toBe(pub.p256[1]);
  });

  it('stores the dev key file as {version, p256, secp256k1, createdAt}', async () => {
    const dir = await tmp();
    await loadKeyring(devKeySource(dir));
    const json = JSON.parse(await readFile(join(dir, 'keys.json'), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(json).sort()).toEqual(['createdAt', 'p256', 'secp256k1', 'version']);
  });
});

// The RSA private key KMS encrypts the data keys to (kms-attested.ts) is wiped when the decryptor closes, like the
// data keys it unwraps: it was a KeyObject, which no API can wipe, so it stayed in the heap until a garbage
// collection got round to it — with it, any CiphertextForRecipient still in memory reopens to its data key.
import type * as NodeCrypto from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

/** The `key` of every privateDecrypt call: what the envelope was opened with. */
const keysUsed: unknown[] = [];
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof NodeCrypto>();
  const privateDecrypt = ((key: Parameters<typeof real.privateDecrypt>[0], buffer: Parameters<typeof real.privateDecrypt>[1]) => {
    keysUsed.push((key as { key?: unknown }).key);
    return real.privateDecrypt(key, buffer);
  }) as typeof real.privateDecrypt;
  return { ...real, default: { ...real, privateDecrypt }, privateDecrypt };
});

const { createNsmSimulator, simulatorPcrs } = await import('../../src/attestation/simulator.ts');
const { kmsKeySource } = await import('../../src/crypto/kms-keyring.ts');
const { createAttestedKmsDecryptor } = await import('../../src/crypto/kms-attested.ts');
const { sealNewKeyring } = await import('../../src/crypto/kms-seal.ts');
const { KmsKeyringError } = await import('../../src/crypto/kms-errors.ts');
const { parseSealedKeyring } = await import('../../src/crypto/sealed-keyring.ts');
const { toHex } = await import('../../src/util/bytes.ts');
const { KmsTestServer, attestedPolicy } = await import('./kms-server.ts');

const credentials = { accessKeyId: 'AKIDKMSTESTSERVER01', secretAccessKey: 'kms-test-server-secret-not-a-real-key' };
const identity = { agentVersion: 'test', app: 'recipient-key-wiped', config: '' };
let dir: string;
let kms: Awaited<ReturnType<typeof KmsTestServer.start>>;
let nsm: Awaited<ReturnType<typeof createNsmSimulator>>;
let file: string;
let text: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'recipient-key-'));
  nsm = await createNsmSimulator({ stateDir: path.join(dir, 'nsm'), identity });
  kms = await KmsTestServer.start({ credentials, roots: [nsm.rootPem] });
  const pcrs = simulatorPcrs(identity);
  const keyId = kms.createKey(attestedPolicy({ PCR0: toHex(pcrs[0]), PCR1: toHex(pcrs[1]), PCR2: toHex(pcrs[2]) }));
  text = (await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials })).text;
  file = path.join(dir, 'keyring.sealed.json');
  writeFileSync(file, text);
});

afterAll(async () => {
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const options = () => ({ region: kms.region, endpoint: kms.endpoint, nsm, extraCa: [kms.caPem], credentials, backoffMs: 10 });
const wiped = (k: unknown): boolean => k instanceof Uint8Array && k.length > 1000 && k.every((b) => b === 0);

describe("the enclave's RSA recipient key", () => {
  it('is bytes, wiped once the keyring is open (the decryptor closed)', async () => {
    keysUsed.length = 0;
    await kmsKeySource({ file, ...options() }).load();
    expect(keysUsed).toHaveLength(1);
    expect(keysUsed.map((k) => (k instanceof Uint8Array ? 'bytes' : typeof k))).toEqual(['bytes']);
    expect(keysUsed.every(wiped)).toBe(true);
  });

  it('a closed decryptor refuses to Decrypt', async () => {
    keysUsed.length = 0;
    const gen = parseSealedKeyring(text).generations[0]!;
    const d = await createAttestedKmsDecryptor(options());
    const dataKey = await d.decrypt(gen.ciphertextBlob, 'key', gen.keyId);
    expect(dataKey).toHaveLength(32);
    dataKey.fill(0);
    expect(keysUsed.some(wiped)).toBe(false);
    d.close();
    expect(keysUsed.length > 0 && keysUsed.every(wiped)).toBe(true);
    const err = await d.decrypt(gen.ciphertextBlob, 'key', gen.keyId).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KmsKeyringError); // typed like every other KMS failure, not a plain Error
    expect(err).toMatchObject({ code: 'KMS_CLOSED', message: expect.stringMatching(/closed/) });
  });

  it('a decryptor closed while its Decrypt is under way refuses it with the same typed error', async () => {
    const gen = parseSealedKeyring(text).generations[0]!;
    const d = await createAttestedKmsDecryptor(options());
    const calls = kms.calls.length;
    const pending = d.decrypt(gen.ciphertextBlob, 'key', gen.keyId).catch((e: unknown) => e);
    d.close(); // the attestation document is still being made
    const err = await pending;
    expect(err).toBeInstanceOf(KmsKeyringError);
    expect(err).toMatchObject({ code: 'KMS_CLOSED' });
    expect(kms.calls.length).toBe(calls); // KMS was not asked to release a key nothing here can open any more
  });
});

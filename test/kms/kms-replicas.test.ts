// Replicas: local stacks whose [keyring] source = "kms" open the same sealed file through our KMS test server
// (via each stack's egress proxy, as inside an enclave) and share their ev: keys; a stack whose PCRs the key
// policy does not name fails at boot with AccessDenied.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, simulatorPcrs } from '../../src/attestation/simulator.ts';
import { chooseLocalApp, localIdentity, readConfigText } from '../../src/cli/pcrs.ts';
import { publicKeysBase64, type LocalStack } from '../../src/cli/start.ts';
import { sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { toBase64, toHex } from '../../src/util/bytes.ts';
import { KmsTestServer, attestedPolicy } from './kms-server.ts';
import { startKmsStack } from './local-stack.ts';

const credentials = { accessKeyId: 'AKIDKMSREPLICAS0001', secretAccessKey: 'kms-replicas-secret-not-a-real-key' };
let dir: string;
let kms: KmsTestServer;
const stacks: LocalStack[] = [];

function configText(name: string, sealed: string): string {
  return [
    `name = "${name}"`,
    '[keyring]',
    'source = "kms"',
    `file = "${sealed}"`,
    `region = "${kms.region}"`,
    `endpoint = "${kms.endpoint}"`,
    '[egress]',
    'enabled = true',
    `destinations = ["127.0.0.1:${kms.port}"]`,
    '',
  ].join('\n');
}

async function stack(configPath: string, stateDir: string): Promise<LocalStack> {
  const s = await startKmsStack(configPath, stateDir, kms, credentials);
  stacks.push(s);
  return s;
}

let sealedFile: string;
let sealedKeys: { p256: string; secp256k1: string };
let configA: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kms-replicas-'));
  // One simulated root for every stack, as every Nitro enclave chains to AWS's.
  const nsmDir = path.join(dir, 'nsm');
  const root = (await createNsmSimulator({ stateDir: nsmDir, identity: { agentVersion: 'x', app: 'x', config: '' } })).rootPem;
  kms = await KmsTestServer.start({ credentials, roots: [root] });
  sealedFile = path.join(dir, 'keyring.sealed.json');
  configA = path.join(dir, 'enclave.toml');
  writeFileSync(configA, configText('replica', sealedFile));
  // The policy names the PCRs of this image (config) running the demo app, as `enclave-agent pcrs` prints them.
  const pcrs = simulatorPcrs(localIdentity(readConfigText(configA), await chooseLocalApp(0)));
  const keyId = kms.createKey(attestedPolicy({ PCR0: toHex(pcrs[0]), PCR1: toHex(pcrs[1]), PCR2: toHex(pcrs[2]) }));
  const sealed = await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
  writeFileSync(sealedFile, sealed.text);
  sealedKeys = { p256: toBase64(sealed.publicKeys.p256), secp256k1: toBase64(sealed.publicKeys.secp256k1) };
  // Every replica's simulator signs under that root: copy its CA into each state dir.
  for (const r of ['a', 'b', 'c']) {
    cpSync(nsmDir, path.join(dir, r, 'nsm-simulator'), { recursive: true });
  }
}, 60_000);

afterAll(async () => {
  for (const s of stacks) {
    await s.bridge.close().catch(() => {});
    await s.tlsRelay?.close().catch(() => {});
    await s.runtime.close().catch(() => {});
    await s.egressDialer.close().catch(() => {});
    await s.demo?.close().catch(() => {});
  }
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('two replicas sharing a KMS-sealed keyring', () => {
  it('have the sealed public keys, and a value encrypted by one decrypts on the other', async () => {
    const a = await stack(configA, path.join(dir, 'a'));
    const b = await stack(configA, path.join(dir, 'b'));
    expect(publicKeysBase64(a)).toEqual(sealedKeys);
    expect(publicKeysBase64(b)).toEqual(sealedKeys);

    const enc = await fetch(`${a.apiUrl!}/encrypt`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ card: '4242 4242 4242 4242' }) });
    expect(enc.status).toBe(200);
    const sealedValue = (await enc.json()) as { card: string };
    expect(sealedValue.card).toMatch(/^ev:/);
    const dec = await fetch(`${b.apiUrl!}/decrypt`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(sealedValue) });
    expect(dec.status).toBe(200);
    expect(await dec.json()).toEqual({ card: '4242 4242 4242 4242' });
  }, 60_000);

  it('the local API cannot get KMS to release the key to an app-chosen public_key (it signs only a digest of it)', async () => {
    const a = stacks[0]!;
    const { generateKeyPairSync } = await import('node:crypto');
    const spki = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' });
    const res = await fetch(`${a.apiUrl!}/attestation-doc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ publicKey: spki.toString('base64') }) });
    expect(res.status).toBe(200);
    const doc = Buffer.from(await res.arrayBuffer());
    // Present it to KMS exactly as an attacker would, with the sealed file's CiphertextBlob.
    const { readFileSync } = await import('node:fs');
    const { DecryptCommand } = await import('@aws-sdk/client-kms');
    const { createKmsClient } = await import('../../src/crypto/kms-client.ts');
    const blob = Buffer.from((JSON.parse(readFileSync(sealedFile, 'utf8')) as { ciphertextBlob: string }).ciphertextBlob, 'base64');
    const c = createKmsClient({ region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
    try {
      const err = await c.client.send(new DecryptCommand({ CiphertextBlob: blob, Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: doc } })).catch((e: unknown) => e);
      expect(err).toMatchObject({ name: 'ValidationException', message: expect.stringContaining('RSA-2048') });
    } finally {
      c.close();
    }
  }, 30_000);

  it('a stack whose PCRs the policy does not name fails at boot with AccessDenied and its PCRs', async () => {
    const other = path.join(dir, 'other.toml');
    writeFileSync(other, configText('another-image', sealedFile)); // another config → another PCR measurement
    const err = await stack(other, path.join(dir, 'c')).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KMS_ACCESS_DENIED', message: expect.stringMatching(/AccessDeniedException.*PCR0=[0-9a-f]{96} PCR1=[0-9a-f]{96} PCR2=[0-9a-f]{96}/) });
  }, 60_000);
});

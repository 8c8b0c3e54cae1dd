// The credentials path end to end: the parent's instance-role credentials (a fake IMDSv2) → the bridge's
// credentials service → the agent's provider → the KMS keyring source → our KMS test server, which checks each
// request's SigV4 against the credentials IMDS issued last. Credentials rotate mid-run: the old ones are
// refused by KMS, and the agent opens the keyring again with the new ones after both caches refresh.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, simulatorPcrs, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { kmsKeySource } from '../../src/crypto/kms-keyring.ts';
import { sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { startCredentialsServer, type CredentialsServer } from '../../src/host/credentials-server.ts';
import { bridgeCredentialProvider } from '../../src/runtime/credentials-provider.ts';
import { toHex } from '../../src/util/bytes.ts';
import { attestedPolicy, KmsTestServer } from '../kms/kms-server.ts';
import { onlyImdsCredentials, startFakeImds, type FakeImds } from './fake-imds.ts';

const savedEnv = { ...process.env };
const identity = { agentVersion: 'test', app: 'kms-credentials-test', config: '' };
const operator = { accessKeyId: 'AKIDOPERATOR0000001', secretAccessKey: 'operator-secret-not-a-real-key' };
let mode: 'operator' | 'instance-role' = 'operator';
let dir: string;
let imds: FakeImds;
let nsm: NsmSimulator;
let kms: KmsTestServer;
let bridge: CredentialsServer;
let sealedFile: string;
let sealedKeys: { p256: Uint8Array; secp256k1: Uint8Array };

/** What the KMS test server accepts: the operator's keys while sealing, then the role credentials IMDS issued last. */
const accepted = {
  get accessKeyId(): string {
    return mode === 'operator' ? operator.accessKeyId : imds.issued.at(-1)!.AccessKeyId;
  },
  get secretAccessKey(): string {
    return mode === 'operator' ? operator.secretAccessKey : imds.issued.at(-1)!.SecretAccessKey;
  },
  get sessionToken(): string | undefined {
    return mode === 'operator' ? undefined : imds.issued.at(-1)!.Token;
  },
};

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-kms-creds-'));
  imds = await startFakeImds();
  onlyImdsCredentials(imds, dir);
  nsm = await createNsmSimulator({ stateDir: path.join(dir, 'nsm'), identity });
  kms = await KmsTestServer.start({ credentials: accepted, roots: [nsm.rootPem] });
  const pcrs = simulatorPcrs(identity);
  const keyId = kms.createKey(attestedPolicy({ PCR0: toHex(pcrs[0]), PCR1: toHex(pcrs[1]), PCR2: toHex(pcrs[2]) }));
  const sealed = await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials: operator });
  sealedFile = path.join(dir, 'keyring.sealed.json');
  writeFileSync(sealedFile, sealed.text);
  sealedKeys = sealed.publicKeys;
  mode = 'instance-role';
}, 60_000);

afterAll(async () => {
  await bridge?.close();
  await kms?.stop();
  await imds?.close();
  for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
  Object.assign(process.env, savedEnv);
  rmSync(dir, { recursive: true, force: true });
});

describe('KMS keyring with credentials from the bridge', () => {
  it('opens the keyring with the instance role credentials, and again after they rotate mid-run', async () => {
    let bridgeNow = Date.now();
    let agentNow = Date.now();
    bridge = await startCredentialsServer({ listen: { kind: 'tcp', port: 0 }, now: () => bridgeNow });
    const credentials = bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: bridge.port! }, now: () => agentNow });
    const sdkShaped: AwsCredentialIdentityProvider = credentials; // what KMSClient({ credentials }) takes
    const source = kmsKeySource({ file: sealedFile, region: kms.region, endpoint: kms.endpoint, nsm, extraCa: [kms.caPem], credentials: sdkShaped, attempts: 1 });

    expect(Keyring.fromMaterial(await source.load()).publicKeys()).toEqual(sealedKeys);
    expect(imds.counts.credentials).toBe(1);
    expect(credentials.fetches).toBe(1);
    const first = imds.issued[0]!;

    // Rotation: time passes on both sides past their refresh margins; IMDS now issues a new pair, and KMS
    // accepts only the newest.
    const exp = new Date(first.Expiration).getTime();
    bridgeNow = exp - 4 * 60_000;
    agentNow = exp - 60_000;
    expect(Keyring.fromMaterial(await source.load()).publicKeys()).toEqual(sealedKeys);
    expect(imds.counts.credentials).toBe(2);
    expect(credentials.fetches).toBe(2);
    expect(bridge.counters.served).toBe(2);
    expect(kms.calls.filter((c) => c.op === 'Decrypt').map((c) => c.status)).toEqual([200, 200]);

    // Not vacuous: the first pair no longer opens it.
    const stale = kmsKeySource({ file: sealedFile, region: kms.region, endpoint: kms.endpoint, nsm, extraCa: [kms.caPem], attempts: 1, credentials: { accessKeyId: first.AccessKeyId, secretAccessKey: first.SecretAccessKey, sessionToken: first.Token } });
    await expect(stale.load()).rejects.toThrow(/UnrecognizedClient/);
  }, 60_000);
});

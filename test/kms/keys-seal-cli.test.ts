// The operator's `keys seal` and `keys rotate` and an enclave's `start --json`, as real processes: AWS credentials from the
// environment (the standard chain), the test KMS's certificate trusted through NODE_EXTRA_CA_CERTS.
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, simulatorPcrs } from '../../src/attestation/simulator.ts';
import { chooseLocalApp, localIdentity, readConfigText } from '../../src/cli/pcrs.ts';
import { toHex } from '../../src/util/bytes.ts';
import { runBin, startBin, type Running } from '../cli/spawn.ts';
import { KmsTestServer, attestedPolicy } from './kms-server.ts';

const creds = { accessKeyId: 'AKIDKEYSSEALCLI0001', secretAccessKey: 'keys-seal-cli-secret-not-a-real-key' };
let dir: string;
let kms: KmsTestServer;
let env: NodeJS.ProcessEnv;
let running: Running | undefined;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'keys-seal-'));
  const nsmDir = path.join(dir, 'state', 'nsm-simulator');
  const root = (await createNsmSimulator({ stateDir: nsmDir, identity: { agentVersion: 'x', app: 'x', config: '' } })).rootPem;
  kms = await KmsTestServer.start({ credentials: creds, roots: [root] });
  writeFileSync(path.join(dir, 'kms-ca.pem'), kms.caPem);
  env = { NODE_EXTRA_CA_CERTS: path.join(dir, 'kms-ca.pem'), AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey, AWS_SESSION_TOKEN: '', AWS_PROFILE: '', AWS_CONFIG_FILE: path.join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'none'), AWS_EC2_METADATA_DISABLED: 'true' };
  cpSync(nsmDir, path.join(dir, 'nsm-copy'), { recursive: true });
}, 60_000);

afterAll(async () => {
  running?.child.kill('SIGKILL');
  await running?.exited;
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('keys seal → start --json', () => {
  it('refuses PCRs of a debug-mode enclave (all-zero PCR0) before calling KMS', async () => {
    const { command } = await import('../../src/cli/keys-seal.ts');
    const pcrsFile = path.join(dir, 'debug-pcrs.json');
    writeFileSync(pcrsFile, JSON.stringify({ PCR0: '0'.repeat(96), PCR1: '0'.repeat(96), PCR2: '0'.repeat(96) }));
    const before = kms.calls.length;
    const io = { out: () => {}, err: () => {}, stdin: () => Promise.resolve(new Uint8Array(0)) };
    await expect(command.run(['--kms-key-id', 'arn:aws:kms:eu-west-1:111122223333:key/x', '--region', 'eu-west-1', '--out', path.join(dir, 'never.json'), '--pcrs', pcrsFile], io)).rejects.toThrow(/PCR0 is all zero/);
    expect(kms.calls.length).toBe(before);
    expect(existsSync(path.join(dir, 'never.json'))).toBe(false);
  });

  it('seals, prints the policy with the PCRs, and start opens the file with the same public keys', async () => {
    const sealed = path.join(dir, 'keyring.sealed.json');
    const config = path.join(dir, 'enclave.toml');
    writeFileSync(config, ['[keyring]', 'source = "kms"', `file = "${sealed}"`, `region = "${kms.region}"`, `endpoint = "${kms.endpoint}"`, ''].join('\n'));
    const p = simulatorPcrs(localIdentity(readConfigText(config), await chooseLocalApp(0)));
    const pcrs = { PCR0: toHex(p[0]), PCR1: toHex(p[1]), PCR2: toHex(p[2]) };
    const pcrsFile = path.join(dir, 'pcrs.json');
    writeFileSync(pcrsFile, JSON.stringify(pcrs));
    const keyId = kms.createKey(attestedPolicy(pcrs));

    const r = await runBin(['keys', 'seal', '--kms-key-id', keyId, '--region', kms.region, '--endpoint', kms.endpoint, '--out', sealed, '--pcrs', pcrsFile, '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { publicKeys: { p256: string; secp256k1: string }; keyPolicy: { Statement: { Sid: string; Principal: { AWS: string }; Action: string[]; Condition?: Record<string, Record<string, string>> }[] } };
    const decrypt = out.keyPolicy.Statement.find((s) => s.Action.includes('kms:Decrypt'))!;
    expect(decrypt.Condition!.StringEqualsIgnoreCase).toEqual({ 'kms:RecipientAttestation:PCR0': pcrs.PCR0, 'kms:RecipientAttestation:PCR1': pcrs.PCR1, 'kms:RecipientAttestation:PCR2': pcrs.PCR2 });
    expect(out.keyPolicy.Statement.filter((s) => s.Action.includes('kms:Decrypt'))).toHaveLength(1);
    // The policy can be applied without AWS's lockout bypass and changed later (new PCRs): one named role may.
    const admin = out.keyPolicy.Statement.filter((s) => s.Action.includes('kms:PutKeyPolicy'));
    expect(admin.map((s) => s.Principal.AWS)).toEqual([expect.stringMatching(/^arn:aws:iam::\d{12}:role\/<KEY_POLICY_ADMIN_ROLE>$/)]);
    expect(admin[0]!.Action).not.toContain('kms:Decrypt');
    expect(JSON.parse(readFileSync(sealed, 'utf8'))).toMatchObject({ format: 'enclave-agent/sealed-keyring', version: 2, kms: { keyId, region: kms.region }, retired: [] });

    const again = await runBin(['keys', 'seal', '--kms-key-id', keyId, '--region', kms.region, '--endpoint', kms.endpoint, '--out', sealed], { env });
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('exists: refusing to replace');

    // keys rotate: start --json then shows the new pair as publicKeys and the sealed one as retiredPublicKeys.
    const rotatedFile = path.join(dir, 'keyring.rotated.json');
    const rot = await runBin(['keys', 'rotate', '--in', sealed, '--out', rotatedFile, '--endpoint', kms.endpoint, '--json'], { env });
    expect(rot.code, rot.stderr).toBe(0);
    const rotated = JSON.parse(rot.stdout) as { publicKeys: { p256: string; secp256k1: string } };
    cpSync(rotatedFile, sealed);

    const state = path.join(dir, 'state');
    running = startBin(['start', '--json', '--config', config, '--state-dir', state, '--bridge-port', '0', '--agent-port', '0', '--app-port', '0', '--api-port', '0', '--dashboard-port', '0', '--log-level', 'silent'], { env });
    const ready = JSON.parse(await running.firstLine(60_000)) as { publicKeys: { p256: string; secp256k1: string }; retiredPublicKeys: unknown };
    expect(ready.publicKeys).toEqual(rotated.publicKeys);
    expect(ready.retiredPublicKeys).toEqual([out.publicKeys]);
  }, 120_000);
});

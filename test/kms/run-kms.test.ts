// `enclave-agent run` with [keyring] source = "kms", as a real process against the test KMS, with its AWS
// credentials from the bridge's credentials port (as inside an enclave): the app starts only once the keyring opened; a policy naming other PCRs stops the boot with one line naming KMS's error code and
// this enclave's PCRs, before the app runs.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, simulatorPcrs } from '../../src/attestation/simulator.ts';
import { sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { startCredentialsServer, type CredentialsServer } from '../../src/host/credentials-server.ts';
import { AGENT_VERSION } from '../../src/runtime/nsm.ts';
import { toHex } from '../../src/util/bytes.ts';
import { runBin } from '../cli/spawn.ts';
import { KmsTestServer, attestedPolicy } from './kms-server.ts';

const creds = { accessKeyId: 'AKIDRUNKMSTEST00001', secretAccessKey: 'run-kms-test-secret-not-a-real-key' };
let dir: string;
let kms: KmsTestServer;
let env: Record<string, string>;
let rootDir: string;
let bridge: CredentialsServer;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'run-kms-'));
  rootDir = path.join(dir, 'root');
  const root = (await createNsmSimulator({ stateDir: rootDir, identity: { agentVersion: 'x', app: 'x', config: '' } })).rootPem;
  kms = await KmsTestServer.start({ credentials: creds, roots: [root] });
  writeFileSync(path.join(dir, 'kms-ca.pem'), kms.caPem);
  // `run` takes its credentials from the bridge only; the environment's chain is left empty on purpose.
  bridge = await startCredentialsServer({ listen: { kind: 'tcp', port: 0 }, source: () => Promise.resolve({ ...creds, expiration: new Date(Date.now() + 3_600_000) }) });
  env = { NODE_EXTRA_CA_CERTS: path.join(dir, 'kms-ca.pem'), AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: path.join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'none') };
}, 60_000);

afterAll(async () => {
  await kms?.stop();
  await bridge?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function runWith(name: string, policyFor: (pcrs: { PCR0: string; PCR1: string; PCR2: string }) => { PCR0: string; PCR1: string; PCR2: string }) {
  const d = path.join(dir, name);
  mkdirSync(d, { recursive: true });
  cpSync(rootDir, path.join(d, 'state', 'nsm-simulator'), { recursive: true });
  const sealed = path.join(d, 'keyring.sealed.json');
  const cfg = path.join(d, 'enclave.toml');
  writeFileSync(cfg, ['[api]', 'enabled = false', '[keyring]', 'source = "kms"', `file = "${sealed}"`, `region = "${kms.region}"`, `endpoint = "${kms.endpoint}"`, ''].join('\n'));
  const ran = path.join(d, 'app-ran');
  const app = ['sh', '-c', `touch ${ran}`];
  const p = simulatorPcrs({ agentVersion: AGENT_VERSION, app: app.join(' '), config: readFileSync(cfg) });
  const mine = { PCR0: toHex(p[0]), PCR1: toHex(p[1]), PCR2: toHex(p[2]) };
  const keyId = kms.createKey(attestedPolicy(policyFor(mine)));
  writeFileSync(sealed, (await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials: creds })).text);
  const r = await runBin(['run', '--config', cfg, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(d, 'state'), '--loopback', 'off', '--credentials-target', `tcp:127.0.0.1:${bridge.port}`, '--', ...app], { env, timeoutMs: 45_000 });
  return { ...r, appRan: existsSync(ran), mine };
}

describe('run with [keyring] source = "kms"', () => {
  it('opens the keyring through KMS and runs the app', async () => {
    const r = await runWith('allowed', (mine) => mine);
    expect(r.appRan, r.stderr).toBe(true);
    expect(r.stderr).not.toMatch(/KMS_|WARNING/);
  }, 60_000);

  it('a policy for other PCRs: one line with KMS_ACCESS_DENIED and this enclave\'s PCRs, exit 1, the app never runs', async () => {
    const r = await runWith('denied', (mine) => ({ ...mine, PCR0: 'ab'.repeat(48) }));
    expect(r.code).toBe(1);
    expect(r.appRan).toBe(false);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('enclave-agent run:'));
    expect(lines).toEqual([`enclave-agent run: KMS_ACCESS_DENIED: KMS Decrypt refused: AccessDeniedException for key ${lines[0]?.match(/key (arn:\S+);/)?.[1] ?? '?'}; compare the key policy's kms:RecipientAttestation conditions with this enclave's PCR0=${r.mine.PCR0} PCR1=${r.mine.PCR1} PCR2=${r.mine.PCR2}`]);
  }, 60_000);
});

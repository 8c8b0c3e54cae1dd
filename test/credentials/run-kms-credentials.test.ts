// `enclave-agent run` with [keyring] source = "kms" takes its AWS credentials from the bridge's credentials port
// (--credentials-target, TCP standing in for vsock:3:8002): the KMS test server accepts only the role
// credentials the bridge hands out, and the agent boots with the sealed keyring's keys.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { startCredentialsServer, type CredentialsServer } from '../../src/host/credentials-server.ts';
import { KmsTestServer } from '../kms/kms-server.ts';
import { startRun, type RunningAgent } from '../runtime/harness.ts';

const role = { accessKeyId: 'AKIDBRIDGEROLE00001', secretAccessKey: 'bridge-role-secret-not-a-real-key', sessionToken: 'bridge-role-session-token' };
let dir: string;
let kms: KmsTestServer;
let bridge: CredentialsServer;
let agent: RunningAgent | undefined;

afterAll(async () => {
  await agent?.dispose();
  if (agent) rmSync(agent.dir, { recursive: true, force: true });
  await bridge?.close();
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
});

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-run-kms-creds-'));
});

describe('run with the KMS keyring and bridge credentials', () => {
  it('boots with the sealed keyring, signing its KMS Decrypt with the credentials the bridge served', async () => {
    const state = path.join(dir, 'state');
    // The simulator CA run will use (it keeps the one in its state dir), so KMS can verify the documents.
    const ca = await createNsmSimulator({ stateDir: path.join(state, 'nsm-simulator'), identity: { agentVersion: 'x', app: 'x', config: '' } });
    kms = await KmsTestServer.start({ credentials: role, roots: [ca.rootPem] });
    // PCRs are covered by test/kms; here any attested Recipient may decrypt.
    const keyId = kms.createKey({ Statement: [{ Effect: 'Allow', Action: ['kms:GenerateDataKey', 'kms:Decrypt'], Resource: '*' }] });
    const sealed = await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials: role });
    const file = path.join(dir, 'keyring.sealed.json');
    writeFileSync(file, sealed.text);
    const caFile = path.join(dir, 'kms-ca.pem');
    writeFileSync(caFile, kms.caPem);
    let asked = 0;
    bridge = await startCredentialsServer({
      listen: { kind: 'tcp', port: 0 },
      source: () => {
        asked++;
        return Promise.resolve({ ...role, expiration: new Date(Date.now() + 3_600_000) });
      },
    });

    agent = await startRun({
      toml: `[keyring]\nsource = "kms"\nfile = "${file}"\nregion = "${kms.region}"\nendpoint = "${kms.endpoint}"\n`,
      args: ['--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', state, '--loopback', 'off', '--credentials-target', `tcp:127.0.0.1:${bridge.port}`],
      env: { NODE_EXTRA_CA_CERTS: caFile, AWS_ACCESS_KEY_ID: 'AKIDWRONGENVCHAIN01', AWS_SECRET_ACCESS_KEY: 'not-what-kms-accepts' },
    });
    const started = await agent.waitForLog('runtime started');
    expect(started.keyIds).toEqual(sealed.keyIds);
    await agent.waitForLog('agent healthy');
    expect(bridge.counters.served).toBeGreaterThanOrEqual(1);
    expect(asked).toBe(1);
    expect(kms.calls.filter((c) => c.op === 'Decrypt')).toEqual([{ op: 'Decrypt', status: 200 }]);
    expect(agent.stderr()).not.toMatch(/WARNING/); // the KMS keyring is the production one
    const everything = agent.lines.map((l) => JSON.stringify(l)).join('\n') + agent.stderr();
    for (const v of [role.secretAccessKey, role.sessionToken]) expect(everything).not.toContain(v);
  }, 90_000);
});

// A stop signal while `enclave-agent run` boots: the boot is held at the KMS keyring (the bridge's credentials
// port accepts and never answers), then SIGHUP (no app to forward it to) and SIGTERM arrive. The agent must
// neither die by the signal (Node's default action) nor start the app: it aborts the boot and exits 143.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { KmsTestServer } from '../kms/kms-server.ts';
import { settledLeftovers, startRun, until, type RunningAgent } from './harness.ts';

const role = { accessKeyId: 'AKIDBOOTSIGNAL00001', secretAccessKey: 'boot-signal-secret-not-a-real-key' };
const dir = mkdtempSync(path.join(os.tmpdir(), 'ea-boot-signal-'));
let kms: KmsTestServer | undefined;
let agent: RunningAgent | undefined;
const held: net.Socket[] = [];
const credentials = net.createServer((s) => held.push(s));

afterAll(async () => {
  await agent?.dispose();
  if (agent) rmSync(agent.dir, { recursive: true, force: true });
  for (const s of held) s.destroy();
  await new Promise((r) => credentials.close(r));
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
  expect(await settledLeftovers()).toEqual([]);
});

describe('run: a stop signal during boot', () => {
  it('aborts the boot held at the KMS keyring: no app started, exit 143, SIGHUP ignored before it', async () => {
    kms = await KmsTestServer.start({ credentials: role, roots: [] });
    const keyId = kms.createKey({ Statement: [{ Effect: 'Allow', Action: ['kms:GenerateDataKey', 'kms:Decrypt'], Resource: '*' }] });
    const sealed = await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials: role });
    const file = path.join(dir, 'keyring.sealed.json');
    writeFileSync(file, sealed.text);
    await new Promise<void>((r) => credentials.listen(0, '127.0.0.1', r));
    const port = (credentials.address() as net.AddressInfo).port;

    agent = await startRun({
      toml: `[keyring]\nsource = "kms"\nfile = "${file}"\nregion = "${kms.region}"\nendpoint = "${kms.endpoint}"\n`,
      args: ['--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(dir, 'state'), '--loopback', 'off', '--credentials-target', `tcp:127.0.0.1:${port}`],
    });
    // The boot waits on the credentials the bridge never sends.
    await until(() => (held.length > 0 ? true : undefined), 60_000, 'the agent asking for credentials');

    agent.kill('SIGHUP');
    agent.kill('SIGTERM');
    expect(await agent.exited).toEqual({ code: 143, signal: null });
    const aborted = agent.lines.find((l) => l.msg === 'stop signal during boot: not starting the app');
    expect(aborted?.signal).toBe('SIGTERM');
    expect(agent.lines.map((l) => l.msg)).not.toContain('runtime started');
    expect(agent.events()).toEqual([]); // the app never started
    expect(kms.calls.filter((c) => c.op === 'Decrypt')).toEqual([]);
  }, 90_000);
});

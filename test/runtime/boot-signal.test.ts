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
let late: RunningAgent | undefined;
const held: net.Socket[] = [];
const credentials = net.createServer((s) => held.push(s));

afterAll(async () => {
  for (const a of [agent, late]) {
    await a?.dispose();
    if (a) rmSync(a.dir, { recursive: true, force: true });
  }
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

  // The boot's handlers come off as the running agent's go on. Swapped the other way round, no listener was left
  // for a moment: Node closed the signal's handle, and a SIGTERM caught just then was dropped — the agent ran on
  // with its app (the bundle's workers = 2 test hung on it every time).
  it('a SIGTERM sent the moment "runtime started" is written still stops the agent', async () => {
    late = await startRun({ toml: '[limits]\nworkers = 2\n' });
    let sent = false;
    late.child.stdout!.on('data', (chunk: Buffer | string) => {
      if (!sent && String(chunk).includes('"runtime started"')) {
        sent = true;
        late!.kill('SIGTERM');
      }
    });
    const hung = new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000).unref());
    const result = await Promise.race([late.exited, hung]);
    expect(sent).toBe(true);
    expect(result).not.toBe('hung');
    expect(result === 'hung' ? null : result.signal).toBeNull();
  }, 60_000);
});

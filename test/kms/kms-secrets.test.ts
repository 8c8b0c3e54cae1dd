// KMS-sealed [secrets] (kms: values) against our KMS test server: `secrets seal NAME --kms-key-id` as a real
// process (GenerateDataKey only), and `enclave-agent run` opening them at boot with KMS Decrypt + Recipient
// (credentials from the bridge's port, as in an enclave): the app's environment gets the plaintext — with an ev:
// secret sealed for a key pair the keyring retired by `keys rotate` beside it — and the agent's log (trace),
// stderr, its own environment and its state files never do (the leak check of test/leaks/secret-markers, for
// these values). A key policy for other PCRs, a value moved to another variable and a config that cannot reach
// KMS each stop the boot naming the variable, never the value.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, simulatorPcrs } from '../../src/attestation/simulator.ts';
import { parseConfig } from '../../src/config.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { rotateSealedKeyring, sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { openKmsSecretValue, parseKmsSecretValue, sealKmsSecretValue } from '../../src/crypto/kms-secret-format.ts';
import { startCredentialsServer, type CredentialsServer } from '../../src/host/credentials-server.ts';
import { AGENT_VERSION } from '../../src/runtime/nsm.ts';
import { toHex } from '../../src/util/bytes.ts';
import { BIN, runBin } from '../cli/spawn.ts';
import { APP, appSecretsCopy, freePort, startRun, type RunningAgent } from '../runtime/harness.ts';
import { KmsTestServer, attestedPolicy, type KeyPolicy } from './kms-server.ts';

const creds = { accessKeyId: 'AKIDKMSSECRETSTEST1', secretAccessKey: 'kms-secrets-test-secret-not-a-real-key' };
const marker = (what: string) => `SECRET-MARKER-${what}-${randomBytes(6).toString('hex')}`;
/** Seals only (GenerateDataKey); Decrypt for PCRs no enclave has, until the test sets the real ones. */
const sealOnly: KeyPolicy = attestedPolicy({ PCR0: 'ab'.repeat(48), PCR1: 'ab'.repeat(48), PCR2: 'ab'.repeat(48) });

let dir: string;
let rootDir: string;
let kms: KmsTestServer;
let bridge: CredentialsServer;
let cliEnv: NodeJS.ProcessEnv;
let runEnv: Record<string, string>;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kms-secrets-'));
  rootDir = path.join(dir, 'root');
  const root = (await createNsmSimulator({ stateDir: rootDir, identity: { agentVersion: 'x', app: 'x', config: '' } })).rootPem;
  kms = await KmsTestServer.start({ credentials: creds, roots: [root] });
  writeFileSync(path.join(dir, 'kms-ca.pem'), kms.caPem);
  bridge = await startCredentialsServer({ listen: { kind: 'tcp', port: 0 }, source: () => Promise.resolve({ ...creds, expiration: new Date(Date.now() + 3_600_000) }) });
  const noChain = { AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: path.join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'none') };
  cliEnv = { NODE_EXTRA_CA_CERTS: path.join(dir, 'kms-ca.pem'), AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey, AWS_SESSION_TOKEN: '', AWS_PROFILE: '', ...noChain };
  // `run` takes its credentials from the bridge only.
  runEnv = { NODE_EXTRA_CA_CERTS: path.join(dir, 'kms-ca.pem'), ...noChain };
}, 60_000);

afterAll(async () => {
  await kms?.stop();
  await bridge?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** `enclave-agent secrets seal NAME …` as a process, the value on its standard input. */
function sealCli(args: string[], value: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'secrets', 'seal', ...args], { env: { ...process.env, ...cliEnv }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(value);
  });
}

function filesUnder(d: string): string[] {
  return readdirSync(d).flatMap((n) => {
    const p = path.join(d, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

describe('the kms: value', () => {
  it('opens with its data key under its own variable name only; altered or truncated values do not', () => {
    const dk = randomBytes(32);
    const v = sealKmsSecretValue('DB_PASSWORD', 'hunter2 ✓', dk, { keyId: 'arn:aws:kms:eu-west-1:111122223333:key/k', ciphertextBlob: randomBytes(150) });
    expect(v).toMatch(/^kms:[A-Za-z0-9+/]+=*$/);
    const p = parseKmsSecretValue(v)!;
    expect(p.keyId).toBe('arn:aws:kms:eu-west-1:111122223333:key/k');
    expect(openKmsSecretValue('DB_PASSWORD', p, dk)).toBe('hunter2 ✓');
    expect(openKmsSecretValue('DB_PASSWORD_2', p, dk)).toBeNull();
    expect(openKmsSecretValue('DB_PASSWORD', p, randomBytes(32))).toBeNull();
    const raw = Buffer.from(v.slice(4), 'base64');
    raw[raw.length - 20]! ^= 1;
    expect(openKmsSecretValue('DB_PASSWORD', parseKmsSecretValue(`kms:${raw.toString('base64')}`)!, dk)).toBeNull();
    for (const bad of ['kms:', 'kms:!!', `kms:${raw.subarray(0, 40).toString('base64')}`, `kms:${Buffer.concat([Buffer.of(2), raw.subarray(1)]).toString('base64')}`]) expect(parseKmsSecretValue(bad)).toBeNull();
  });

  it('config: needs [keyring] source = "kms" in the key\'s region; the error names the variable, never the value', () => {
    const v = sealKmsSecretValue('API_TOKEN', 'x', randomBytes(32), { keyId: 'arn:aws:kms:eu-west-1:111122223333:key/k', ciphertextBlob: randomBytes(100) });
    expect(() => parseConfig(`[secrets]\nAPI_TOKEN = "${v}"\n`)).toThrow(/secrets\.API_TOKEN: a KMS-sealed value needs \[keyring\] source = "kms"/);
    const kmsRing = (region: string) => `[keyring]\nsource = "kms"\nfile = "k.json"\nregion = "${region}"\n[secrets]\nAPI_TOKEN = "${v}"\n`;
    expect(() => parseConfig(kmsRing('us-east-1'))).toThrow(/secrets\.API_TOKEN: sealed under a KMS key in eu-west-1; \[keyring\] region is us-east-1/);
    expect(parseConfig(kmsRing('eu-west-1')).secrets).toEqual({ API_TOKEN: v });
    try {
      parseConfig(kmsRing('us-east-1'));
    } catch (err) {
      expect(String((err as Error).message)).not.toContain(v.slice(4, 40));
    }
  });
});

describe('secrets seal --kms-key-id', () => {
  it('seals with GenerateDataKey only and prints the value and the [secrets] line; refuses ev: flags and another region', async () => {
    const keyId = kms.createKey(sealOnly);
    const secret = marker('cli');
    const calls = kms.calls.length;
    const r = await sealCli(['API_TOKEN', '--kms-key-id', keyId, '--region', kms.region, '--endpoint', kms.endpoint], `${secret}\n`);
    expect(r.code, r.stderr).toBe(0);
    const [value, line] = r.stdout.trim().split('\n');
    expect(value).toMatch(/^kms:/);
    expect(line).toBe(`API_TOKEN = "${value}"`);
    expect(r.stdout + r.stderr).not.toContain(secret);
    expect(kms.calls.slice(calls).map((c) => c.op)).toEqual(['GenerateDataKey']);
    expect(parseKmsSecretValue(value!)!.keyId).toBe(keyId);

    expect((await sealCli(['API_TOKEN', '--kms-key-id', keyId, '--region', kms.region, '--key', 'AAAA'], 'x')).stderr).toContain('--key is for ev: values');
    expect((await sealCli(['API_TOKEN', '--kms-key-id', keyId, '--region', 'us-east-1'], 'x')).stderr).toContain(`--kms-key-id is a key in ${kms.region}, --region is us-east-1`);
  }, 60_000);
});

describe('run with KMS-sealed [secrets]', () => {
  let agent: RunningAgent | undefined;
  afterAll(async () => {
    await agent?.dispose();
  });

  /** A KMS keyring rotated once (pair A retired, B current), its key's policy set once the config is final. */
  async function setup(name: string, secretsToml: (ring: { retiredP256: Uint8Array }) => Promise<string>, app: string[]) {
    const d = path.join(dir, name);
    mkdirSync(d, { recursive: true });
    cpSync(rootDir, path.join(d, 'state', 'nsm-simulator'), { recursive: true });
    const ringKey = kms.createKey(sealOnly);
    const first = await sealNewKeyring({ keyId: ringKey, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials: creds });
    const rotated = await rotateSealedKeyring({ previous: first.text, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials: creds });
    const sealed = path.join(d, 'keyring.sealed.json');
    writeFileSync(sealed, rotated.text);
    const appPort = await freePort();
    const cfg = path.join(d, 'enclave.toml');
    const toml = await secretsToml({ retiredP256: first.publicKeys.p256 });
    writeFileSync(cfg, [`[app]\nport = ${appPort}`, '[api]\nenabled = false', '[log]\nlevel = "trace"', `[keyring]\nsource = "kms"\nfile = "${sealed}"\nregion = "${kms.region}"\nendpoint = "${kms.endpoint}"`, toml, ''].join('\n'));
    const p = simulatorPcrs({ agentVersion: AGENT_VERSION, app: app.join(' '), config: readFileSync(cfg) });
    const mine = { PCR0: toHex(p[0]), PCR1: toHex(p[1]), PCR2: toHex(p[2]) };
    kms.setPolicy(ringKey, attestedPolicy(mine));
    const args = ['--config', cfg, '--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', path.join(d, 'state'), '--loopback', 'off', '--credentials-target', `tcp:127.0.0.1:${bridge.port}`];
    return { d, cfg, args, appPort, mine, state: path.join(d, 'state') };
  }

  it("opens them at boot into the app's environment only: not the log (trace), stderr, the agent's environment or its files", async () => {
    const s1 = marker('kms-secret');
    const s2 = marker('ev-secret-retired-key');
    const secretKey = kms.createKey(sealOnly);
    const app = ['sh', '-c', 'printf "%s\\n%s" "$DB_PASSWORD" "$OLD_EV" > "$APP_EVENTS.secret"; exec "$0" "$1"', process.execPath, APP];
    const s = await setup(
      'allowed',
      async (ring) => {
        const r = await sealCli(['DB_PASSWORD', '--kms-key-id', secretKey, '--region', kms.region, '--endpoint', kms.endpoint], s1);
        expect(r.code, r.stderr).toBe(0);
        return `[secrets]\n${r.stdout.trim().split('\n')[1]}\nOLD_EV = "${encryptValue(s2, ring.retiredP256)}"`;
      },
      app,
    );
    kms.setPolicy(secretKey, attestedPolicy(s.mine));
    const decrypts = kms.calls.filter((c) => c.op === 'Decrypt' && c.status === 200).length;
    agent = await startRun({ args: s.args, command: app, env: { ...runEnv, APP_PORT: String(s.appPort) } });
    await agent.waitForLog('agent healthy', 45_000);
    expect(agent.lines.find((l) => l.msg === 'secrets decrypted for the app')).toMatchObject({ secrets: ['DB_PASSWORD', 'OLD_EV'] });
    // Two keyring generations and one secret: three attested Decrypts.
    expect(kms.calls.filter((c) => c.op === 'Decrypt' && c.status === 200).length - decrypts).toBe(3);
    const got = await appSecretsCopy(agent);
    expect(got).toBe(`${s1}\n${s2}`);
    const environ = readFileSync(`/proc/${agent.pid}/environ`, 'latin1');
    agent.kill('SIGTERM');
    await agent.exited;

    const sources = new Map<string, string>([
      ['run log lines (stdout, trace level)', agent.lines.map((l) => JSON.stringify(l)).join('\n')],
      ['run stderr', agent.stderr()],
      ["the agent's own environment", environ],
    ]);
    for (const f of filesUnder(s.state)) sources.set(`file ${path.relative(s.state, f)}`, readFileSync(f).toString('latin1'));
    expect([...sources.keys()].some((k) => k.startsWith('file '))).toBe(true);
    expect(sources.get('run log lines (stdout, trace level)')).toContain('secrets decrypted for the app');
    const found: string[] = [];
    for (const [where, text] of sources) for (const m of [s1, s2]) if (text.includes(m)) found.push(`${m === s1 ? 'kms: secret' : 'ev: secret'} found in ${where}`);
    expect(found).toEqual([]);
  }, 120_000);

  it('a key policy for other PCRs: the boot stops with KMS_ACCESS_DENIED naming the variable and this enclave\'s PCRs, never the value', async () => {
    const secret = marker('denied');
    const secretKey = kms.createKey(sealOnly); // its policy stays for other PCRs
    const app = ['sh', '-c', `touch ${path.join(dir, 'denied-app-ran')}`];
    const s = await setup(
      'denied',
      async () => {
        const r = await sealCli(['API_TOKEN', '--kms-key-id', secretKey, '--region', kms.region, '--endpoint', kms.endpoint], secret);
        return `[secrets]\n${r.stdout.trim().split('\n')[1]}`;
      },
      app,
    );
    const r = await runBin(['run', ...s.args, '--', ...app], { env: runEnv, timeoutMs: 45_000 });
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('enclave-agent run:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('SECRET_DOES_NOT_DECRYPT: secrets.API_TOKEN: KMS did not release its data key: KMS_ACCESS_DENIED: KMS Decrypt refused: AccessDeniedException');
    expect(lines[0]).toContain(`PCR0=${s.mine.PCR0} PCR1=${s.mine.PCR1} PCR2=${s.mine.PCR2}`);
    expect(r.stdout + r.stderr).not.toContain(secret);
    expect(() => statSync(path.join(dir, 'denied-app-ran'))).toThrow();
  }, 90_000);

  it('a value moved to another variable does not open: the boot stops naming that variable', async () => {
    const secret = marker('moved');
    const secretKey = kms.createKey(sealOnly);
    const app = ['sh', '-c', `touch ${path.join(dir, 'moved-app-ran')}`];
    const s = await setup(
      'moved',
      async () => {
        const r = await sealCli(['DB_PASSWORD', '--kms-key-id', secretKey, '--region', kms.region, '--endpoint', kms.endpoint], secret);
        return `[secrets]\nLOGGED_VALUE = "${r.stdout.trim().split('\n')[0]}"`;
      },
      app,
    );
    kms.setPolicy(secretKey, attestedPolicy(s.mine));
    const r = await runBin(['run', ...s.args, '--', ...app], { env: runEnv, timeoutMs: 45_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/enclave-agent run: SECRET_DOES_NOT_DECRYPT: secrets\.LOGGED_VALUE: does not open with the data key KMS released/);
    expect(r.stdout + r.stderr).not.toContain(secret);
    expect(() => statSync(path.join(dir, 'moved-app-ran'))).toThrow();
  }, 90_000);
});

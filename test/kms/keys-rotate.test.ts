// `keys rotate` against our KMS test server, and local stacks opening the files: a version-1 file (as `keys seal`
// wrote before version 2) still loads; after rotation the stack publishes the new pair, keeps the old ones for
// decryption (/decrypt and HTTP mode's automatic decryption through the attested channel), and /encrypt uses the
// new pair; the operator's rotation calls GenerateDataKey only, never Decrypt; a tampered rotated file refuses
// to load.
import { createCipheriv, randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, simulatorPcrs } from '../../src/attestation/simulator.ts';
import { connect } from '../../src/client/node.ts';
import { chooseLocalApp, localIdentity, readConfigText } from '../../src/cli/pcrs.ts';
import { publicKeysBase64, retiredPublicKeysBase64, type LocalStack } from '../../src/cli/start.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { KeyMaterial, Keyring } from '../../src/crypto/keyring.ts';
import { generateDataKey, rotateSealedKeyring } from '../../src/crypto/kms-seal.ts';
import { fromBase64, toBase64, toHex } from '../../src/util/bytes.ts';
import { runBin } from '../cli/spawn.ts';
import { KmsTestServer, attestedPolicy } from './kms-server.ts';
import { startKmsStack } from './local-stack.ts';

const credentials = { accessKeyId: 'AKIDKEYSROTATETEST01', secretAccessKey: 'keys-rotate-secret-not-a-real-key' };
let dir: string;
let kms: KmsTestServer;
let keyId: string;
let config: string;
let sealedPath: string;
let env: NodeJS.ProcessEnv;
const stacks: LocalStack[] = [];

/** A version-1 sealed keyring, written from the format's description (independent of the current writer). */
async function writeVersion1(file: string): Promise<{ p256: string; secp256k1: string }> {
  const dk = await generateDataKey({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
  const material = KeyMaterial.generate();
  const pub = Keyring.fromMaterial(material).publicKeys();
  const publicKeys = { p256: toBase64(pub.p256), secp256k1: toBase64(pub.secp256k1) };
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', dk.plaintext, iv);
  c.setAAD(Buffer.from(JSON.stringify(['enclave-agent/sealed-keyring', 1, dk.keyId, kms.region, toBase64(dk.ciphertextBlob), publicKeys.p256, publicKeys.secp256k1])));
  const ct = Buffer.concat([c.update(material.privateKey('p256')), c.update(material.privateKey('secp256k1')), c.final(), c.getAuthTag()]);
  writeFileSync(file, JSON.stringify({ format: 'enclave-agent/sealed-keyring', version: 1, kms: { keyId: dk.keyId, region: kms.region }, ciphertextBlob: toBase64(dk.ciphertextBlob), publicKeys, iv: iv.toString('base64'), keyring: ct.toString('base64') }));
  return publicKeys;
}

async function stack(name: string): Promise<LocalStack> {
  cpSync(path.join(dir, 'nsm'), path.join(dir, name, 'nsm-simulator'), { recursive: true });
  const s = await startKmsStack(config, path.join(dir, name), kms, credentials);
  stacks.push(s);
  return s;
}

async function closeStack(s: LocalStack): Promise<void> {
  await s.bridge.close().catch(() => {});
  await s.tlsRelay?.close().catch(() => {});
  await s.runtime.close().catch(() => {});
  await s.egressDialer.close().catch(() => {});
  await s.demo?.close().catch(() => {});
}

async function api(s: LocalStack, route: string, body: unknown, query = ''): Promise<{ status: number; json: unknown }> {
  const r = await fetch(`${s.apiUrl!}${route}${query}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: await r.json() };
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'keys-rotate-'));
  const root = (await createNsmSimulator({ stateDir: path.join(dir, 'nsm'), identity: { agentVersion: 'x', app: 'x', config: '' } })).rootPem;
  kms = await KmsTestServer.start({ credentials, roots: [root] });
  writeFileSync(path.join(dir, 'kms-ca.pem'), kms.caPem);
  env = { NODE_EXTRA_CA_CERTS: path.join(dir, 'kms-ca.pem'), AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey, AWS_SESSION_TOKEN: '', AWS_PROFILE: '', AWS_CONFIG_FILE: path.join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'none'), AWS_EC2_METADATA_DISABLED: 'true' };
  sealedPath = path.join(dir, 'keyring.sealed.json');
  config = path.join(dir, 'enclave.toml');
  writeFileSync(config, ['name = "rotate"', '[keyring]', 'source = "kms"', `file = "${sealedPath}"`, `region = "${kms.region}"`, `endpoint = "${kms.endpoint}"`, '[egress]', 'enabled = true', `destinations = ["127.0.0.1:${kms.port}"]`, ''].join('\n'));
  const p = simulatorPcrs(localIdentity(readConfigText(config), await chooseLocalApp(0)));
  keyId = kms.createKey(attestedPolicy({ PCR0: toHex(p[0]), PCR1: toHex(p[1]), PCR2: toHex(p[2]) }));
}, 60_000);

afterAll(async () => {
  for (const s of stacks) await closeStack(s);
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('keys rotate', () => {
  let keysA: { p256: string; secp256k1: string };
  let keysB: { p256: string; secp256k1: string };
  let keysC: { p256: string; secp256k1: string };
  const before: Record<string, string> = {};

  it('a version-1 file still loads; values are encrypted to its keys', async () => {
    const v1 = path.join(dir, 'v1.json');
    keysA = await writeVersion1(v1);
    cpSync(v1, sealedPath);
    const a = await stack('a');
    expect(publicKeysBase64(a)).toEqual(keysA);
    expect(retiredPublicKeysBase64(a)).toEqual([]);
    const p = await api(a, '/encrypt', { card: '4242 4242 4242 4242', n: 17 });
    const k = await api(a, '/encrypt', { pin: '1234' }, '?curve=secp256k1');
    Object.assign(before, p.json, k.json);
    expect(Object.values(before).every((v) => v.startsWith('ev:'))).toBe(true);
    await closeStack(a);
  }, 60_000);

  it('the CLI rotates with GenerateDataKey only (no Decrypt), keeps the old pair and refuses to overwrite', async () => {
    const calls = kms.calls.length;
    const out = path.join(dir, 'v2.json');
    const r = await runBin(['keys', 'rotate', '--in', sealedPath, '--out', out, '--endpoint', kms.endpoint, '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { publicKeys: typeof keysA; retiredPublicKeys: (typeof keysA)[]; keyId: string; dropped: unknown };
    expect(j.retiredPublicKeys).toEqual([keysA]);
    expect(j.publicKeys).not.toEqual(keysA);
    expect(j).toMatchObject({ keyId, dropped: null });
    keysB = j.publicKeys;
    expect(kms.calls.slice(calls).map((c) => `${c.op} ${c.status}`)).toEqual(['GenerateDataKey 200']);
    const file = JSON.parse(readFileSync(out, 'utf8')) as { version: number; publicKeys: typeof keysA; retired: { version: number; publicKeys: typeof keysA }[] };
    expect(file).toMatchObject({ version: 2, publicKeys: keysB, retired: [{ version: 1, publicKeys: keysA }] });

    const again = await runBin(['keys', 'rotate', '--in', sealedPath, '--out', out, '--endpoint', kms.endpoint], { env });
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('exists: refusing to replace');
    cpSync(out, sealedPath);
  }, 60_000);

  it('a stack on the twice-rotated file publishes the newest pair, decrypts values of every pair, and encrypts to the newest', async () => {
    const rotated = await rotateSealedKeyring({ previous: readFileSync(sealedPath, 'utf8'), endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
    keysC = { p256: toBase64(rotated.publicKeys.p256), secp256k1: toBase64(rotated.publicKeys.secp256k1) };
    writeFileSync(sealedPath, rotated.text);
    const decryptsBefore = kms.calls.filter((c) => c.op === 'Decrypt' && c.status === 200).length;
    const c = await stack('c');
    expect(kms.calls.filter((x) => x.op === 'Decrypt' && x.status === 200).length - decryptsBefore).toBe(3); // one data key per generation
    expect(publicKeysBase64(c)).toEqual(keysC);
    expect(retiredPublicKeysBase64(c)).toEqual([keysB, keysA]);

    // Values made before rotation, and values a client made for the middle pair, through /decrypt.
    const forB = encryptValue('made for B', fromBase64(keysB.secp256k1), { curve: 'secp256k1', role: 'pay' });
    const d = await api(c, '/decrypt', { ...before, forB });
    expect(d).toEqual({ status: 200, json: { card: '4242 4242 4242 4242', n: 17, pin: '1234', forB: 'made for B' } });

    // HTTP mode's automatic decryption, through the bridge and the attested channel to the demo app.
    const client = await connect(c.bridgeUrl, { pcrs: c.pcrs, roots: [readFileSync(c.rootPem, 'utf8')] });
    try {
      const res = await client.fetch('/echo', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ card: before.card, forB }) });
      expect(res.status).toBe(200);
      const echo = (await res.json()) as { body: string };
      expect(JSON.parse(echo.body)).toEqual({ card: '4242 4242 4242 4242', forB: 'made for B' });
    } finally {
      await client.close();
    }

    // New values: made for the newest pair, so a stack holding only the old pairs cannot open them.
    const fresh = (await api(c, '/encrypt', { v: 'after rotation' })).json as { v: string };
    expect((await api(c, '/decrypt', fresh)).json).toEqual({ v: 'after rotation' });
    cpSync(path.join(dir, 'v2.json'), sealedPath);
    const b = await stack('b');
    expect(publicKeysBase64(b)).toEqual(keysB);
    expect((await api(b, '/decrypt', { card: before.card })).json).toEqual({ card: '4242 4242 4242 4242' });
    expect((await api(b, '/decrypt', fresh)).status).toBe(422);
    await closeStack(b);
    writeFileSync(sealedPath, rotated.text);
  }, 90_000);

  it('a full keyring (4 pairs) rotates only with --drop-oldest, which drops the oldest pair', async () => {
    const three = readFileSync(sealedPath, 'utf8');
    const four = await rotateSealedKeyring({ previous: three, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
    const calls = kms.calls.length;
    await expect(rotateSealedKeyring({ previous: four.text, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials })).rejects.toMatchObject({ code: 'KMS_BAD_SEALED_FILE', message: expect.stringContaining('--drop-oldest') });
    expect(kms.calls.length).toBe(calls); // refused before asking KMS
    await expect(rotateSealedKeyring({ previous: three, keyId: 'arn:aws:kms:us-east-1:111122223333:key/x', endpoint: kms.endpoint, extraCa: [kms.caPem], credentials })).rejects.toMatchObject({ code: 'KMS_BAD_SEALED_FILE', message: expect.stringContaining('in us-east-1') });
    expect(kms.calls.length).toBe(calls);
    const five = await rotateSealedKeyring({ previous: four.text, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials, dropOldest: true });
    expect(five.dropped?.publicKeys.p256).toEqual(fromBase64(keysA.p256));
    expect(five.retired.map((k) => toBase64(k.p256))).toEqual([toBase64(four.publicKeys.p256), keysC.p256, keysB.p256]);
  }, 30_000);

  it('a tampered rotated file refuses to load: an edited, dropped or reordered retired pair, an edited current pair', async () => {
    const good = JSON.parse(readFileSync(sealedPath, 'utf8')) as Record<string, unknown> & { retired: Record<string, unknown>[]; keyring: string };
    const flip = (b64: string) => {
      const b = Buffer.from(b64, 'base64');
      b[3]! ^= 1;
      return b.toString('base64');
    };
    const variants: [string, object][] = [
      ['retired keyring byte', { ...good, retired: [{ ...good.retired[0]!, keyring: flip(good.retired[0]!.keyring as string) }, good.retired[1]!] }],
      ['retired pair dropped', { ...good, retired: [good.retired[0]!] }],
      ['retired pairs reordered', { ...good, retired: [good.retired[1]!, good.retired[0]!] }],
      ['retired createdAt', { ...good, retired: [{ ...good.retired[0]!, createdAt: '2020-01-01T00:00:00.000Z' }, good.retired[1]!] }],
      ['current keyring byte', { ...good, keyring: flip(good.keyring) }],
      ['current createdAt', { ...good, createdAt: '2020-01-01T00:00:00.000Z' }],
    ];
    for (const [what, body] of variants) {
      writeFileSync(sealedPath, JSON.stringify(body));
      const err = await stack(`t-${what.replaceAll(' ', '-')}`).catch((e: unknown) => e);
      expect(err, what).toMatchObject({ code: 'KMS_BAD_SEALED_FILE' });
      expect(String((err as Error).message), what).not.toMatch(/[0-9a-f]{64}/);
    }
    // Every field of a retired pair is under the current pair's chain, its own chain field included.
    const retiredOnly = { ...good, retired: [{ ...good.retired[0]!, chain: 'f'.repeat(64) }, good.retired[1]!] };
    writeFileSync(sealedPath, JSON.stringify(retiredOnly));
    await expect(stack('t-chain')).rejects.toMatchObject({ code: 'KMS_BAD_SEALED_FILE' });
    writeFileSync(sealedPath, JSON.stringify(good));
  }, 120_000);
});

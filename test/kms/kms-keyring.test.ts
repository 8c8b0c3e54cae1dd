// [keyring] source = "kms" against our own KMS (test/kms/kms-server.ts): sealed by the operator path,
// opened by the enclave path with an attested Recipient, over real TLS, directly and through the egress proxy.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createNsmSimulator, simulatorPcrs, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { kmsKeySource } from '../../src/crypto/kms-keyring.ts';
import { CredentialsError } from '../../src/host/credentials-errors.ts';
import { sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { toHex } from '../../src/util/bytes.ts';
import { startStack, startTestDns, type Stack, type TestDns } from '../egress/helpers.ts';
import { KmsTestServer, attestedPolicy } from './kms-server.ts';

const credentials = { accessKeyId: 'AKIDKMSTESTSERVER01', secretAccessKey: 'kms-test-server-secret-not-a-real-key' };
const identity = { agentVersion: 'test', app: 'kms-keyring-test', config: '' };
const pcrs = simulatorPcrs(identity);
const allowed = { PCR0: toHex(pcrs[0]).toUpperCase(), PCR1: toHex(pcrs[1]), PCR2: toHex(pcrs[2]) }; // IgnoreCase

let dir: string;
let nsm: NsmSimulator;
let kms: KmsTestServer;
let keyId: string;
let sealedFile: string;
let sealedKeys: { p256: Uint8Array; secp256k1: Uint8Array };

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kms-keyring-'));
  nsm = await createNsmSimulator({ stateDir: path.join(dir, 'nsm'), identity });
  kms = await KmsTestServer.start({ credentials, roots: [nsm.rootPem] });
  keyId = kms.createKey(attestedPolicy(allowed));
  const sealed = await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
  sealedFile = path.join(dir, 'keyring.sealed.json');
  writeFileSync(sealedFile, sealed.text);
  sealedKeys = sealed.publicKeys;
});

afterAll(async () => {
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const source = (over: Partial<Parameters<typeof kmsKeySource>[0]> = {}) =>
  kmsKeySource({ file: sealedFile, region: kms.region, endpoint: kms.endpoint, nsm, extraCa: [kms.caPem], credentials, backoffMs: 10, ...over });

describe('KMS keyring source', () => {
  it('the sealed file holds the public keys but nothing that opens without KMS', () => {
    const text = readFileSync(sealedFile, 'utf8');
    const j = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(j).sort()).toEqual(['chain', 'ciphertextBlob', 'createdAt', 'format', 'iv', 'keyring', 'kms', 'publicKeys', 'retired', 'version']);
    expect(j).toMatchObject({ version: 2, retired: [] });
    expect(j.kms).toEqual({ keyId, region: kms.region });
  });

  it('opens the keyring sealed by the operator: same public keys, twice (replicas)', async () => {
    const a = Keyring.fromMaterial(await source().load());
    const b = Keyring.fromMaterial(await source().load());
    expect(a.publicKeys()).toEqual(sealedKeys);
    expect(b.publicKeys()).toEqual(sealedKeys);
    const decrypts = kms.calls.filter((c) => c.op === 'Decrypt' && c.status === 200);
    expect(decrypts.length).toBeGreaterThanOrEqual(2);
  });

  it('AccessDenied when the policy names other PCRs: the error names the code and this enclave\'s PCRs', async () => {
    const other = kms.createKey(attestedPolicy({ ...allowed, PCR2: 'ab'.repeat(48) }));
    const sealed = await sealNewKeyring({ keyId: other, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
    const file = path.join(dir, 'other.sealed.json');
    writeFileSync(file, sealed.text);
    const err = await source({ file }).load().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KMS_ACCESS_DENIED' });
    expect(String((err as Error).message)).toContain('AccessDeniedException');
    expect(String((err as Error).message)).toContain(`PCR2=${toHex(pcrs[2])}`);
    expect(kms.calls.filter((c) => c.error === 'AccessDeniedException').length).toBe(1); // not retried
  });

  it('a stale attestation document is refused by KMS (ValidationException), not retried', async () => {
    const old = await createNsmSimulator({ stateDir: path.join(dir, 'nsm'), identity, now: () => Date.now() - 10 * 60_000 });
    const before = kms.calls.length;
    await expect(source({ nsm: old }).load()).rejects.toMatchObject({ code: 'KMS_REQUEST_FAILED', message: expect.stringContaining('ValidationException') });
    expect(kms.calls.length - before).toBe(1);
  });

  it('a document from another root is refused', async () => {
    const stranger = await createNsmSimulator({ stateDir: path.join(dir, 'nsm-other'), identity });
    await expect(source({ nsm: stranger }).load()).rejects.toMatchObject({ code: 'KMS_REQUEST_FAILED' });
  });

  it('a tampered envelope fails with KMS_BAD_ENVELOPE', async () => {
    kms.tamperEnvelope = true;
    try {
      await expect(source().load()).rejects.toMatchObject({ code: 'KMS_BAD_ENVELOPE' });
    } finally {
      kms.tamperEnvelope = false;
    }
  });

  it('an answer with the data key in Plaintext (no CiphertextForRecipient) is refused, never used', async () => {
    // Who answers so has the data key (or chose it): only the envelope to this enclave's own RSA key is taken.
    kms.plaintextForRecipient = true;
    try {
      await expect(source().load()).rejects.toMatchObject({ code: 'KMS_BAD_ENVELOPE', message: expect.stringContaining('without CiphertextForRecipient') });
    } finally {
      kms.plaintextForRecipient = false;
    }
  });

  it("a well-formed envelope of a data key the host chose, to this enclave's own key, opens but is never used", async () => {
    // The envelope is not authenticated (AES-CBC): anyone who saw the document could make one. The sealed
    // file's AES-GCM is what refuses a key KMS did not release for it.
    kms.forgedDataKey = new Uint8Array(32).fill(0x41);
    try {
      await expect(source().load()).rejects.toMatchObject({ code: 'KMS_BAD_SEALED_FILE', message: expect.stringContaining('does not open with the data key KMS released') });
    } finally {
      kms.forgedDataKey = null;
    }
  });

  it('a tampered sealed file fails with KMS_BAD_SEALED_FILE (keyring bytes, public keys) or KMS refuses (blob)', async () => {
    const j = JSON.parse(readFileSync(sealedFile, 'utf8')) as Record<string, unknown> & { keyring: string; publicKeys: { p256: string } };
    const flip = (b64: string) => {
      const b = Buffer.from(b64, 'base64');
      b[5]! ^= 1;
      return b.toString('base64');
    };
    const write = (o: object) => {
      const f = path.join(dir, 'tampered.json');
      writeFileSync(f, JSON.stringify(o));
      return f;
    };
    await expect(source({ file: write({ ...j, keyring: flip(j.keyring) }) }).load()).rejects.toMatchObject({ code: 'KMS_BAD_SEALED_FILE' });
    await expect(source({ file: write({ ...j, publicKeys: { ...j.publicKeys, p256: flip(j.publicKeys.p256) } }) }).load()).rejects.toMatchObject({ code: 'KMS_BAD_SEALED_FILE' });
    await expect(source({ file: write({ ...j, ciphertextBlob: flip(j.ciphertextBlob as string) }) }).load()).rejects.toMatchObject({ code: 'KMS_REQUEST_FAILED', message: expect.stringContaining('InvalidCiphertextException') });
    await expect(source({ file: write({ ...j, version: 3 }) }).load()).rejects.toMatchObject({ code: 'KMS_BAD_SEALED_FILE' });
    await expect(source({ region: 'us-east-1' }).load()).rejects.toMatchObject({ code: 'KMS_BAD_SEALED_FILE' });
  });

  it('KMS down then up: retries with backoff and opens', async () => {
    await kms.stop();
    const retries: string[] = [];
    const ring = await source({ onRetry: (_n, reason) => void (retries.push(reason), retries.length === 2 && kms.listen()) }).load();
    expect(Keyring.fromMaterial(ring).publicKeys()).toEqual(sealedKeys);
    expect(retries.length).toBeGreaterThanOrEqual(2);
    expect(retries[0]).toMatch(/ECONNREFUSED/);
  });

  it('KMS unreachable through every attempt: KMS_UNREACHABLE', async () => {
    await kms.stop();
    try {
      await expect(source({ attempts: 3 }).load()).rejects.toMatchObject({ code: 'KMS_UNREACHABLE', message: expect.stringContaining('after 3 attempts') });
    } finally {
      await kms.listen();
    }
  });

  it('no credentials at all: a clear refusal at once, not retried as if KMS were down', async () => {
    let asked = 0;
    const none = () => {
      asked++;
      return Promise.reject(Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }));
    };
    await expect(source({ credentials: none }).load()).rejects.toMatchObject({ code: 'KMS_REQUEST_FAILED', message: expect.stringContaining('no AWS credentials') });
    expect(asked).toBe(1);
  });

  it("the bridge's credential channel: no credentials there is final; an unreachable bridge is retried, then named", async () => {
    let asked = 0;
    const unavailable = () => {
      asked++;
      return Promise.reject(new CredentialsError('CREDENTIALS_UNAVAILABLE', 'the bridge has no credentials: no instance role'));
    };
    await expect(source({ credentials: unavailable }).load()).rejects.toMatchObject({ code: 'KMS_REQUEST_FAILED', message: expect.stringContaining('no AWS credentials') });
    expect(asked).toBe(1);

    asked = 0;
    const unreachable = () => {
      asked++;
      return Promise.reject(new CredentialsError('CREDENTIALS_UNREACHABLE', 'cannot reach the bridge'));
    };
    const err = await source({ credentials: unreachable, attempts: 2, backoffMs: 1 }).load().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KMS_REQUEST_FAILED', message: expect.stringContaining("the bridge's credentials port did not answer after 2 attempts") });
    expect(asked).toBe(2);
  });

  it('wrong credentials: a clear refusal, not retried', async () => {
    await expect(source({ credentials: { ...credentials, secretAccessKey: 'wrong' } }).load()).rejects.toMatchObject({ code: 'KMS_REQUEST_FAILED', message: expect.stringContaining('InvalidSignatureException') });
  });
});

describe('KMS keyring through the in-enclave egress proxy (CONNECT, TLS verified by name)', () => {
  const OTHER_NAME = 'kms.eu-central-1.amazonaws.com';
  let dns: TestDns;
  let stack: Stack;
  let named: KmsTestServer;
  let file: string;

  beforeAll(async () => {
    named = await KmsTestServer.start({ credentials, roots: [nsm.rootPem] }, 0, '127.0.0.2');
    const host = `kms.${named.region}.amazonaws.com`;
    // OTHER_NAME: allowed and resolving to the same server, whose certificate does not name it.
    dns = await startTestDns({ [host]: ['127.0.0.2'], [OTHER_NAME]: ['127.0.0.2'] });
    // The IP entry lets the test name's loopback answer through on that port (a non-global address needs an IP
    // entry for the address and the port dialled), as test/egress/sni-check does.
    stack = await startStack([`${host}:${named.port}`, `${OTHER_NAME}:${named.port}`, `127.0.0.2:${named.port}`], dns.port);
    const k = named.createKey(attestedPolicy(allowed));
    const sealed = await sealNewKeyring({ keyId: k, region: named.region, endpoint: named.endpoint, extraCa: [named.caPem], credentials });
    file = path.join(dir, 'named.sealed.json');
    writeFileSync(file, sealed.text);
  });

  afterAll(async () => {
    await stack?.close();
    await dns?.close();
    await named?.stop();
  });

  it('opens the keyring with every byte to KMS going through CONNECT kms.<region>.amazonaws.com', async () => {
    const host = `kms.${named.region}.amazonaws.com`;
    const proxy = { host: '127.0.0.1', port: Number(new URL(stack.egress.proxyUrl).port) };
    const ring = await kmsKeySource({ file, region: named.region, endpoint: `https://${host}:${named.port}`, nsm, proxy, extraCa: [named.caPem], credentials }).load();
    expect(Keyring.fromMaterial(ring).publicKeys().p256).toHaveLength(33);
    // The flow's decision is recorded when the tunnel closes.
    await vi.waitFor(() => expect(stack.decisions.some((d) => d.allowed && d.name === host && d.ip === '127.0.0.2' && d.bytesOut > 0)).toBe(true), { timeout: 5000 });
    expect(named.calls.some((c) => c.op === 'Decrypt' && c.status === 200)).toBe(true);
  });

  it('a certificate the agent does not trust is refused (TLS is verified in the agent, not just tunnelled)', async () => {
    const proxy = { host: '127.0.0.1', port: Number(new URL(stack.egress.proxyUrl).port) };
    const err = await kmsKeySource({ file, region: named.region, endpoint: `https://kms.${named.region}.amazonaws.com:${named.port}`, nsm, proxy, credentials, attempts: 1 }).load().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KMS_UNREACHABLE', message: expect.stringMatching(/CERT/) });
    // Named as what it is under the enclave's threat model, not as KMS being silent.
    expect((err as Error).message).toMatch(/answered with a TLS certificate this enclave does not trust \(DEPTH_ZERO_SELF_SIGNED_CERT\); something between the enclave and KMS answered in its place/);
    expect((err as Error).message).not.toMatch(/did not answer/);
  });

  it('a trusted certificate for another name is refused too, and named the same way', async () => {
    const proxy = { host: '127.0.0.1', port: Number(new URL(stack.egress.proxyUrl).port) };
    // The host's DNS sends another KMS name to a server with a trusted certificate that does not name it.
    const retries: string[] = [];
    const err = await kmsKeySource({ file, region: named.region, endpoint: `https://${OTHER_NAME}:${named.port}`, nsm, proxy, extraCa: [named.caPem], credentials, attempts: 2, backoffMs: 1, onRetry: (_a, reason) => retries.push(reason) }).load().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KMS_UNREACHABLE', message: expect.stringContaining('a TLS certificate this enclave does not trust (ERR_TLS_CERT_ALTNAME_INVALID)') });
    expect(retries).toEqual(['a TLS certificate this enclave does not trust (ERR_TLS_CERT_ALTNAME_INVALID)']);
  });
});

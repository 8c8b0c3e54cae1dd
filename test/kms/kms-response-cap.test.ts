// KMS's answers are read with a size cap (kms-response-cap.ts): the AWS SDK read a body whole, of any size, before
// parsing it, and the answer comes through the egress tunnel. Checked against the fake KMS of kms-server.ts, with
// answers padded by a field the SDK ignores: on the old client a 1 MiB answer decrypted like any other.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, simulatorPcrs } from '../../src/attestation/simulator.ts';
import { createAttestedKmsDecryptor, type AttestedKmsDecryptor } from '../../src/crypto/kms-attested.ts';
import { KmsKeyringError } from '../../src/crypto/kms-errors.ts';
import { MAX_KMS_RESPONSE_BYTES } from '../../src/crypto/kms-response-cap.ts';
import { generateDataKey } from '../../src/crypto/kms-seal.ts';
import { toHex } from '../../src/util/bytes.ts';
import { KmsTestServer, attestedPolicy } from './kms-server.ts';

const credentials = { accessKeyId: 'AKIDKMSTESTSERVER01', secretAccessKey: 'kms-test-server-secret-not-a-real-key' };
const identity = { agentVersion: 'test', app: 'kms-response-cap', config: '' };
let dir: string;
let kms: KmsTestServer;
let nsm: Awaited<ReturnType<typeof createNsmSimulator>>;
let keyId: string;
let blob: Uint8Array;
let decryptor: AttestedKmsDecryptor;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kms-cap-'));
  nsm = await createNsmSimulator({ stateDir: path.join(dir, 'nsm'), identity });
  kms = await KmsTestServer.start({ credentials, roots: [nsm.rootPem] });
  const pcrs = simulatorPcrs(identity);
  keyId = kms.createKey(attestedPolicy({ PCR0: toHex(pcrs[0]), PCR1: toHex(pcrs[1]), PCR2: toHex(pcrs[2]) }));
  const dk = await generateDataKey({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
  dk.plaintext.fill(0);
  blob = dk.ciphertextBlob;
  decryptor = await createAttestedKmsDecryptor({ region: kms.region, endpoint: kms.endpoint, nsm, extraCa: [kms.caPem], credentials, backoffMs: 10, attempts: 2 });
});

afterEach(() => {
  kms.answerPadding = 0;
  kms.chunkedAnswers = false;
});

afterAll(async () => {
  decryptor?.close();
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const decrypted = (): Promise<unknown> => decryptor.decrypt(blob, `key ${keyId}`, keyId).then((k) => (k.fill(0), k.length), (e: unknown) => e);

describe("a KMS answer's size", () => {
  it('an answer under the cap decrypts as before', async () => {
    kms.answerPadding = 16 * 1024;
    expect(await decrypted()).toBe(32);
  });

  for (const chunked of [false, true]) {
    it(`refuses an attested Decrypt's 1 MiB answer with KMS_RESPONSE_TOO_LARGE, not retried (${chunked ? 'chunked' : 'Content-Length'})`, async () => {
      kms.answerPadding = 1024 * 1024;
      kms.chunkedAnswers = chunked;
      const calls = kms.calls.length;
      const err = await decrypted();
      expect(err).toBeInstanceOf(KmsKeyringError);
      expect(err).toMatchObject({ code: 'KMS_RESPONSE_TOO_LARGE', message: expect.stringContaining(`${MAX_KMS_RESPONSE_BYTES} bytes`) });
      expect((err as Error).message).not.toContain('xxxx'); // nothing of the body in the error
      // Refused on its declared length, unread; or, with none declared, once the bytes read pass the cap.
      expect((err as Error).message.includes('Content-Length')).toBe(!chunked);
      expect(kms.calls.length - calls).toBe(1);
      kms.answerPadding = 0;
      expect(await decrypted()).toBe(32); // the next Decrypt, on the same client, is served
    });
  }

  it("refuses GenerateDataKey's oversize answer (the operator's keys seal) with the same typed error", async () => {
    kms.answerPadding = 1024 * 1024;
    kms.chunkedAnswers = true;
    const err = await generateDataKey({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KmsKeyringError);
    expect(err).toMatchObject({ code: 'KMS_RESPONSE_TOO_LARGE' });
  });
});

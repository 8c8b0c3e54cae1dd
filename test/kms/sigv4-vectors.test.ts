// The SigV4 signer the KMS client uses (@smithy/signature-v4, shipped with @aws-sdk/client-kms) and the test
// KMS's independent checker (aws4) against AWS's published suite (aws-sig-v4-test-suite: get-vanilla and
// post-vanilla; AKIDEXAMPLE, 20150830T123600Z, us-east-1, service "service"). Debian's botocore gives the same
// two signatures (checked when these values were written).
import { createHash, createHmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import type { SourceData } from '@smithy/types';
import aws4 from 'aws4';
import { describe, expect, it } from 'vitest';

const creds = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const VECTORS = [
  { name: 'get-vanilla', method: 'GET', signature: '5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31' },
  { name: 'post-vanilla', method: 'POST', signature: '5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b' },
];
const expected = (sig: string) => `AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=${sig}`;

const bytes = (d: SourceData): Uint8Array => (typeof d === 'string' ? Buffer.from(d) : d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength));

/** The Checksum shape the signer wants, over node:crypto. */
class Sha256 {
  readonly #h: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  constructor(secret?: SourceData) {
    this.#h = secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(secret));
  }
  update(d: SourceData): void {
    this.#h.update(bytes(d));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.#h.digest()));
  }
  reset(): void {}
}

describe('SigV4 against the AWS test suite', () => {
  it.each(VECTORS)('@smithy/signature-v4 (the KMS client\'s signer): $name', async ({ method, signature }) => {
    const signer = new SignatureV4({ service: 'service', region: 'us-east-1', credentials: creds, sha256: Sha256, uriEscapePath: true, applyChecksum: false });
    const req = { method, protocol: 'https:', hostname: 'example.amazonaws.com', path: '/', query: {}, headers: { host: 'example.amazonaws.com' } };
    const signed = await signer.sign(req, { signingDate: new Date('2015-08-30T12:36:00Z') });
    expect(signed.headers.authorization).toBe(expected(signature));
    expect(signed.headers['x-amz-date']).toBe('20150830T123600Z');
  });

  it.each(VECTORS)('aws4 (the test KMS\'s checker): $name', ({ method, signature }) => {
    const out = aws4.sign({ host: 'example.amazonaws.com', method, path: '/', service: 'service', region: 'us-east-1', headers: { 'X-Amz-Date': '20150830T123600Z' } }, creds);
    expect((out.headers as Record<string, string>).Authorization).toBe(expected(signature));
  });
});

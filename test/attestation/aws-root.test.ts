// The embedded AWS Nitro root (aws-root.ts) is the one AWS publishes: byte-identical to the fixture downloaded from
// AWS and with AWS's published SHA-256 fingerprint, computed here with node:crypto. (The verifier no longer
// re-hashes its own constant at run time: that cost a cold client ~2 ms and caught nothing this test does not.)
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256 } from '../../src/attestation/aws-root.ts';
import { pemToDer } from '../../src/attestation/x509.ts';
import { toHex } from '../../src/util/bytes.ts';
import { awsRootPath } from './fixtures.ts';

it('embeds the AWS root G1 with its published SHA-256', () => {
  const der = pemToDer(AWS_NITRO_ROOT_G1_PEM);
  expect(toHex(der)).toBe(toHex(pemToDer(readFileSync(awsRootPath, 'utf8'))));
  expect(createHash('sha256').update(der).digest('hex')).toBe(AWS_NITRO_ROOT_G1_SHA256);
  expect(AWS_NITRO_ROOT_G1_SHA256).toBe('641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b');
});

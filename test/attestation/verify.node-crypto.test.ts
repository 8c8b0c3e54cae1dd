// The verifier's suite again with node:crypto's ECDSA installed, as the Node SDK, the CLI and the agent run it
// (verify.test.ts keeps the browser-safe WebCrypto default).
import { expect, it } from 'vitest';
import { nodeEcdsaVerifier } from '../../src/attestation/ecdsa-node.ts';
import { ecdsaVerifier } from '../../src/attestation/ecdsa.ts';
import { defineVerifyTests } from './verify-cases.ts';

it('has node:crypto installed as the ECDSA backend', () => {
  expect(ecdsaVerifier()).toBe(nodeEcdsaVerifier);
});

defineVerifyTests('node:crypto');

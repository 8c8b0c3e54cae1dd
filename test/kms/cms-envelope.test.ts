import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MAX_ENVELOPE_BYTES, openRecipientEnvelope, parseRecipientEnvelope } from '../../src/crypto/cms-envelope.ts';
import { opensslRecipientEnvelope } from './openssl-cms.ts';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const spki = new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));

describe('CiphertextForRecipient (CMS EnvelopedData) from openssl cms', () => {
  const plaintext = randomBytes(32);
  const ber = opensslRecipientEnvelope(spki, plaintext, 'ber');
  const der = opensslRecipientEnvelope(spki, plaintext, 'der');

  it('the BER form is indefinite-length like KMS, the DER form is not', () => {
    expect([...ber.subarray(0, 2)]).toEqual([0x30, 0x80]);
    expect(der[1]! & 0x80).toBe(0x80);
    expect(der[1]).not.toBe(0x80);
  });

  it('opens BER (indefinite lengths, chunked content) and DER to the same 32 bytes', () => {
    expect(openRecipientEnvelope(ber, privateKey).equals(plaintext)).toBe(true);
    expect(openRecipientEnvelope(der, privateKey).equals(plaintext)).toBe(true);
  });

  it('refuses an envelope for another RSA key', () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    expect(() => openRecipientEnvelope(ber, other)).toThrow(expect.objectContaining({ code: 'KMS_BAD_ENVELOPE' }));
  });

  it('refuses a tampered wrapped key, a truncated envelope and trailing bytes', () => {
    const { encryptedKey } = parseRecipientEnvelope(der);
    const at = Buffer.from(der).indexOf(Buffer.from(encryptedKey));
    const flipped = Uint8Array.from(der);
    flipped[at + 10]! ^= 1;
    expect(() => openRecipientEnvelope(flipped, privateKey)).toThrow(expect.objectContaining({ code: 'KMS_BAD_ENVELOPE' }));
    expect(() => openRecipientEnvelope(ber.subarray(0, ber.length - 3), privateKey)).toThrow(expect.objectContaining({ code: 'KMS_BAD_ENVELOPE' }));
    expect(() => openRecipientEnvelope(Uint8Array.of(...der, 0), privateKey)).toThrow(expect.objectContaining({ code: 'KMS_BAD_ENVELOPE' }));
  });

  it('refuses SHA-1 OAEP (RSAES_OAEP_SHA_256 only) and garbage, with the typed error', () => {
    const sha1 = opensslRecipientEnvelope(spki, plaintext, 'ber', 'sha1');
    expect(() => openRecipientEnvelope(sha1, privateKey)).toThrow(expect.objectContaining({ code: 'KMS_BAD_ENVELOPE' }));
    for (const junk of [new Uint8Array(0), Uint8Array.of(0x30, 0x80), Uint8Array.from(randomBytes(64))]) {
      expect(() => parseRecipientEnvelope(junk)).toThrow(expect.objectContaining({ code: 'KMS_BAD_ENVELOPE' }));
    }
  });

  it('refuses an envelope larger than any KMS sends before walking it (a flood of tiny TLVs, a valid but huge one)', () => {
    // 1 MiB of NULLs inside one indefinite SEQUENCE: ~300 MB of heap were it walked.
    const flood = new Uint8Array(1 << 20);
    flood.set([0x30, 0x80]);
    for (let i = 2; i < flood.length - 2; i += 2) flood[i] = 0x05;
    const tooLarge = expect.objectContaining({ code: 'KMS_BAD_ENVELOPE', message: expect.stringContaining(`more than the ${MAX_ENVELOPE_BYTES}`) });
    expect(() => parseRecipientEnvelope(flood)).toThrow(tooLarge);
    // Well formed and to this key, but larger than Decrypt's biggest answer: not opened either.
    const huge = opensslRecipientEnvelope(spki, randomBytes(MAX_ENVELOPE_BYTES), 'ber');
    expect(() => openRecipientEnvelope(huge, privateKey)).toThrow(tooLarge);
    // The largest plaintext Decrypt returns (4096 bytes) still opens.
    const largest = randomBytes(4096);
    expect(openRecipientEnvelope(opensslRecipientEnvelope(spki, largest, 'ber'), privateKey).equals(largest)).toBe(true);
  });
});

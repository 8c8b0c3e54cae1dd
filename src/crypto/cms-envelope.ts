// Opens KMS's `CiphertextForRecipient`: a CMS (RFC 5652) EnvelopedData whose content key is RSAES-OAEP
// (SHA-256, MGF1-SHA-256) wrapped to the enclave's RSA key and whose content is AES-256-CBC (PKCS#7).
// Real KMS envelopes are BER with indefinite lengths and a chunked encryptedContent, so this is a small
// BER walker rather than a DER parser (KMS.md §2.4/§2.5). Only the shape KMS sends is accepted.
import { constants, createDecipheriv, privateDecrypt, type KeyObject } from 'node:crypto';
import { concatBytes } from '../util/bytes.ts';
import { decipherWhole } from './decipher-whole.ts';
import { KmsKeyringError } from './kms-errors.ts';

interface Tlv {
  tag: number;
  /** Primitive: the value bytes. Constructed: empty (see children). */
  value: Uint8Array;
  children: Tlv[];
  constructed: boolean;
}

const MAX_DEPTH = 16;
/**
 * A real envelope is ~0.5 KiB for a 32-byte data key and ~4.5 KiB for the largest plaintext Decrypt returns
 * (4096 bytes). The walker allocates a few hundred bytes per 2-byte TLV (1 MiB of them: ~300 MB of heap), so
 * anything larger than this is refused before it is walked.
 */
export const MAX_ENVELOPE_BYTES = 16 * 1024;

function bad(what: string): KmsKeyringError {
  return new KmsKeyringError('KMS_BAD_ENVELOPE', `CiphertextForRecipient: ${what}`);
}

/** Reads one TLV at `pos`; returns it and the offset after it. */
function readTlv(buf: Uint8Array, pos: number, depth: number): [Tlv, number] {
  if (depth > MAX_DEPTH) throw bad('nested too deeply');
  if (pos + 2 > buf.length) throw bad('truncated');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw bad('high tag numbers are not used by CMS envelopes');
  const constructed = (tag & 0x20) !== 0;
  let len = buf[pos + 1]!;
  pos += 2;
  let indefinite = false;
  if (len === 0x80) {
    if (!constructed) throw bad('indefinite length on a primitive');
    indefinite = true;
  } else if (len > 0x80) {
    const n = len & 0x7f;
    if (n > 4 || pos + n > buf.length) throw bad('bad long-form length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos + i]!;
    pos += n;
  }
  if (!constructed) {
    if (pos + len > buf.length) throw bad('truncated');
    return [{ tag, value: buf.subarray(pos, pos + len), children: [], constructed }, pos + len];
  }
  const children: Tlv[] = [];
  if (indefinite) {
    for (;;) {
      if (pos + 2 > buf.length) throw bad('missing end-of-contents');
      if (buf[pos] === 0 && buf[pos + 1] === 0) return [{ tag, value: new Uint8Array(0), children, constructed }, pos + 2];
      const [child, next] = readTlv(buf, pos, depth + 1);
      children.push(child);
      pos = next;
    }
  }
  const end = pos + len;
  if (end > buf.length) throw bad('truncated');
  while (pos < end) {
    const [child, next] = readTlv(buf.subarray(0, end), pos, depth + 1);
    children.push(child);
    pos = next;
  }
  return [{ tag, value: new Uint8Array(0), children, constructed }, end];
}

/** An OCTET STRING (or an IMPLICIT one under `tag`): primitive, or constructed from 04 chunks (BER). */
function octets(t: Tlv, tag: number, what: string): Uint8Array {
  if (t.tag === tag) return t.value;
  if (t.tag === (tag | 0x20) && t.children.every((c) => c.tag === 0x04)) return concatBytes(...t.children.map((c) => c.value));
  throw bad(`${what}: expected an OCTET STRING`);
}

function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t || t.tag !== tag) throw bad(`${what}: expected tag 0x${tag.toString(16)}, found ${t ? `0x${t.tag.toString(16)}` : 'nothing'}`);
  return t;
}

/** DER OID bytes from dotted text (only for the few fixed OIDs below). */
function oid(dotted: string): string {
  const parts = dotted.split('.').map(Number);
  const out = [40 * parts[0]! + parts[1]!];
  for (const p of parts.slice(2)) {
    const b = [p & 0x7f];
    for (let v = p >>> 7; v > 0; v >>>= 7) b.unshift((v & 0x7f) | 0x80);
    out.push(...b);
  }
  return Buffer.from(out).toString('hex');
}

const OID = {
  envelopedData: oid('1.2.840.113549.1.7.3'),
  data: oid('1.2.840.113549.1.7.1'),
  rsaesOaep: oid('1.2.840.113549.1.1.7'),
  mgf1: oid('1.2.840.113549.1.1.8'),
  sha256: oid('2.16.840.1.101.3.4.2.1'),
  aes256Cbc: oid('2.16.840.1.101.3.4.1.42'),
};

function isOid(t: Tlv | undefined, want: string, what: string): void {
  const got = Buffer.from(expect(t, 0x06, what).value).toString('hex');
  if (got !== want) throw bad(`${what}: unexpected algorithm (OID bytes ${got})`);
}

function intValue(t: Tlv | undefined, what: string): number {
  const v = expect(t, 0x02, what).value;
  if (v.length !== 1) throw bad(`${what}: unexpected INTEGER`);
  return v[0]!;
}

/** RSAES-OAEP-params must say SHA-256 and MGF1-SHA-256 (NULL parameters optional, pSource default). */
function checkOaepParams(params: Tlv | undefined): void {
  const p = expect(params, 0x30, 'RSAES-OAEP-params');
  let hash = false;
  let mgf = false;
  for (const field of p.children) {
    if (field.tag === 0xa0) {
      isOid(field.children[0]?.children[0], OID.sha256, 'OAEP hash');
      hash = true;
    } else if (field.tag === 0xa1) {
      const alg = expect(field.children[0], 0x30, 'OAEP maskGenAlgorithm');
      isOid(alg.children[0], OID.mgf1, 'OAEP maskGenAlgorithm');
      isOid(alg.children[1]?.children[0], OID.sha256, 'OAEP MGF1 hash');
      mgf = true;
    } else {
      throw bad('RSAES-OAEP-params: only the default pSource is accepted');
    }
  }
  // An absent field means SHA-1, which KMS never uses and RSAES_OAEP_SHA_256 forbids.
  if (!hash || !mgf) throw bad('RSAES-OAEP-params: SHA-256 and MGF1-SHA-256 must be given');
}

export interface EnvelopeParts {
  encryptedKey: Uint8Array;
  iv: Uint8Array;
  ciphertext: Uint8Array;
}

/** Parses the envelope (BER or DER) into the pieces needed to open it; checks every algorithm. */
export function parseRecipientEnvelope(cms: Uint8Array): EnvelopeParts {
  if (cms.length > MAX_ENVELOPE_BYTES) throw bad(`${cms.length} bytes, more than the ${MAX_ENVELOPE_BYTES} any KMS envelope needs`);
  const [ci, end] = readTlv(cms, 0, 0);
  if (end !== cms.length) throw bad(`${cms.length - end} trailing bytes`);
  expect(ci, 0x30, 'ContentInfo');
  isOid(ci.children[0], OID.envelopedData, 'ContentInfo.contentType');
  const ed = expect(expect(ci.children[1], 0xa0, 'ContentInfo.content').children[0], 0x30, 'EnvelopedData');
  const [version, recipientInfos, eci, ...rest] = ed.children;
  const v = intValue(version, 'EnvelopedData.version');
  if (v !== 2 && v !== 0) throw bad(`EnvelopedData.version: expected 2, found ${v}`);
  if (rest.length > 0) throw bad('EnvelopedData: unexpected unprotectedAttrs');
  const ris = expect(recipientInfos, 0x31, 'recipientInfos');
  if (ris.children.length !== 1) throw bad(`recipientInfos: expected one recipient, found ${ris.children.length}`);
  const ktri = expect(ris.children[0], 0x30, 'KeyTransRecipientInfo');
  const [kv, rid, kea, ek] = ktri.children;
  intValue(kv, 'KeyTransRecipientInfo.version');
  if (!rid || (rid.tag !== 0x80 && rid.tag !== 0x30)) throw bad('KeyTransRecipientInfo.rid: expected a subjectKeyIdentifier or issuerAndSerialNumber');
  const keyAlg = expect(kea, 0x30, 'keyEncryptionAlgorithm');
  isOid(keyAlg.children[0], OID.rsaesOaep, 'keyEncryptionAlgorithm');
  checkOaepParams(keyAlg.children[1]);
  const encryptedKey = octets(expect(ek, ek?.tag === 0x24 ? 0x24 : 0x04, 'encryptedKey'), 0x04, 'encryptedKey');
  const info = expect(eci, 0x30, 'EncryptedContentInfo');
  isOid(info.children[0], OID.data, 'EncryptedContentInfo.contentType');
  const cea = expect(info.children[1], 0x30, 'contentEncryptionAlgorithm');
  isOid(cea.children[0], OID.aes256Cbc, 'contentEncryptionAlgorithm');
  const iv = octets(expect(cea.children[1], 0x04, 'AES-CBC IV'), 0x04, 'AES-CBC IV');
  if (iv.length !== 16) throw bad(`AES-CBC IV: expected 16 bytes, found ${iv.length}`);
  const content = info.children[2];
  if (!content) throw bad('encryptedContent: missing');
  const ciphertext = octets(content, 0x80, 'encryptedContent');
  if (ciphertext.length === 0 || ciphertext.length % 16 !== 0) throw bad(`encryptedContent: ${ciphertext.length} bytes is not whole AES blocks`);
  return { encryptedKey, iv, ciphertext };
}

/**
 * Opens the envelope with the enclave's RSA private key — a KeyObject, or PKCS#8 DER bytes the caller can wipe
 * (a KeyObject's key lives until it is garbage-collected) — and returns the plaintext (the caller wipes it).
 * Throws KMS_BAD_ENVELOPE for a malformed envelope, a content key that does not unwrap, or bad padding.
 */
export function openRecipientEnvelope(cms: Uint8Array, privateKey: KeyObject | { pkcs8Der: Buffer }): Buffer {
  const { encryptedKey, iv, ciphertext } = parseRecipientEnvelope(cms);
  // DER is parsed into a key that OpenSSL frees (and clears) before privateDecrypt returns.
  const key = 'pkcs8Der' in privateKey ? { key: privateKey.pkcs8Der, format: 'der' as const, type: 'pkcs8' as const } : { key: privateKey };
  let cek: Buffer;
  try {
    cek = privateDecrypt({ ...key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, encryptedKey);
  } catch {
    throw bad('the content key does not unwrap with this enclave\'s RSA key');
  }
  try {
    if (cek.length !== 32) throw bad(`content key: expected 32 bytes, found ${cek.length}`);
    const d = createDecipheriv('aes-256-cbc', cek, iv);
    try {
      return decipherWhole(d, ciphertext);
    } catch {
      throw bad('the content does not decrypt (bad padding)');
    }
  } finally {
    cek.fill(0);
  }
}

/*
 * Attested TLS certificate: the exact format (Evervault-compatible, see shared/protocol/TLS-INGRESS.md §1.4).
 *
 *  Key       ECDSA P-384, generated in the enclave (one per boot; a fresh one per SNI-nonce handshake).
 *  Cert      X.509 v3, self-signed (ecdsa-with-SHA384) — no operator CA yet. Random 16-byte positive serial.
 *            subject = issuer = CN=<host> (host truncated to 64 chars), O=enclave-agent.
 *            notBefore = now − 10 s; notAfter = notAfter of the NSM signing certificate inside the document.
 *            BasicConstraints CA:FALSE; KeyUsage (critical) digitalSignature; ExtendedKeyUsage serverAuth.
 *  SAN       exactly two dNSName entries, in this order:
 *              1. `<host>`
 *              2. `<lowercase hex of the whole COSE_Sign1 document>.<host>`
 *            The document is NOT split: the whole hex string is ONE first label (≈9–10k chars, beyond DNS's 63;
 *            OpenSSL, Node and Python `cryptography` accept it). Verifier rule (Evervault's): over all dNSNames,
 *            take the text before the first '.', keep the LONGEST, hex-decode it → COSE_Sign1 bytes.
 *  Document  NSM Attestation{ user_data = the leaf's SubjectPublicKeyInfo DER (120 bytes for P-384, the exact
 *            bytes in the certificate), nonce = client nonce or 32 NSM-random bytes, public_key = absent }.
 *  <host>    the SNI the client sent if any (lowercased), else the configured host (default `localhost`).
 *  Nonce     SNI `<nonce>.attest.<host>`: labels split on '.', ≥ 3 labels, label[1] == "attest" (case-insensitive);
 *            label[0] (≤ 63 chars) decoded as standard base64 (padded or not), falling back to base64url;
 *            1–64 bytes. Recommended: 24 random bytes → 32 base64 chars, resampled until no '+' or '/'.
 *            Such a handshake gets a freshly minted key + cert + document with that nonce, SAN =
 *            [`<full SNI>`, `<hex>.<full SNI>`]; rate-limited, never reused for another nonce.
 *  Well-known GET /.well-known/attestation on the TLS port → 200 application/json
 *            {"attestation_doc": "<standard base64 COSE_Sign1>"}: a fresh document (32 random nonce bytes) with
 *            user_data = SPKI DER of the key served by default (the boot key).
 *  Rotation  cert + document re-issued when now ≥ NSM-cert notAfter − 10 min (checked per handshake and on a
 *            timer); the key stays the same for the process.
 */
import { randomBytes, webcrypto } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { toHex } from '../util/bytes.ts';

const subtle = webcrypto.subtle as SubtleCrypto;
const engine = new pkijs.CryptoEngine({ name: 'enclave-agent-ingress', crypto: webcrypto as Crypto });
const EC_P384 = { name: 'ECDSA', namedCurve: 'P-384' } as const;
const OID_CN = '2.5.4.3';
const OID_O = '2.5.4.10';
const BACKDATE_MS = 10_000;

/** A TLS key: the webcrypto pair (signs the certificate), PKCS#8 PEM for Node's tls, and its SPKI DER. */
export interface IngressKey {
  readonly privateKey: CryptoKey;
  readonly keyPem: string;
  /** The exact SubjectPublicKeyInfo bytes written into the certificate and into the document's user_data. */
  readonly spkiDer: Uint8Array;
}

function pem(label: string, der: Uint8Array): string {
  return `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').replace(/.{1,64}/g, '$&\n')}-----END ${label}-----\n`;
}

export async function generateIngressKey(): Promise<IngressKey> {
  // Extractable once, so Node's tls can load it as PKCS#8; it never leaves the process.
  const pair = (await subtle.generateKey(EC_P384, true, ['sign', 'verify'])) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(await subtle.exportKey('pkcs8', pair.privateKey));
  const spkiDer = new Uint8Array(await subtle.exportKey('spki', pair.publicKey));
  return { privateKey: pair.privateKey, keyPem: pem('PRIVATE KEY', pkcs8), spkiDer };
}

/** Name as one attribute per RDN (pkijs's own encoder makes one multi-valued RDN, which strict parsers refuse). */
function dn(host: string): pkijs.RelativeDistinguishedNames {
  const rdn = (type: string, value: string) =>
    new asn1js.Set({ value: [new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: type }), new asn1js.Utf8String({ value })] })] });
  const der = new asn1js.Sequence({ value: [rdn(OID_O, 'enclave-agent'), rdn(OID_CN, host.slice(0, 64))] }).toBER(false);
  return new pkijs.RelativeDistinguishedNames({ schema: asn1js.fromBER(der).result });
}

function time(ms: number): pkijs.Time {
  const value = new Date(Math.floor(ms / 1000) * 1000);
  return new pkijs.Time({ type: value.getUTCFullYear() >= 2050 ? 1 : 0, value });
}

export interface AttestedCertOptions {
  key: IngressKey;
  /** The NSM document (COSE_Sign1) whose user_data is key.spkiDer. */
  document: Uint8Array;
  /** `<host>` of the header: SNI or the configured host. */
  host: string;
  /** ms since the epoch. */
  now: number;
  /** ms since the epoch: the NSM signing certificate's notAfter. */
  notAfter: number;
}

/** The self-signed leaf of the header's profile, DER. */
export async function buildAttestedCertificate(opts: AttestedCertOptions): Promise<Uint8Array> {
  const host = opts.host;
  const cert = new pkijs.Certificate();
  cert.version = 2;
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01;
  cert.serialNumber = new asn1js.Integer({ valueHex: serial });
  cert.subject = dn(host);
  cert.issuer = dn(host);
  cert.notBefore = time(opts.now - BACKDATE_MS);
  cert.notAfter = time(opts.notAfter);
  const spki = asn1js.fromBER(opts.key.spkiDer.slice().buffer);
  cert.subjectPublicKeyInfo = new pkijs.PublicKeyInfo({ schema: spki.result });
  const san = new pkijs.GeneralNames({
    names: [new pkijs.GeneralName({ type: 2, value: host }), new pkijs.GeneralName({ type: 2, value: `${toHex(opts.document)}.${host}` })],
  });
  const bc = new pkijs.BasicConstraints({});
  const ku = new asn1js.BitString({ valueHex: Uint8Array.of(0x80), unusedBits: 7 });
  const eku = new pkijs.ExtKeyUsage({ keyPurposes: ['1.3.6.1.5.5.7.3.1'] });
  cert.extensions = [
    new pkijs.Extension({ extnID: '2.5.29.19', critical: false, extnValue: bc.toSchema().toBER(false) }),
    new pkijs.Extension({ extnID: '2.5.29.15', critical: true, extnValue: ku.toBER(false) }),
    new pkijs.Extension({ extnID: '2.5.29.37', critical: false, extnValue: eku.toSchema().toBER(false) }),
    new pkijs.Extension({ extnID: '2.5.29.17', critical: false, extnValue: san.toSchema().toBER(false) }),
  ];
  await cert.sign(opts.key.privateKey, 'SHA-384', engine);
  return new Uint8Array(cert.toSchema(true).toBER(false));
}

export function certificatePem(der: Uint8Array): string {
  return pem('CERTIFICATE', der);
}

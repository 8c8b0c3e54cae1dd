/**
 * Verifies an attested TLS certificate: the Nitro attestation document carried in the leaf's subjectAltName,
 * as Evervault's data plane and our TLS ingress issue it (src/ingress/attested-cert.ts, TLS-INGRESS.md §1.4).
 * Browser-safe (the attestation chain's strict DER reader, and WebCrypto through src/attestation/verify.ts; no
 * node:*, no Buffer). Not pkijs/asn1js: their cold start (~30 ms) would be most of a client's first https:// check.
 *
 * Rule (Evervault's `validate_attestation_doc_in_cert`): over every dNSName of the SAN take the text before the
 * first '.', keep the LONGEST, hex-decode it → COSE_Sign1. Or, Evervault's newer path, a document fetched
 * separately (e.g. from /.well-known/attestation) checked against the certificate. Then the document must pass
 * verifyAttestation (chain to the AWS root or the given roots, ES384 signature, PCR pins, nonce, maxAge), and
 * its `user_data` must equal, byte for byte, the certificate's SubjectPublicKeyInfo DER.
 *
 * Why that is enough: the certificate is self-signed (or signed by an operator CA nobody pins), so it proves
 * nothing by itself. The document says "the enclave with these PCRs holds the private key of THIS public key";
 * the TLS handshake proves the server holds that private key. Together: the peer is that enclave. The caller
 * must therefore check the certificate the handshake actually presented (not one fetched elsewhere).
 */
import { DerReader, readOid, readOne, readString, readTime, TAG } from '../attestation/der.ts';
import type { AttestationDocument } from '../attestation/document.ts';
import { MAX_DOCUMENT_BYTES } from '../attestation/document.ts';
import { verifyAttestation, type VerifyExpectations } from '../attestation/verify.ts';
import { formatName, parseName } from '../attestation/x509.ts';
import { equalBytes, fromBase64, fromHex, toHex } from '../util/bytes.ts';
import { AttestedCertError } from './attested-cert-errors.ts';

export { AttestedCertError, type AttestedCertErrorCode } from './attested-cert-errors.ts';

const OID_SAN = '2.5.29.17';
/** GeneralName's dNSName: [2] IMPLICIT IA5String. */
const DNS_NAME = 0x82;
const HEX_LABEL = /^(?:[0-9a-fA-F]{2})+$/;

export interface AttestedCertificate {
  /** The certificate, DER. */
  readonly der: Uint8Array;
  /** The exact SubjectPublicKeyInfo bytes inside the certificate (what user_data must equal). */
  readonly spkiDer: Uint8Array;
  readonly subject: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The SAN dNSNames other than the one carrying the document (the host names). */
  readonly hostnames: string[];
  /** The COSE_Sign1 document hex-encoded in the SAN; null when the certificate carries none. */
  readonly document: Uint8Array | null;
}

export interface AttestedCertExpectations extends VerifyExpectations {
  /**
   * A document obtained separately (e.g. `/.well-known/attestation`) to check against the certificate instead
   * of the one in its SAN. Its user_data must still be this certificate's key.
   */
  document?: Uint8Array;
}

export interface VerifiedCertificate {
  readonly certificate: AttestedCertificate;
  /** The verified, decoded document. */
  readonly attestation: AttestationDocument;
  /** The document's COSE_Sign1 bytes. */
  readonly documentBytes: Uint8Array;
}

function malformed(message: string, cause?: unknown): AttestedCertError {
  return new AttestedCertError('ATTESTED_CERT_MALFORMED', message, cause === undefined ? undefined : { cause });
}

/** PEM text (string or bytes) or DER bytes → DER. */
export function certificateDer(input: Uint8Array | string): Uint8Array {
  let text: string | undefined;
  if (typeof input === 'string') text = input;
  else if (input instanceof Uint8Array) {
    // "-----" starts PEM; DER starts with 0x30.
    if (input.length > 5 && input[0] === 0x2d) text = new TextDecoder().decode(input);
    else return input;
  } else throw malformed('certificate: expected DER bytes or PEM text');
  const m = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(text);
  if (m === null) throw malformed('certificate: no -----BEGIN CERTIFICATE----- block in the PEM text');
  try {
    return fromBase64(m[1]!.replace(/\s+/g, ''));
  } catch (err) {
    throw malformed('certificate: the PEM block is not valid base64', err);
  }
}

/** A certificate's fields this check needs, read by the strict DER reader of the attestation chain. */
interface CertFields {
  spkiDer: Uint8Array;
  subject: string;
  notBefore: Date;
  notAfter: Date;
  /** Every dNSName of the subjectAltName, in order. */
  dnsNames: string[];
}

function readCertFields(der: Uint8Array): CertFields {
  const cert = DerReader.of(readOne(der, TAG.SEQUENCE, 'Certificate'));
  const tbs = DerReader.of(cert.next(TAG.SEQUENCE, 'tbsCertificate'));
  cert.next(TAG.SEQUENCE, 'signatureAlgorithm');
  cert.next(TAG.BIT_STRING, 'signatureValue');
  cert.expectDone('Certificate');
  tbs.optional(0xa0, 'version');
  tbs.next(TAG.INTEGER, 'serialNumber');
  tbs.next(TAG.SEQUENCE, 'signature');
  tbs.next(TAG.SEQUENCE, 'issuer');
  const validity = DerReader.of(tbs.next(TAG.SEQUENCE, 'validity'));
  const notBefore = readTime(validity.next(undefined, 'notBefore'), 'notBefore');
  const notAfter = readTime(validity.next(undefined, 'notAfter'), 'notAfter');
  validity.expectDone('validity');
  const subject = formatName(parseName(tbs.next(TAG.SEQUENCE, 'subject').tlv));
  // The SPKI exactly as encoded: what the document's user_data must equal.
  const spkiDer = tbs.next(TAG.SEQUENCE, 'subjectPublicKeyInfo').tlv;
  tbs.optional(0x81, 'issuerUniqueID');
  tbs.optional(0x82, 'subjectUniqueID');
  const extEl = tbs.optional(0xa3, 'extensions');
  tbs.expectDone('tbsCertificate');
  let san: Uint8Array | undefined;
  if (extEl !== undefined) {
    const list = DerReader.of(readOne(extEl.value, TAG.SEQUENCE, 'extensions'));
    while (!list.done()) {
      const ext = DerReader.of(list.next(TAG.SEQUENCE, 'extension'));
      const id = readOid(ext.next(TAG.OID), 'extnID');
      ext.optional(TAG.BOOLEAN, `extension ${id} critical`);
      const value = ext.next(TAG.OCTET_STRING, `extension ${id} value`).value;
      ext.expectDone(`extension ${id}`);
      if (id !== OID_SAN) continue;
      if (san !== undefined) throw malformed('certificate has more than one subjectAltName extension');
      san = value;
    }
  }
  const dnsNames: string[] = [];
  if (san !== undefined) {
    try {
      const names = DerReader.of(readOne(san, TAG.SEQUENCE, 'subjectAltName'));
      while (!names.done()) {
        const gn = names.next(undefined, 'GeneralName');
        // dNSName is [2] IMPLICIT IA5String; the other name forms are skipped.
        if (gn.tag === DNS_NAME) dnsNames.push(readString({ ...gn, tag: TAG.IA5_STRING }, 'dNSName'));
      }
    } catch (err) {
      throw malformed(`certificate has an unreadable subjectAltName extension: ${(err as Error).message}`, err);
    }
  }
  return { spkiDer, subject, notBefore, notAfter, dnsNames };
}

/** Parses the certificate and pulls out its key bytes and the SAN document (not verified: see verifyAttestedCertificate). */
export function parseAttestedCertificate(input: Uint8Array | string): AttestedCertificate {
  const der = certificateDer(input);
  let fields: CertFields;
  try {
    fields = readCertFields(der);
  } catch (err) {
    if (err instanceof AttestedCertError) throw err;
    throw malformed(`certificate is not a valid X.509 certificate: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  const names = fields.dnsNames;
  // Evervault's rule: the longest first label across all dNSNames; of equally long ones the last (its reduce keeps
  // the later on a tie), so both pick the same document from a certificate holding two.
  let longest = -1;
  for (let i = 0; i < names.length; i++) {
    const label = names[i]!.split('.', 1)[0]!;
    if (longest < 0 || label.length >= names[longest]!.split('.', 1)[0]!.length) longest = i;
  }
  let document: Uint8Array | null = null;
  let docLabel: string | null = null;
  if (longest >= 0) {
    const label = names[longest]!.split('.', 1)[0]!;
    // A document is kilobytes; a short label is a plain host name.
    if (label.length > 64 && label.length <= MAX_DOCUMENT_BYTES * 2 && HEX_LABEL.test(label)) {
      document = fromHex(label.toLowerCase());
      docLabel = label;
    }
  }
  return {
    der,
    spkiDer: fields.spkiDer,
    subject: fields.subject,
    notBefore: fields.notBefore,
    notAfter: fields.notAfter,
    // Evervault repeats the document under every host name: none of those copies is a host name.
    hostnames: names.filter((n) => docLabel === null || n.split('.', 1)[0] !== docLabel),
    document,
  };
}

/**
 * Verifies the certificate's attestation: the document (its SAN's, or `exp.document`) passes verifyAttestation
 * with `exp`, and its user_data is the certificate's SPKI DER. Rejects with AttestedCertError
 * (ATTESTED_CERT_MALFORMED / _NO_DOCUMENT / _KEY_MISMATCH) or the AttestationError of the failed check.
 */
export async function verifyAttestedCertificate(input: Uint8Array | string, exp: AttestedCertExpectations = {}): Promise<VerifiedCertificate> {
  const certificate = parseAttestedCertificate(input);
  const { document: separate, ...verify } = exp;
  const documentBytes = separate ?? certificate.document;
  if (documentBytes === null || documentBytes === undefined) {
    throw new AttestedCertError(
      'ATTESTED_CERT_NO_DOCUMENT',
      `certificate (${certificate.subject}) carries no attestation document: no subjectAltName dNSName has a hex first label (found ${certificate.hostnames.length} name(s))`,
    );
  }
  const attestation = await verifyAttestation(documentBytes, verify);
  if (attestation.userData === null || !equalBytes(attestation.userData, certificate.spkiDer)) {
    throw new AttestedCertError(
      'ATTESTED_CERT_KEY_MISMATCH',
      `the document's user_data (${attestation.userData === null ? 'absent' : `${attestation.userData.length} bytes, SPKI ${toHex(attestation.userData).slice(-16)}…`}) is not the certificate's public key (SPKI DER, ${certificate.spkiDer.length} bytes, …${toHex(certificate.spkiDer).slice(-16)}): the document attests another key`,
    );
  }
  return { certificate, attestation, documentBytes };
}

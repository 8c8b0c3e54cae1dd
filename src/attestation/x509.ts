/**
 * Certificate parsing and path checks for the attestation chain. Browser-safe: pkijs/asn1js for parsing,
 * WebCrypto (globalThis.crypto.subtle) for signatures.
 *
 * The path is fixed by the document — [certificate, cabundle[n-1], …, cabundle[0]] — so there is no path
 * building: each certificate must name the next as issuer and carry its signature; issuers must be CAs
 * (basicConstraints cA, keyCertSign when keyUsage is present, pathLenConstraint respected); the leaf must
 * allow digitalSignature; unknown critical extensions are rejected (RFC 5280 §4.2); every certificate,
 * the trust anchor included, must be valid at the verification time. No revocation (AWS publishes none
 * that clients are expected to check; the reference client does not either).
 */
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { equalBytes, fromBase64, toHex } from '../util/bytes.ts';
import { AttestationError } from './errors.ts';

const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const CURVES: Record<string, { name: 'P-256' | 'P-384' | 'P-521'; size: number }> = {
  '1.2.840.10045.3.1.7': { name: 'P-256', size: 32 },
  '1.3.132.0.34': { name: 'P-384', size: 48 },
  '1.3.132.0.35': { name: 'P-521', size: 66 },
};
const SIG_HASH: Record<string, 'SHA-256' | 'SHA-384' | 'SHA-512'> = {
  '1.2.840.10045.4.3.2': 'SHA-256',
  '1.2.840.10045.4.3.3': 'SHA-384',
  '1.2.840.10045.4.3.4': 'SHA-512',
};
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';
/** Critical extensions we understand (and therefore may accept). */
const KNOWN_CRITICAL = new Set([OID_BASIC_CONSTRAINTS, OID_KEY_USAGE]);
const KU_DIGITAL_SIGNATURE = 0x80;
const KU_KEY_CERT_SIGN = 0x04;

export interface ParsedCert {
  der: Uint8Array;
  /** Hex of the DER: the cache identity of this exact certificate. */
  id: string;
  cert: pkijs.Certificate;
  subject: string;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  curve: { name: 'P-256' | 'P-384' | 'P-521'; size: number };
  /** Uncompressed EC point. */
  publicKey: Uint8Array;
  /** undefined when the extension is absent. */
  ca: { cA: boolean; pathLen?: number } | undefined;
  /** First byte of the keyUsage bit string; undefined when the extension is absent. */
  keyUsage: number | undefined;
}

function chainError(message: string, cause?: unknown): never {
  throw new AttestationError('ATTESTATION_CHAIN', message, cause === undefined ? undefined : { cause });
}

const ATTR_NAMES: Record<string, string> = {
  '2.5.4.3': 'CN', '2.5.4.6': 'C', '2.5.4.7': 'L', '2.5.4.8': 'ST', '2.5.4.10': 'O', '2.5.4.11': 'OU',
};

/** "CN=…, OU=…, O=…, C=…" in certificate order. */
export function formatName(name: pkijs.RelativeDistinguishedNames): string {
  return name.typesAndValues
    .map((tv) => `${ATTR_NAMES[tv.type] ?? tv.type}=${String((tv.value.valueBlock as { value?: unknown }).value ?? '')}`)
    .join(', ');
}

/**
 * RFC 5280 name match. Byte-identical DER names (what every Nitro chain has) match without pkijs's
 * isEqual, whose per-attribute string preparation is the largest single cost of a first verification
 * in a fresh process; anything else goes through isEqual as before.
 */
export function sameName(a: pkijs.RelativeDistinguishedNames, b: pkijs.RelativeDistinguishedNames): boolean {
  const x = a.valueBeforeDecode;
  const y = b.valueBeforeDecode;
  if (x.byteLength > 0 && x.byteLength === y.byteLength && equalBytes(new Uint8Array(x), new Uint8Array(y))) return true;
  return a.isEqual(b);
}

/** asn1js reports offsets relative to the underlying buffer: give it a view that starts at 0 and spans it all. */
function standalone(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? b : b.slice();
}

/** Parses one DER certificate. `label` names it in errors ("certificate", "cabundle[2]"). */
export function parseCertificate(der: Uint8Array, label: string): ParsedCert {
  let cert: pkijs.Certificate;
  try {
    const asn1 = asn1js.fromBER(standalone(der));
    if (asn1.offset === -1) throw new Error(asn1.result.error || 'BER decoding failed');
    if (asn1.offset !== der.byteLength) throw new Error(`${der.byteLength - asn1.offset} trailing byte(s)`);
    cert = new pkijs.Certificate({ schema: asn1.result });
  } catch (err) {
    chainError(`${label} is not a valid X.509 certificate: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  const subject = formatName(cert.subject);
  const spki = cert.subjectPublicKeyInfo;
  if (spki.algorithm.algorithmId !== OID_EC_PUBLIC_KEY) {
    chainError(`${label} (${subject}) has a ${spki.algorithm.algorithmId} key; expected an EC key`);
  }
  const params = spki.algorithm.algorithmParams;
  const curveOid = params instanceof asn1js.ObjectIdentifier ? params.valueBlock.toString() : '';
  const curve = CURVES[curveOid];
  if (!curve) chainError(`${label} (${subject}) uses unsupported curve ${curveOid || '(none)'}; expected P-256, P-384 or P-521`);
  const publicKey = spki.subjectPublicKey.valueBlock.valueHexView;
  if (publicKey.length !== 1 + 2 * curve.size || publicKey[0] !== 0x04) {
    chainError(`${label} (${subject}) public key is not an uncompressed ${curve.name} point`);
  }

  let ca: ParsedCert['ca'];
  let keyUsage: number | undefined;
  const seen = new Set<string>();
  for (const ext of cert.extensions ?? []) {
    if (seen.has(ext.extnID)) chainError(`${label} (${subject}) repeats extension ${ext.extnID}`);
    seen.add(ext.extnID);
    if (ext.extnID === OID_BASIC_CONSTRAINTS) {
      const bc = ext.parsedValue as pkijs.BasicConstraints | undefined;
      if (!(bc instanceof pkijs.BasicConstraints)) chainError(`${label} (${subject}) has an unreadable basicConstraints extension`);
      const pl = bc.pathLenConstraint;
      const pathLen = pl === undefined ? undefined : typeof pl === 'number' ? pl : pl.valueBlock.valueDec;
      ca = pathLen === undefined ? { cA: bc.cA } : { cA: bc.cA, pathLen };
    } else if (ext.extnID === OID_KEY_USAGE) {
      const ku = ext.parsedValue as asn1js.BitString | undefined;
      if (!(ku instanceof asn1js.BitString)) chainError(`${label} (${subject}) has an unreadable keyUsage extension`);
      keyUsage = ku.valueBlock.valueHexView[0] ?? 0;
    } else if (ext.critical && !KNOWN_CRITICAL.has(ext.extnID)) {
      chainError(`${label} (${subject}) has an unsupported critical extension ${ext.extnID}`);
    }
  }
  return {
    der,
    id: toHex(der),
    cert,
    subject,
    issuer: formatName(cert.issuer),
    notBefore: cert.notBefore.value,
    notAfter: cert.notAfter.value,
    curve,
    publicKey: new Uint8Array(publicKey),
    ca,
    keyUsage,
  };
}

/**
 * Content-addressed caches. The CA part of a Nitro chain is shared by every document of an instance for hours
 * (and the leaf by every document for up to 3 h), and pkijs parsing plus ECDSA dominate verification. Entries
 * are keyed by the exact DER bytes (and, for signatures, the exact issuer key), so a hit is the same
 * computation on the same input; only successes are cached. Validity times and names are re-checked on
 * every call. Bounded, oldest evicted first.
 */
const CACHE_MAX = 256;
const parsedCache = new Map<string, ParsedCert>();
const verifiedLinks = new Set<string>();

function remember<K>(cache: { size: number; keys(): IterableIterator<K>; delete(k: K): boolean }, add: () => void): void {
  if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as K);
  add();
}

/** parseCertificate through the content-addressed cache. Callers must treat the result as read-only. */
export function parseCertificateCached(der: Uint8Array, label: string): ParsedCert {
  const id = toHex(der);
  const hit = parsedCache.get(id);
  if (hit) return hit;
  const parsed = parseCertificate(der, label);
  remember(parsedCache, () => parsedCache.set(id, parsed));
  return parsed;
}

/** Forgets parsed certificates, verified signatures and imported keys (benchmarks measure the cold path). */
export function clearVerifierCaches(): void {
  parsedCache.clear();
  verifiedLinks.clear();
  keyCache.clear();
}

/** Strict DER ECDSA-Sig-Value → r ‖ s (each left-padded to the curve size). */
export function ecdsaDerToRaw(sig: Uint8Array, size: number): Uint8Array | undefined {
  const asn1 = asn1js.fromBER(standalone(sig));
  if (asn1.offset !== sig.byteLength) return undefined;
  const seq = asn1.result;
  if (!(seq instanceof asn1js.Sequence) || seq.valueBlock.value.length !== 2) return undefined;
  const out = new Uint8Array(2 * size);
  for (let i = 0; i < 2; i++) {
    const int = seq.valueBlock.value[i];
    if (!(int instanceof asn1js.Integer)) return undefined;
    let v = int.valueBlock.valueHexView;
    if (v.length === 0 || (v[0]! & 0x80) !== 0) return undefined; // empty or negative
    if (v.length > 1 && v[0] === 0) {
      if ((v[1]! & 0x80) === 0) return undefined; // non-minimal DER
      v = v.subarray(1);
    }
    if (v.length > size) return undefined;
    out.set(v, i * size + size - v.length);
  }
  return out;
}

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new AttestationError('ATTESTATION_CHAIN', 'WebCrypto (globalThis.crypto.subtle) is not available');
  return s;
}

const keyCache = new Map<string, Promise<CryptoKey>>();
const KEY_CACHE_MAX = 64;

/** Imports (and caches) an EC public key for ECDSA verification. */
export function importEcKey(point: Uint8Array, curve: string): Promise<CryptoKey> {
  const id = curve + toHex(point);
  let key = keyCache.get(id);
  if (!key) {
    key = subtle().importKey('raw', point as Uint8Array<ArrayBuffer>, { name: 'ECDSA', namedCurve: curve }, false, ['verify']);
    key.catch(() => keyCache.delete(id));
    if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(id, key);
  }
  return key;
}

/** True when `issuer`'s key made `child`'s signature. */
async function signedBy(child: ParsedCert, issuer: ParsedCert, label: string): Promise<boolean> {
  const c = child.cert;
  const algo = c.signatureAlgorithm.algorithmId;
  if (algo !== c.signature.algorithmId) chainError(`${label} (${child.subject}) has mismatched signature algorithms`);
  const hash = SIG_HASH[algo];
  if (!hash) chainError(`${label} (${child.subject}) is signed with unsupported algorithm ${algo}; expected ECDSA with SHA-256/384/512`);
  const link = `${child.id}|${issuer.curve.name}|${toHex(issuer.publicKey)}`;
  if (verifiedLinks.has(link)) return true;
  const ok = await verifySignature(child, issuer, label, hash);
  if (ok) remember(verifiedLinks, () => verifiedLinks.add(link));
  return ok;
}

async function verifySignature(child: ParsedCert, issuer: ParsedCert, label: string, hash: string): Promise<boolean> {
  const c = child.cert;
  const raw = ecdsaDerToRaw(c.signatureValue.valueBlock.valueHexView, issuer.curve.size);
  if (!raw) return false;
  const key = await importEcKey(issuer.publicKey, issuer.curve.name).catch((err: unknown) =>
    chainError(`${label === 'certificate' ? 'issuer' : 'issuer of ' + label} (${issuer.subject}) has an invalid ${issuer.curve.name} public key`, err),
  );
  return subtle().verify({ name: 'ECDSA', hash }, key, raw as Uint8Array<ArrayBuffer>, c.tbsView as Uint8Array<ArrayBuffer>);
}

function checkIssuerRights(issuer: ParsedCert, label: string, caCertsBelow: number): void {
  if (!issuer.ca?.cA) chainError(`${label} (${issuer.subject}) issues certificates but is not a CA (basicConstraints cA is not true)`);
  if (issuer.keyUsage !== undefined && (issuer.keyUsage & KU_KEY_CERT_SIGN) === 0) {
    chainError(`${label} (${issuer.subject}) issues certificates but its keyUsage lacks keyCertSign`);
  }
  if (issuer.ca.pathLen !== undefined && caCertsBelow > issuer.ca.pathLen) {
    chainError(`${label} (${issuer.subject}) allows ${issuer.ca.pathLen} CA certificate(s) below it; found ${caCertsBelow}`);
  }
}

function checkValidity(c: ParsedCert, label: string, at: Date): void {
  const t = at.getTime();
  if (t < c.notBefore.getTime() || t > c.notAfter.getTime()) {
    throw new AttestationError(
      'ATTESTATION_CERT_EXPIRED',
      `${label} (${c.subject}) is valid ${c.notBefore.toISOString()} → ${c.notAfter.toISOString()}; verification time is ${at.toISOString()}`,
    );
  }
}

/** A trusted root, parsed once. */
export interface TrustAnchor {
  parsed: ParsedCert;
}

export function pemToDer(pem: string): Uint8Array {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', 'root is not a PEM certificate (no BEGIN/END CERTIFICATE block)');
  try {
    return fromBase64(m[1]!.replace(/\s+/g, ''));
  } catch (err) {
    throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', 'root PEM has invalid base64', { cause: err });
  }
}

export function parseTrustAnchor(root: Uint8Array | string, label = 'trusted root'): TrustAnchor {
  const der = typeof root === 'string' ? pemToDer(root) : root;
  try {
    // Cached: the AWS root is also the top of every Nitro cabundle, so it is parsed once per process.
    return { parsed: parseCertificateCached(der, label) };
  } catch (err) {
    if (err instanceof AttestationError) throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', err.message, { cause: err });
    throw err;
  }
}

/**
 * Checks the document's chain [certificate, …cabundle reversed] to one of `anchors` at `at`. Returns the
 * leaf. The top of the bundle must either be a trusted root (byte-identical) or be issued by one.
 */
export async function verifyChain(certificate: Uint8Array, cabundle: Uint8Array[], anchors: TrustAnchor[], at: Date): Promise<ParsedCert> {
  const labels = ['certificate', ...cabundle.map((_, i) => `cabundle[${i}]`).reverse()];
  const path = [certificate, ...[...cabundle].reverse()].map((der, i) => parseCertificateCached(der, labels[i]!));
  const top = path[path.length - 1]!;

  // 1. Anchor: which trusted root does this path end at?
  let anchor = anchors.find((a) => equalBytes(a.parsed.der, top.der));
  const anchoredInPath = anchor !== undefined;
  if (!anchor) {
    for (const a of anchors) {
      if (sameName(a.parsed.cert.subject, top.cert.issuer) && (await signedBy(top, a.parsed, labels[path.length - 1]!).catch(() => false))) {
        anchor = a;
        break;
      }
    }
  }
  if (!anchor) {
    const trusted = anchors.map((a) => a.parsed.subject).join(' | ');
    throw new AttestationError(
      'ATTESTATION_UNTRUSTED_ROOT',
      `the chain ends at "${top.subject}" (issued by "${top.issuer}"), which is neither a trusted root nor issued by one; trusted: ${trusted}`,
    );
  }
  const full = anchoredInPath ? path : [...path, anchor.parsed];
  const fullLabels = anchoredInPath ? labels : [...labels, 'trusted root'];

  // 2. Links: names, issuer rights, signatures.
  const leaf = path[0]!;
  if (leaf.ca?.cA) chainError(`certificate (${leaf.subject}) is a CA certificate; expected an end-entity certificate`);
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KU_DIGITAL_SIGNATURE) === 0) {
    chainError(`certificate (${leaf.subject}) keyUsage lacks digitalSignature`);
  }
  if (leaf.curve.name !== 'P-384') chainError(`certificate (${leaf.subject}) has a ${leaf.curve.name} key; ES384 needs P-384`);
  const checks: Promise<void>[] = [];
  for (let i = 0; i + 1 < full.length; i++) {
    const child = full[i]!;
    const issuer = full[i + 1]!;
    if (!sameName(issuer.cert.subject, child.cert.issuer)) {
      chainError(`${fullLabels[i]} is issued by "${child.issuer}" but the next certificate up, ${fullLabels[i + 1]}, is "${issuer.subject}"`);
    }
    checkIssuerRights(issuer, fullLabels[i + 1]!, i /* CA certificates between issuer and leaf */);
    checks.push(
      signedBy(child, issuer, fullLabels[i]!).then((ok) => {
        if (!ok) chainError(`${fullLabels[i]} (${child.subject}) signature does not verify with the key of ${fullLabels[i + 1]} (${issuer.subject})`);
      }),
    );
  }
  const results = await Promise.allSettled(checks);
  for (const r of results) if (r.status === 'rejected') throw r.reason;

  // 3. Time: every certificate, the anchor included.
  full.forEach((c, i) => checkValidity(c, fullLabels[i]!, at));
  return leaf;
}

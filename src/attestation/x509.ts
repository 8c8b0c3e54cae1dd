/**
 * Certificate parsing and path checks for the attestation chain. Browser-safe: a strict DER reader (der.ts)
 * for parsing, the installed ECDSA backend (ecdsa.ts: WebCrypto, or node:crypto in Node) for signatures.
 *
 * The path is fixed by the document — [certificate, cabundle[n-1], …, cabundle[0]] — so there is no path
 * building: each certificate must name the next as issuer and carry its signature; issuers must be CAs
 * (basicConstraints cA, keyCertSign when keyUsage is present, pathLenConstraint respected); the leaf must
 * allow digitalSignature; unknown critical extensions are rejected (RFC 5280 §4.2); every certificate,
 * the trust anchor included, must be valid at the verification time. No revocation (AWS publishes none
 * that clients are expected to check; the reference client does not either).
 */
import { bytesKey, equalBytes, fromBase64, toHex } from '../util/bytes.ts';
import { DerError, DerReader, readBitString, readBoolean, readOid, readOne, readSmallUint, readString, readTime, TAG, type Tlv } from './der.ts';
import { CURVE_SIZE, ecdsaDerToRaw, ecdsaVerifier, type CurveName, type EcdsaHash } from './ecdsa.ts';
import { AttestationError } from './errors.ts';

const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const CURVES: Record<string, CurveName> = {
  '1.2.840.10045.3.1.7': 'P-256',
  '1.3.132.0.34': 'P-384',
  '1.3.132.0.35': 'P-521',
};
const SIG_HASH: Record<string, EcdsaHash> = {
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

/** A distinguished name: its DER and its attributes in certificate order (RDNs flattened). */
export interface Name {
  der: Uint8Array;
  attributes: { type: string; value: string }[];
}

export interface ParsedCert {
  der: Uint8Array;
  /** bytesKey of the DER: the cache identity of this exact certificate. */
  id: string;
  subject: string;
  issuer: string;
  subjectName: Name;
  issuerName: Name;
  notBefore: Date;
  notAfter: Date;
  curve: { name: CurveName; size: number };
  /** Uncompressed EC point. */
  publicKey: Uint8Array;
  /** SubjectPublicKeyInfo DER: what the signature backends import. */
  spki: Uint8Array;
  /** The signed bytes (TBSCertificate DER), the signature algorithm and the DER ECDSA-Sig-Value. */
  tbs: Uint8Array;
  signatureAlgorithm: string;
  signature: Uint8Array;
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

function readName(el: Tlv, what: string): Name {
  if (el.tag !== TAG.SEQUENCE) throw new DerError(`${what}: not a Name`);
  const attributes: Name['attributes'] = [];
  const rdns = DerReader.of(el);
  while (!rdns.done()) {
    const set = DerReader.of(rdns.next(TAG.SET, `${what} RDN`));
    if (set.done()) throw new DerError(`${what}: empty RDN`);
    while (!set.done()) {
      const atv = DerReader.of(set.next(TAG.SEQUENCE, `${what} attribute`));
      const type = readOid(atv.next(TAG.OID), `${what} attribute type`);
      const v = atv.next(undefined, `${what} attribute value`);
      atv.expectDone(`${what} attribute`);
      let value: string;
      try {
        value = readString(v, `${what} ${ATTR_NAMES[type] ?? type}`);
      } catch {
        value = `#${toHex(v.tlv)}`; // not a string type: RFC 4514's hex form, compared byte for byte
      }
      attributes.push({ type, value });
    }
  }
  return { der: el.tlv, attributes };
}

/** Parses a DER Name (exported for tests and tools). */
export function parseName(der: Uint8Array): Name {
  return readName(readOne(der, TAG.SEQUENCE, 'Name'), 'Name');
}

/** "CN=…, OU=…, O=…, C=…" in certificate order. */
export function formatName(name: Name): string {
  return name.attributes.map((a) => `${ATTR_NAMES[a.type] ?? a.type}=${a.value}`).join(', ');
}

/** RFC 5280 §7.1's caseIgnoreMatch, as commonly implemented: trimmed, inner spaces collapsed, case folded. */
function prepared(value: string): string {
  return value.trim().replace(/\s+/g, ' ').toLowerCase();
}

/**
 * RFC 5280 name match. Byte-identical DER names (what every Nitro chain has) match at once; otherwise the
 * attributes must agree in order and type, with values compared after string preparation.
 */
export function sameName(a: Name, b: Name): boolean {
  if (equalBytes(a.der, b.der)) return true;
  if (a.attributes.length !== b.attributes.length) return false;
  return a.attributes.every((x, i) => {
    const y = b.attributes[i]!;
    return x.type === y.type && prepared(x.value) === prepared(y.value);
  });
}

interface Extensions {
  ca: ParsedCert['ca'];
  keyUsage: number | undefined;
}

function readExtensions(el: Tlv | undefined, fail: (m: string) => never): Extensions {
  const out: Extensions = { ca: undefined, keyUsage: undefined };
  if (!el) return out;
  const wrapper = DerReader.of(el);
  const list = DerReader.of(wrapper.next(TAG.SEQUENCE, 'extensions'));
  wrapper.expectDone('extensions');
  const seen = new Set<string>();
  while (!list.done()) {
    const ext = DerReader.of(list.next(TAG.SEQUENCE, 'extension'));
    const id = readOid(ext.next(TAG.OID), 'extnID');
    const crit = ext.optional(TAG.BOOLEAN);
    const critical = crit ? readBoolean(crit, `extension ${id} critical`) : false;
    if (crit && !critical) throw new DerError(`extension ${id}: critical FALSE must be omitted in DER`);
    const value = ext.next(TAG.OCTET_STRING, `extension ${id} value`).value;
    ext.expectDone(`extension ${id}`);
    if (seen.has(id)) fail(`repeats extension ${id}`);
    seen.add(id);
    try {
      if (id === OID_BASIC_CONSTRAINTS) {
        const outer = new DerReader(value);
        const bc = DerReader.of(outer.next(TAG.SEQUENCE));
        outer.expectDone('basicConstraints');
        const caEl = bc.optional(TAG.BOOLEAN);
        const cA = caEl ? readBoolean(caEl, 'cA') : false;
        const pl = bc.optional(TAG.INTEGER);
        bc.expectDone('basicConstraints');
        out.ca = pl ? { cA, pathLen: readSmallUint(pl, 'pathLenConstraint') } : { cA };
      } else if (id === OID_KEY_USAGE) {
        const r = new DerReader(value);
        const ku = readBitString(r.next(TAG.BIT_STRING), 'keyUsage');
        r.expectDone('keyUsage');
        out.keyUsage = ku.bits[0] ?? 0;
      }
    } catch (err) {
      fail(`has an unreadable ${id === OID_KEY_USAGE ? 'keyUsage' : 'basicConstraints'} extension: ${(err as Error).message}`);
    }
    if (critical && !KNOWN_CRITICAL.has(id)) fail(`has an unsupported critical extension ${id}`);
  }
  return out;
}

/** Parses one DER certificate. `label` names it in errors ("certificate", "cabundle[2]"). */
export function parseCertificate(der: Uint8Array, label: string): ParsedCert {
  try {
    return parseCertificateDer(der, label);
  } catch (err) {
    if (err instanceof AttestationError) throw err;
    chainError(`${label} is not a valid X.509 certificate: ${err instanceof Error ? err.message : String(err)}`, err);
  }
}

function parseCertificateDer(der: Uint8Array, label: string): ParsedCert {
  const top = new DerReader(der);
  const certEl = top.next(TAG.SEQUENCE, 'Certificate');
  if (!top.done()) throw new DerError(`${der.length - certEl.tlv.length} trailing byte(s)`);
  const cert = DerReader.of(certEl);
  const tbsEl = cert.next(TAG.SEQUENCE, 'tbsCertificate');
  const outerAlg = cert.next(TAG.SEQUENCE, 'signatureAlgorithm');
  const signature = readBitString(cert.next(TAG.BIT_STRING, 'signatureValue'), 'signatureValue');
  cert.expectDone('Certificate');
  if (signature.unused !== 0) throw new DerError('signatureValue has unused bits');

  const tbs = DerReader.of(tbsEl);
  const versionEl = tbs.optional(0xa0, 'version');
  let version = 0;
  if (versionEl) {
    const v = DerReader.of(versionEl);
    version = readSmallUint(v.next(TAG.INTEGER), 'version');
    v.expectDone('version');
    if (version === 0 || version > 2) throw new DerError(`version ${version + 1} is not 2 or 3`);
  }
  tbs.next(TAG.INTEGER, 'serialNumber');
  const innerAlg = tbs.next(TAG.SEQUENCE, 'signature');
  const issuerName = readName(tbs.next(TAG.SEQUENCE, 'issuer'), 'issuer');
  const validity = DerReader.of(tbs.next(TAG.SEQUENCE, 'validity'));
  const notBefore = readTime(validity.next(undefined, 'notBefore'), 'notBefore');
  const notAfter = readTime(validity.next(undefined, 'notAfter'), 'notAfter');
  validity.expectDone('validity');
  const subjectName = readName(tbs.next(TAG.SEQUENCE, 'subject'), 'subject');
  const spkiEl = tbs.next(TAG.SEQUENCE, 'subjectPublicKeyInfo');
  tbs.optional(0x81, 'issuerUniqueID');
  tbs.optional(0x82, 'subjectUniqueID');
  const extEl = tbs.optional(0xa3, 'extensions');
  tbs.expectDone('tbsCertificate');
  if (extEl && version !== 2) throw new DerError('extensions in a certificate that is not version 3');

  const subject = formatName(subjectName);
  const fail = (m: string): never => chainError(`${label} (${subject}) ${m}`);
  if (!equalBytes(outerAlg.tlv, innerAlg.tlv)) fail('has mismatched signature algorithms');
  const algR = DerReader.of(outerAlg);
  const signatureAlgorithm = readOid(algR.next(TAG.OID), 'signature algorithm');

  const spki = DerReader.of(spkiEl);
  const alg = DerReader.of(spki.next(TAG.SEQUENCE, 'SPKI algorithm'));
  const keyAlg = readOid(alg.next(TAG.OID), 'SPKI algorithm');
  if (keyAlg !== OID_EC_PUBLIC_KEY) fail(`has a ${keyAlg} key; expected an EC key`);
  const params = alg.optional(TAG.OID);
  const curveOid = params ? readOid(params, 'curve') : '';
  alg.expectDone('SPKI algorithm');
  const key = readBitString(spki.next(TAG.BIT_STRING, 'subjectPublicKey'), 'subjectPublicKey');
  spki.expectDone('subjectPublicKeyInfo');
  const curveName = CURVES[curveOid];
  if (!curveName) return fail(`uses unsupported curve ${curveOid || '(none)'}; expected P-256, P-384 or P-521`);
  const size = CURVE_SIZE[curveName];
  if (key.unused !== 0 || key.bits.length !== 1 + 2 * size || key.bits[0] !== 0x04) fail(`public key is not an uncompressed ${curveName} point`);

  const { ca, keyUsage } = readExtensions(extEl, fail);
  return {
    der,
    id: bytesKey(der),
    subject,
    issuer: formatName(issuerName),
    subjectName,
    issuerName,
    notBefore,
    notAfter,
    curve: { name: curveName, size },
    publicKey: key.bits.slice(),
    spki: spkiEl.tlv,
    tbs: tbsEl.tlv,
    signatureAlgorithm,
    signature: signature.bits,
    ca,
    keyUsage,
  };
}

/**
 * Content-addressed caches. The CA part of a Nitro chain is shared by every document of an instance for hours
 * (and the leaf by every document for up to 3 h), and parsing plus ECDSA dominate verification. Entries
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

/**
 * parseCertificate through the content-addressed cache. Callers must treat the result as read-only. A miss parses
 * a private copy: a ParsedCert's fields are views into the DER it was given, and the caller keeps that buffer (the
 * verified document's `certificate` is handed to the SDK user): a later write there must not change what the
 * entry, still keyed by the old bytes, vouches for.
 */
export function parseCertificateCached(der: Uint8Array, label: string): ParsedCert {
  const id = bytesKey(der);
  const hit = parsedCache.get(id);
  if (hit) return hit;
  const parsed = parseCertificate(der.slice(), label);
  remember(parsedCache, () => parsedCache.set(id, parsed));
  return parsed;
}

/** Forgets parsed certificates, verified signatures and imported keys (benchmarks measure the cold path). */
export function clearVerifierCaches(): void {
  parsedCache.clear();
  verifiedLinks.clear();
  ecdsaVerifier().clearCache();
}

function signatureHash(child: ParsedCert, label: string): EcdsaHash {
  const hash = SIG_HASH[child.signatureAlgorithm];
  if (!hash) chainError(`${label} (${child.subject}) is signed with unsupported algorithm ${child.signatureAlgorithm}; expected ECDSA with SHA-256/384/512`);
  return hash;
}

/** True when `issuer`'s key made `child`'s signature. */
async function signedBy(child: ParsedCert, issuer: ParsedCert, label: string): Promise<boolean> {
  const hash = signatureHash(child, label);
  const link = `${child.id}|${bytesKey(issuer.spki)}`;
  if (verifiedLinks.has(link)) return true;
  const raw = ecdsaDerToRaw(child.signature, issuer.curve.size);
  if (!raw) return false;
  let ok: boolean;
  try {
    ok = await ecdsaVerifier().verify(issuer.spki, issuer.curve.name, hash, raw, child.tbs);
  } catch (err) {
    chainError(`${label === 'certificate' ? 'issuer' : 'issuer of ' + label} (${issuer.subject}) has an invalid ${issuer.curve.name} public key`, err);
  }
  if (ok) remember(verifiedLinks, () => verifiedLinks.add(link));
  return ok;
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

/** The DER of a PEM holding exactly one certificate: a bundle is refused, not read as its first certificate. */
export function pemToDer(pem: string): Uint8Array {
  const blocks = [...pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)];
  const m = blocks[0];
  if (m === undefined) throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', 'root is not a PEM certificate (no BEGIN/END CERTIFICATE block)');
  if (blocks.length > 1) {
    throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `root PEM holds ${blocks.length} certificates; give each trusted root as its own entry`);
  }
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
      if (sameName(a.parsed.subjectName, top.issuerName) && (await signedBy(top, a.parsed, labels[path.length - 1]!).catch(() => false))) {
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
  // Every synchronous check of every link runs before any signature check starts: a throw part-way through
  // the loop would otherwise leave earlier signature promises running with nobody to handle their rejection
  // (an unhandled rejection kills the SDK user's process and the CLI).
  for (let i = 0; i + 1 < full.length; i++) {
    const child = full[i]!;
    const issuer = full[i + 1]!;
    if (!sameName(issuer.subjectName, child.issuerName)) {
      chainError(`${fullLabels[i]} is issued by "${child.issuer}" but the next certificate up, ${fullLabels[i + 1]}, is "${issuer.subject}"`);
    }
    checkIssuerRights(issuer, fullLabels[i + 1]!, i /* CA certificates between issuer and leaf */);
    signatureHash(child, fullLabels[i]!);
  }
  const checks: Promise<void>[] = [];
  for (let i = 0; i + 1 < full.length; i++) {
    const child = full[i]!;
    const issuer = full[i + 1]!;
    const check = signedBy(child, issuer, fullLabels[i]!).then((ok) => {
      if (!ok) chainError(`${fullLabels[i]} (${child.subject}) signature does not verify with the key of ${fullLabels[i + 1]} (${issuer.subject})`);
    });
    check.catch(() => {}); // handled below through allSettled; this only keeps it from ever counting as unhandled
    checks.push(check);
  }
  const results = await Promise.allSettled(checks);
  for (const r of results) if (r.status === 'rejected') throw r.reason;

  // 3. Time: every certificate, the anchor included.
  full.forEach((c, i) => checkValidity(c, fullLabels[i]!, at));
  return leaf;
}

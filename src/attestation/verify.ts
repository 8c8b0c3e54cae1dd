/**
 * verifyAttestation: everything a client must check before it trusts an enclave (WIRE.md §6), in order:
 * 1. structure (document.ts); 2. unless `debug`: the chain from `certificate` through `cabundle` to a
 * trusted root at `now`, then the ES384 COSE signature with the leaf key; 3. nonce (and user_data, when given); 4. PCRs 0/1/2/8 present
 * and every pinned one (any of PCR0…PCR31) equal; 5. optional maximum age (and, with it, no timestamp beyond now + the allowed clock
 * skew). Each failure is an AttestationError with its own code.
 *
 * Browser-safe: no node:* imports, no Buffer; signatures go through the installed ECDSA backend (ecdsa.ts:
 * WebCrypto by default, node:crypto once a Node entry point imports ecdsa-node.ts).
 */
import { bytesKey, equalBytes, fromHex, toHex } from '../util/bytes.ts';
import { AWS_NITRO_ROOT_G1_PEM } from './aws-root.ts';
import { coseSign1SigStructure, parseAttestationDocument, type AttestationDocument } from './document.ts';
import { AttestationError } from './errors.ts';
import { ecdsaVerifier } from './ecdsa.ts';
import { parseCertificateCached, parseTrustAnchor, pemToDer, verifyChain, type TrustAnchor } from './x509.ts';

export { AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_SHA256 } from './aws-root.ts';

/**
 * Pinned PCR values, hex (any case) or bytes. PCR0, PCR1 and PCR2 are required; any other PCR up to PCR31 (PCR3:
 * the parent's IAM role, PCR4: its instance id, PCR8: the signing certificate, ...) is compared when given.
 * Key names are case-sensitive and exact ("PCR8", not "pcr8" or "PCR08"): any other key is rejected
 * (ATTESTATION_BAD_EXPECTATIONS), so a misspelt pin can never be silently ignored. The one exception is
 * nitro-cli's "HashAlgorithm" field of its Measurements object, accepted when it names SHA-384 (the only digest
 * a Nitro document uses).
 */
export interface PcrPins {
  PCR0: string | Uint8Array;
  PCR1: string | Uint8Array;
  PCR2: string | Uint8Array;
  PCR8?: string | Uint8Array;
  [pcr: `PCR${number}`]: string | Uint8Array | undefined;
}

export interface VerifyExpectations {
  /** Trusted roots, DER or PEM. Default: the AWS Nitro root G1 (checked against its pinned SHA-256). */
  roots?: (Uint8Array | string)[];
  /**
   * The PCR set the enclave must report, or several allowed sets (rolling deploys): the document passes when
   * it matches any one. Omitted: PCRs 0/1/2/8 must still be present, but no value is compared — only for
   * callers that inspect `pcrs` themselves.
   */
  pcrs?: PcrPins | PcrPins[];
  /** Must equal the document's nonce byte for byte (e.g. the Noise handshake hash). */
  nonce?: Uint8Array;
  /**
   * Must equal the document's user_data byte for byte. A Noise session passes the Attestation message's
   * control_nonce (the agent and the reference server put it there, WIRE.md): with the nonce, that keeps a
   * document made for another purpose (a TLS certificate's, user_data = its key) from passing as the session's.
   */
  userData?: Uint8Array;
  /**
   * Reject documents whose `timestamp` is more than this many ms before `now` — and, since a freshness bound
   * means nothing for a document dated later, documents dated more than `maxFutureSkewMs` after `now`
   * (ATTESTATION_FROM_FUTURE).
   */
  maxAgeMs?: number;
  /** With `maxAgeMs`: how far the document's clock may run ahead of `now`. Default 60 000 ms (DEFAULT_MAX_FUTURE_SKEW_MS). */
  maxFutureSkewMs?: number;
  /** Verification time (certificate windows, maxAgeMs). Default: the current time. */
  now?: Date | number;
  /** Skip the chain and the COSE signature (debug-mode clients); every other check still runs. */
  debug?: boolean;
  /** Treat an empty `public_key` as absent instead of rejecting the document (see document.ts). */
  allowEmptyPublicKey?: boolean;
  /**
   * Accept a document from a debug-mode enclave (PCR0/1/2 all zero) while still checking its chain and
   * signature. Without this (or `debug`), such a document is refused even when the caller pinned zeros:
   * anyone can launch any code in debug mode, and the host can read its memory.
   */
  allowDebugEnclave?: boolean;
}

/** How far a document's timestamp may lie after the verifier's clock when `maxAgeMs` is checked. */
export const DEFAULT_MAX_FUTURE_SKEW_MS = 60_000;

const REQUIRED_PCRS = [0, 1, 2, 8] as const;
/** All zero in a debug-mode enclave. */
const DEBUG_PCRS = [0, 1, 2] as const;
const REQUIRED_PINS = [0, 1, 2] as const;
/** Nitro documents carry at most 32 PCRs (document.ts MAX_PCRS), keyed 0…31. */
const PIN_NAME = /^PCR([0-9]|[12][0-9]|3[01])$/;
/** nitro-cli's Measurements object carries this beside the PCRs, e.g. "Sha384 { ... }". */
const HASH_ALGORITHM_KEY = 'HashAlgorithm';

/**
 * The PCR index a pin key names, or an error message for a key that names none (exported for the CLI, which
 * reports it as a usage error). `HashAlgorithm` yields null: not a PCR, but accepted when it says SHA-384.
 */
export function pinKeyIndex(key: string, value: unknown): number | null | { error: string } {
  const m = PIN_NAME.exec(key);
  if (m) return Number(m[1]);
  if (key === HASH_ALGORITHM_KEY) {
    if (typeof value === 'string' && /^sha-?384\b/i.test(value)) return null;
    return { error: `${key} must name SHA-384 (Nitro documents use only SHA-384); found ${JSON.stringify(String(value)).slice(0, 40)}` };
  }
  const loose = /^pcr0*([0-9]+)$/i.exec(key);
  const near = loose && Number(loose[1]) < 32 ? `PCR${Number(loose[1])}` : undefined;
  const hint = near === undefined ? '' : `; did you mean ${near}?${key.toUpperCase() === near ? ' (names are case-sensitive)' : ''}`;
  return { error: `${JSON.stringify(key).slice(0, 40)} is not a PCR name; expected PCR0…PCR31${hint}` };
}

let awsAnchor: TrustAnchor | undefined;
const anchorCache = new Map<string, TrustAnchor>();
const ANCHOR_CACHE_MAX = 16;

function defaultAnchor(): TrustAnchor {
  // The embedded root is AWS's, byte for byte (test/attestation/aws-root.test.ts checks its published SHA-256).
  awsAnchor ??= parseTrustAnchor(pemToDer(AWS_NITRO_ROOT_G1_PEM), 'AWS Nitro root G1');
  return awsAnchor;
}

function anchorFor(root: Uint8Array | string, i: number): TrustAnchor {
  if (typeof root !== 'string' && !(root instanceof Uint8Array)) {
    throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `roots[${i}] must be DER bytes or PEM text`);
  }
  const id = typeof root === 'string' ? `pem:${root}` : `der:${bytesKey(root)}`;
  let a = anchorCache.get(id);
  if (!a) {
    a = parseTrustAnchor(root, `roots[${i}]`);
    if (anchorCache.size >= ANCHOR_CACHE_MAX) anchorCache.delete(anchorCache.keys().next().value!);
    anchorCache.set(id, a);
  }
  return a;
}

function pinBytes(v: string | Uint8Array | undefined, name: string): Uint8Array | undefined {
  if (v === undefined) return undefined;
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') {
    const hex = v.startsWith('0x') ? v.slice(2) : v;
    try {
      return fromHex(hex);
    } catch {
      /* fall through */
    }
  }
  throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `${name} must be hex text or bytes; found ${JSON.stringify(String(v)).slice(0, 40)}`);
}

/** PCR index → pinned value, in index order. */
type NormalizedPins = Map<number, Uint8Array>;

function normalizePins(pins: PcrPins | PcrPins[]): NormalizedPins[] {
  const list = Array.isArray(pins) ? pins : [pins];
  if (list.length === 0) throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', 'pcrs is an empty list; give at least one allowed PCR set');
  return list.map((p, i) => {
    const where = list.length > 1 ? `pcrs[${i}]` : 'pcrs';
    if (p === null || typeof p !== 'object' || Array.isArray(p) || p instanceof Uint8Array) {
      throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `${where} must be an object { PCR0, PCR1, PCR2, ... }`);
    }
    const out: NormalizedPins = new Map();
    for (const [k, v] of Object.entries(p as unknown as Record<string, unknown>)) {
      const index = pinKeyIndex(k, v);
      if (index === null) continue;
      if (typeof index === 'object') throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `${where}: ${index.error}`);
      const b = pinBytes(v as string | Uint8Array | undefined, `${where}.${k}`);
      if (b === undefined) continue; // { PCR8: undefined }: not pinned, as for an absent optional field
      if (b.length !== 32 && b.length !== 48 && b.length !== 64) {
        throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `${where}.${k} must be 32, 48 or 64 bytes (SHA-384 PCRs are 48); found ${b.length}`);
      }
      out.set(index, b);
    }
    for (const r of REQUIRED_PINS) {
      if (!out.has(r)) throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `${where}.PCR${r} is required`);
    }
    return new Map([...out].sort(([a], [b]) => a - b));
  });
}

function checkPcrs(doc: AttestationDocument, pins: NormalizedPins[]): void {
  const failures: { message: string; onlyAbsent: boolean }[] = [];
  for (const set of pins) {
    const wrong = [...set].filter(([i, want]) => {
      const found = doc.pcrs.get(i);
      return found === undefined || !equalBytes(want, found);
    });
    if (wrong.length === 0) return;
    failures.push({
      message: wrong
        .map(([i, want]) => {
          const found = doc.pcrs.get(i);
          return `PCR${i} expected ${toHex(want)}, found ${found === undefined ? 'none (the document has no PCR' + i + ')' : toHex(found)}`;
        })
        .join('; '),
      onlyAbsent: wrong.every(([i]) => !doc.pcrs.has(i)),
    });
  }
  if (pins.length === 1) {
    throw new AttestationError(failures[0]!.onlyAbsent ? 'ATTESTATION_PCR_MISSING' : 'ATTESTATION_PCR_MISMATCH', failures[0]!.message);
  }
  const message = `the document matches none of the ${pins.length} allowed PCR sets: ${failures.map((f, i) => `[${i}] ${f.message}`).join(' | ')}`;
  throw new AttestationError('ATTESTATION_PCR_MISMATCH', message);
}

/** A timestamp as ISO text, or the raw number when it lies outside Date's range. */
function isoOrNumber(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `${ms} ms` : d.toISOString();
}

/**
 * A boolean option: absent means false. Anything but true/false is the caller's mistake, refused: a truthy
 * string such as "false" (from an environment variable) must never switch a check off.
 */
function flag(exp: VerifyExpectations, name: 'debug' | 'allowDebugEnclave' | 'allowEmptyPublicKey'): boolean {
  const v: unknown = exp[name];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') {
    throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `${name} must be true or false; found ${JSON.stringify(typeof v === 'string' ? v.slice(0, 20) : typeof v === 'object' ? typeof v : v)}`);
  }
  return v;
}

function toDate(now: Date | number | undefined): Date {
  if (now === undefined) return new Date();
  const d = now instanceof Date ? now : new Date(now);
  if (Number.isNaN(d.getTime())) throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', 'now is not a valid time');
  return d;
}

/**
 * Verifies a Nitro attestation document (COSE_Sign1 bytes) against `exp`. Resolves to the decoded document
 * when every check passes; rejects with an AttestationError naming the first failed check otherwise.
 */
export async function verifyAttestation(doc: Uint8Array, exp: VerifyExpectations = {}): Promise<AttestationDocument> {
  // Validate expectations before touching the document, so a caller's mistake never reads as a bad enclave.
  const at = toDate(exp.now);
  const debug = flag(exp, 'debug');
  const allowDebugEnclave = flag(exp, 'allowDebugEnclave');
  const allowEmptyPublicKey = flag(exp, 'allowEmptyPublicKey');
  const pins = exp.pcrs === undefined ? undefined : normalizePins(exp.pcrs);
  for (const k of ['nonce', 'userData'] as const) {
    if (exp[k] !== undefined && !(exp[k] instanceof Uint8Array)) throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `${k} must be a Uint8Array`);
  }
  if (exp.maxAgeMs !== undefined && !(Number.isFinite(exp.maxAgeMs) && exp.maxAgeMs >= 0)) {
    throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `maxAgeMs must be a non-negative number; found ${exp.maxAgeMs}`);
  }
  const skew = exp.maxFutureSkewMs ?? DEFAULT_MAX_FUTURE_SKEW_MS;
  if (!(typeof skew === 'number' && Number.isFinite(skew) && skew >= 0)) {
    throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', `maxFutureSkewMs must be a non-negative number; found ${String(exp.maxFutureSkewMs)}`);
  }
  const anchors = debug
    ? []
    : exp.roots === undefined
      ? [defaultAnchor()]
      : exp.roots.map((r, i) => anchorFor(r, i));
  if (!debug && anchors.length === 0) throw new AttestationError('ATTESTATION_BAD_EXPECTATIONS', 'roots is empty');

  // 1. Structure.
  const { cose, document } = parseAttestationDocument(doc, { allowEmptyPublicKey });

  if (!debug) {
    // 2. Chain, then the COSE signature with the leaf key. The signature check starts alongside the chain's
    //    (WebCrypto runs them off the main thread); its result is only looked at once the chain has passed.
    const early = parseCertificateCached(document.certificate, 'certificate');
    const coseCheck = Promise.resolve()
      .then(() => ecdsaVerifier().verify(early.spki, 'P-384', 'SHA-384', cose.signature, coseSign1SigStructure(cose.protectedBytes, cose.payload)))
      .then(
        (ok) => ({ ok, err: undefined as unknown }),
        (err: unknown) => ({ ok: false, err }),
      );
    const leaf = await verifyChain(document.certificate, document.cabundle, anchors, at);
    const { ok, err } = await coseCheck;
    if (err !== undefined) {
      throw new AttestationError('ATTESTATION_CHAIN', `certificate (${leaf.subject}) has an invalid P-384 public key`, { cause: err });
    }
    if (!ok) {
      throw new AttestationError('ATTESTATION_SIGNATURE', `COSE_Sign1 ES384 signature does not verify with the key of certificate (${leaf.subject})`);
    }
  }

  // 3. Nonce, then user_data.
  if (exp.nonce !== undefined) {
    if (document.nonce === null || !equalBytes(exp.nonce, document.nonce)) {
      throw new AttestationError(
        'ATTESTATION_NONCE_MISMATCH',
        `nonce expected ${toHex(exp.nonce)} (${exp.nonce.length} bytes), found ${document.nonce === null ? 'none' : `${toHex(document.nonce)} (${document.nonce.length} bytes)`}`,
      );
    }
  }

  if (exp.userData !== undefined) {
    if (document.userData === null || !equalBytes(exp.userData, document.userData)) {
      throw new AttestationError(
        'ATTESTATION_USER_DATA_MISMATCH',
        `user_data expected ${toHex(exp.userData)} (${exp.userData.length} bytes), found ${document.userData === null ? 'none' : `${document.userData.length} bytes`}`,
      );
    }
  }

  // 4. PCRs.
  const missing = REQUIRED_PCRS.filter((i) => !document.pcrs.has(i));
  if (missing.length > 0) {
    throw new AttestationError(
      'ATTESTATION_PCR_MISSING',
      `PCR ${missing.join(', ')} missing; expected PCRs 0, 1, 2 and 8, found ${[...document.pcrs.keys()].join(', ')}`,
    );
  }
  if (!debug && !allowDebugEnclave && DEBUG_PCRS.every((i) => document.pcrs.get(i)!.every((b) => b === 0))) {
    throw new AttestationError(
      'ATTESTATION_DEBUG_ENCLAVE',
      'PCR0, PCR1 and PCR2 are all zero: the document comes from a debug-mode enclave; expected a production enclave (use debug or allowDebugEnclave to accept it)',
    );
  }
  if (pins) checkPcrs(document, pins);

  // 5. Age.
  if (exp.maxAgeMs !== undefined) {
    const age = at.getTime() - document.timestamp;
    if (age > exp.maxAgeMs) {
      throw new AttestationError(
        'ATTESTATION_TOO_OLD',
        `document timestamp ${new Date(document.timestamp).toISOString()} is ${age} ms before ${at.toISOString()}; at most ${exp.maxAgeMs} ms accepted`,
      );
    }
    if (-age > skew) {
      throw new AttestationError(
        'ATTESTATION_FROM_FUTURE',
        `document timestamp ${isoOrNumber(document.timestamp)} is ${-age} ms after ${at.toISOString()}; at most ${skew} ms of clock skew accepted`,
      );
    }
  }
  return document;
}

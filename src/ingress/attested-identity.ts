// What the TLS ingress presents: the boot key, the certificate carrying the current attestation document
// (re-issued before the NSM certificate inside it expires), fresh-nonce certificates for SNI
// `<nonce>.attest.<host>` (budgeted per process and per client: nonce-budget.ts; a small bounded cache), and the
// /.well-known/attestation document.
// Format: attested-cert.ts. The clock is injectable so rotation is testable.
import { createSecureContext, type SecureContext } from 'node:tls';
import { randomBytes } from 'node:crypto';
import type { Nsm } from '../attestation/nsm.ts';
import { callerNonceRefusal } from '../attestation/caller-nonce.ts';
import { parseAttestationDocument } from '../attestation/document.ts';
import { parseCertificate } from '../attestation/x509.ts';
import { buildAttestedCertificate, certificatePem, generateIngressKey, type IngressKey } from './attested-cert.ts';
import { IngressError } from './errors.ts';
import { NonceBudget, type Rate } from './nonce-budget.ts';
import { nonceFromSni } from './sni-nonce.ts';
import type { IngressIdentity } from './tls-ingress.ts';
import { INGRESS_TLS_OPTIONS } from './tls-options.ts';

export interface AttestedIdentityOptions {
  nsm: Nsm;
  /** `<host>` of the default certificate (default "localhost"). */
  host?: string;
  /** ms since the epoch (default Date.now). */
  now?: () => number;
  /** Re-issue this long before the NSM certificate's notAfter (default 10 min). */
  rotateBeforeMs?: number;
  /**
   * Documents for client nonces (fresh-nonce certificates, /.well-known?nonce=): a token bucket of `burst` refilled
   * at `perSecond` for the process (default 20 and 20) and one per client (default 5 and 10; nonce-budget.ts).
   */
  nonceRate?: Rate;
  nonceRatePerClient?: Rate;
  /** Fresh-nonce certificates kept for a client that reconnects with the same SNI (default 64). */
  nonceCacheSize?: number;
}

export interface IssuedCertificate {
  readonly der: Uint8Array;
  readonly document: Uint8Array;
  /** ms since the epoch: the NSM signing certificate's notAfter (also the leaf's). */
  readonly notAfter: number;
  readonly context: SecureContext;
  /** SPKI DER of its key (the document's user_data). */
  readonly spkiDer: Uint8Array;
  /**
   * Its private key (PKCS#8 PEM), for a session worker to build the same context (identity-proxy.ts: it crosses
   * threads in-process only). Not enumerable, so that no logged or serialised object carries it.
   */
  readonly keyPem: string;
}


/**
 * A default certificate that is due the moment it is issued (the NSM certificate in it expires within the rotation
 * margin by this clock) is served this long before the next attempt: re-issuing per handshake would cost every
 * connection an NSM call, on the NSM attested Noise sessions share.
 */
export const DUE_AT_ISSUE_RETRY_MS = 30_000;

/** How long a /.well-known document without a client nonce is reused for the same key. */
export const WELL_KNOWN_TTL_MS = 60_000;

export class AttestedIdentity implements IngressIdentity {
  readonly host: string;
  readonly #nsm: Nsm;
  readonly #now: () => number;
  readonly #rotateBeforeMs: number;
  readonly #budget: NonceBudget;
  readonly #cacheSize: number;
  #key: IngressKey | undefined;
  #current: IssuedCertificate | undefined;
  #issuing: Promise<IssuedCertificate> | undefined;
  /** Not before (ms since the epoch): set when the default certificate came back due already. */
  #reissueAfter = 0;
  readonly #nonceCache = new Map<string, IssuedCertificate>();
  /** /.well-known documents without a client nonce, per served key (hex SPKI): reused for WELL_KNOWN_TTL_MS. */
  readonly #wellKnown = new Map<string, { at: number; document: Promise<Uint8Array> }>();
  /** Certificates issued so far (the boot one and rotations; not the fresh-nonce ones). */
  rotations = 0;
  /** Runs after each default certificate is issued (the boot one and rotations), before current() resolves. */
  onIssued: ((issued: IssuedCertificate) => void) | undefined;

  constructor(opts: AttestedIdentityOptions) {
    this.#nsm = opts.nsm;
    this.host = (opts.host ?? 'localhost').toLowerCase();
    this.#now = opts.now ?? Date.now;
    this.#rotateBeforeMs = opts.rotateBeforeMs ?? 10 * 60_000;
    this.#budget = new NonceBudget({
      now: this.#now,
      ...(opts.nonceRate === undefined ? {} : { total: opts.nonceRate }),
      ...(opts.nonceRatePerClient === undefined ? {} : { perClient: opts.nonceRatePerClient }),
    });
    this.#cacheSize = opts.nonceCacheSize ?? 64;
  }

  /** The key served by default: its SPKI DER is every default document's user_data. */
  get spkiDer(): Uint8Array {
    if (this.#key === undefined) throw new IngressError('INGRESS_BAD_OPTIONS', 'AttestedIdentity used before current()');
    return this.#key.spkiDer;
  }

  /** The default certificate, re-issued first when it is due (now ≥ notAfter − rotateBeforeMs). */
  async current(): Promise<IssuedCertificate> {
    const c = this.#current;
    if (c !== undefined && !this.#defaultDue(c)) return c;
    this.#issuing ??= this.#issueDefault().finally(() => (this.#issuing = undefined));
    return this.#issuing;
  }

  /**
   * What a handshake gets by default: current(), or — when re-issuing fails (the NSM is unreachable) — the
   * certificate served so far, until a later attempt succeeds. Fails only when there is none yet.
   */
  async serving(): Promise<IssuedCertificate> {
    try {
      return await this.current();
    } catch (err) {
      if (this.#current !== undefined) return this.#current;
      throw err;
    }
  }

  /** The certificate in use now without waiting (undefined before the first current()). */
  get served(): IssuedCertificate | undefined {
    return this.#current;
  }

  /** Whether the default certificate must be re-issued before the next handshake. */
  get due(): boolean {
    return this.#current === undefined || this.#defaultDue(this.#current);
  }

  /** ms until the default certificate is due (for the rotation timer). */
  msUntilDue(): number {
    return this.#current === undefined ? 0 : Math.max(0, Math.max(this.#current.notAfter - this.#rotateBeforeMs, this.#reissueAfter) - this.#now());
  }

  /**
   * The context for a handshake's SNI: a fresh-nonce certificate, or the default one. `client`: the source address
   * the bridge's PROXY header gave, for the per-client budget (undefined: unknown).
   */
  async contextFor(servername: string | undefined, client?: string): Promise<SecureContext> {
    return (await this.certificateFor(servername, client)).context;
  }

  /** contextFor's certificate (a session worker builds its own context from it: identity-proxy.ts). */
  async certificateFor(servername: string | undefined, client?: string): Promise<IssuedCertificate> {
    const nonce = nonceFromSni(servername);
    if (nonce === null) return this.serving();
    const name = servername!;
    const cached = this.#nonceCache.get(name);
    if (cached !== undefined && !this.#due(cached)) return cached;
    if (!this.#budget.take(client)) throw new IngressError('INGRESS_NONCE_RATE_LIMITED', 'too many fresh-nonce certificates requested; retry later');
    const key = await generateIngressKey();
    const issued = await this.#issue(key, name, nonce);
    this.#nonceCache.delete(name);
    this.#nonceCache.set(name, issued);
    while (this.#nonceCache.size > this.#cacheSize) this.#nonceCache.delete(this.#nonceCache.keys().next().value!);
    return issued;
  }

  /**
   * /.well-known/attestation on a connection: a fresh document whose user_data is the SPKI DER of the key that
   * connection was served (default, fresh-nonce or ACME certificate), so a client checks it against that one;
   * the nonce is the client's (`?nonce=`, rate-limited) or 32 random bytes (that document reused for up to
   * WELL_KNOWN_TTL_MS). `client` as for contextFor.
   */
  documentFor(spkiDer: Uint8Array, nonce?: Uint8Array, client?: string): Promise<Uint8Array> {
    // A client nonce costs an NSM call each, as a fresh-nonce certificate does: the same budget.
    if (nonce !== undefined) {
      // Checked where the nonce is read too (attestation-endpoint.ts); here so no path can skip it.
      const refused = callerNonceRefusal(nonce);
      if (refused !== null) return Promise.reject(new IngressError('INGRESS_BAD_NONCE', refused));
      if (!this.#budget.take(client)) return Promise.reject(new IngressError('INGRESS_NONCE_RATE_LIMITED', 'too many documents for client nonces requested; retry later'));
      return this.#attest({ spkiDer }, nonce);
    }
    // Without one the nonce is ours and random, so a recent document proves as much as a new one; reusing it
    // keeps a flood of requests off the NSM, which attested Noise sessions share (Evervault keeps it 300 s).
    const key = Buffer.from(spkiDer).toString('hex');
    const now = this.#now();
    const hit = this.#wellKnown.get(key);
    if (hit !== undefined && now - hit.at < WELL_KNOWN_TTL_MS) return hit.document;
    const document = this.#attest({ spkiDer }, new Uint8Array(randomBytes(32)));
    for (const [k, v] of this.#wellKnown) if (now - v.at >= WELL_KNOWN_TTL_MS) this.#wellKnown.delete(k);
    this.#wellKnown.set(key, { at: now, document });
    document.catch(() => this.#wellKnown.delete(key)); // a failure is not kept
    return document;
  }

  #due(c: IssuedCertificate): boolean {
    return this.#now() >= c.notAfter - this.#rotateBeforeMs;
  }

  #defaultDue(c: IssuedCertificate): boolean {
    return this.#due(c) && this.#now() >= this.#reissueAfter;
  }

  /** The default certificate was inside the rotation margin when issued (the rotation timer warns). */
  get dueAtIssue(): boolean {
    return this.#reissueAfter > 0 && this.#current !== undefined && this.#due(this.#current);
  }

  async #issueDefault(): Promise<IssuedCertificate> {
    this.#key ??= await generateIngressKey();
    const issued = await this.#issue(this.#key, this.host, new Uint8Array(randomBytes(32)));
    this.#current = issued;
    this.#reissueAfter = this.#due(issued) ? this.#now() + DUE_AT_ISSUE_RETRY_MS : 0;
    this.rotations++;
    this.onIssued?.(issued);
    return issued;
  }

  async #attest(key: Pick<IngressKey, 'spkiDer'>, nonce: Uint8Array): Promise<Uint8Array> {
    try {
      // public_key stays absent: no caller-supplied bytes reach the NSM request but the nonce (TLS-INGRESS.md R2).
      return await this.#nsm.attest({ userData: key.spkiDer, nonce });
    } catch (err) {
      throw new IngressError('INGRESS_ATTESTATION_FAILED', `the NSM gave no document for the TLS certificate: ${(err as { code?: string }).code ?? 'error'}`, { cause: err });
    }
  }

  async #issue(key: IngressKey, host: string, nonce: Uint8Array): Promise<IssuedCertificate> {
    const document = await this.#attest(key, nonce);
    const nsmCert = parseCertificate(parseAttestationDocument(document).document.certificate, 'certificate');
    const notAfter = nsmCert.notAfter.getTime();
    const der = await buildAttestedCertificate({ key, document, host, now: this.#now(), notAfter });
    const context = createSecureContext({ ...INGRESS_TLS_OPTIONS, key: key.keyPem, cert: certificatePem(der) });
    const issued = { der, document, notAfter, context, spkiDer: key.spkiDer } as IssuedCertificate;
    Object.defineProperty(issued, 'keyPem', { value: key.keyPem, enumerable: false });
    return issued;
  }
}

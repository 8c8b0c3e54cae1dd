// A browser-trusted certificate for the operator's domain from an ACME CA (RFC 8555, acme-client), served by
// TLS ingress to SNI = domain while every other name keeps the attested certificate (tls-ingress.ts).
//
//  Challenge  tls-alpn-01 (RFC 8737), answered by the ingress's own TLS listener: the CA connects to
//             <domain>:443 with ALPN `acme-tls/1` only, and gets the challenge certificate for <domain>.
//             The agent terminates TLS itself, so nothing else is needed (http-01 would need port 80 relayed in
//             cleartext, dns-01 the operator's DNS credentials in the enclave).
//  Keys       the certificate key (P-256) and the account key (P-256) are generated in the enclave, in memory
//             only: a restart creates a new account and orders a new certificate. Let's Encrypt limits that to
//             10 new accounts per IP per 3 h and 5 certificates per exact set of names per 7 days — a sixth
//             restart within a week is refused, logged, and retried with backoff while the attested
//             certificate is served.
//  Schedule   the first order at start(); renewal once 2/3 of the lifetime (notBefore→notAfter) has passed,
//             checked by a timer and on each handshake for <domain>; a failure is logged and retried after
//             retry_backoff_ms, doubling per consecutive failure up to retry_backoff_max_ms. Never throws.
//  Transport  acme-client's HTTP client (axios) through the given https.Agent (acme-transport.ts): the egress
//             tunnel, TLS terminated here and verified against the bundled roots.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { Client as AcmeClient } from 'acme-client';
import { loadAcme } from './acme-library.ts';
import type { Logger } from 'pino';
import type { AcmeTransport } from './acme-transport.ts';
import { INGRESS_TLS_OPTIONS } from './tls-options.ts';

export interface AcmeCertificateOptions {
  domain: string;
  directoryUrl: string;
  email?: string | null;
  termsOfServiceAgreed: boolean;
  retryBackoffMs: number;
  retryBackoffMaxMs: number;
  /** ms since the epoch (default Date.now): renewal is due by this clock. */
  now?: () => number;
  /** The egress tunnel acme-client uses (acme-transport.ts): its last connection failure is logged as the cause; closed by stop(). */
  transport?: Pick<AcmeTransport, 'takeLastError' | 'close'> & Partial<Pick<AcmeTransport, 'ready'>>;
  /** acme-client's polling of pending challenges and orders: first wait (default 5 s, its own default). */
  pollMinMs?: number;
  logger?: Logger;
}

export interface AcmeIssued {
  readonly context: SecureContext;
  /** PEM: the leaf, then the CA's chain as it sent it. */
  readonly chainPem: string;
  readonly notBefore: number;
  readonly notAfter: number;
  /** notBefore + 2/3 of the lifetime. */
  readonly renewAt: number;
  /** Its private key (PEM), for session workers to build the same context; not enumerable (never logged). */
  readonly keyPem: string;
}

/** A pending tls-alpn-01 certificate as PEM (session workers build their own context from it). */
export interface AcmeChallengePem {
  readonly name: string;
  readonly keyPem: string;
  readonly certPem: string;
}

/** Timers cap at 2^31-1 ms; re-check at least hourly (the clock may be stepped). */
const MAX_TIMER_MS = 3_600_000;

/** When a certificate valid notBefore→notAfter is renewed: after 2/3 of its lifetime. */
export function renewalTime(notBefore: number, notAfter: number): number {
  return notBefore + Math.floor(((notAfter - notBefore) * 2) / 3);
}

/** The wait after `failures` consecutive failures: base, doubled each time, capped. */
export function retryDelay(failures: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(0, failures - 1), 30));
}

function describeError(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown; response?: { status?: number } };
  const status = e.response?.status === undefined ? '' : ` (HTTP ${e.response.status})`;
  const message = typeof e.message === 'string' ? e.message : String(err);
  return `${typeof e.code === 'string' ? `${e.code}: ` : ''}${message.slice(0, 500)}${status}`;
}

export class AcmeCertificate {
  readonly domain: string;
  readonly #opts: AcmeCertificateOptions;
  readonly #now: () => number;
  readonly #logger: Logger | undefined;
  /** tls-alpn-01 certificates by name, present only while the CA may validate. */
  readonly #challenges = new Map<string, { context: SecureContext; pem: AcmeChallengePem }>();
  #client: AcmeClient | undefined;
  #issued: AcmeIssued | undefined;
  #inFlight: Promise<void> | undefined;
  #nextAttemptAt = 0;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #started = false;
  #stopped = false;
  /** Runs after the certificate or the pending challenges change (session workers follow: tls-handoff.ts). */
  onChange: (() => void) | undefined;

  constructor(opts: AcmeCertificateOptions) {
    this.#opts = opts;
    this.domain = opts.domain.toLowerCase();
    this.#now = opts.now ?? Date.now;
    this.#logger = opts.logger;
  }

  /**
   * The ACME certificate for SNI = domain once obtained (kicks a renewal when due), else undefined — also once
   * it has expired because renewals kept failing: the attested certificate is served again then.
   */
  issuedFor(servername: string | undefined): AcmeIssued | undefined {
    if (servername === undefined || servername.toLowerCase() !== this.domain) return undefined;
    this.#maybeAttempt();
    const issued = this.#issued;
    return issued !== undefined && this.#now() < issued.notAfter ? issued : undefined;
  }

  /** The tls-alpn-01 certificate for a handshake offering ALPN acme-tls/1 with this SNI, while one is pending. */
  challengeContext(servername: string | undefined): SecureContext | undefined {
    return servername === undefined ? undefined : this.#challenges.get(servername.toLowerCase())?.context;
  }

  /** The tls-alpn-01 certificates pending now. */
  pendingChallenges(): AcmeChallengePem[] {
    return [...this.#challenges.values()].map((c) => c.pem);
  }

  #changed(): void {
    try {
      this.onChange?.();
    } catch {
      // a follower's failure must not break the order
    }
  }

  /** First order now; renewals and retries by timer. Call once the TLS listener accepts (the CA connects to it). */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#maybeAttempt();
  }

  /** Stops the timer and closes the tunnels; an order in flight fails and its result is dropped. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#challenges.clear();
    this.#opts.transport?.close();
    this.#changed();
  }

  /** Starts an order when one is due and none is in flight; false when it did not. */
  #maybeAttempt(): boolean {
    if (!this.#started || this.#stopped || this.#inFlight !== undefined || this.#now() < this.#nextAttemptAt) return false;
    this.#inFlight = this.#attempt().finally(() => {
      this.#inFlight = undefined;
      this.#schedule();
    });
    return true;
  }

  #schedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      if (!this.#maybeAttempt()) this.#schedule();
    }, Math.min(Math.max(0, this.#nextAttemptAt - this.#now()) + 1, MAX_TIMER_MS));
    this.#timer.unref();
  }

  async #attempt(): Promise<void> {
    const renewal = this.#issued !== undefined;
    this.#opts.transport?.takeLastError();
    try {
      const issued = await this.#order();
      if (this.#stopped) return;
      this.#issued = issued;
      this.#changed();
      this.#failures = 0;
      this.#nextAttemptAt = issued.renewAt;
      this.#logger?.info(
        { domain: this.domain, notAfter: new Date(issued.notAfter).toISOString(), renewAt: new Date(issued.renewAt).toISOString(), renewal },
        'ACME certificate obtained; served for its domain',
      );
    } catch (err) {
      if (this.#stopped) return;
      this.#failures++;
      const retryInMs = retryDelay(this.#failures, this.#opts.retryBackoffMs, this.#opts.retryBackoffMaxMs);
      this.#nextAttemptAt = this.#now() + retryInMs;
      this.#logger?.error(
        { domain: this.domain, directory: this.#opts.directoryUrl, failures: this.#failures, retryInMs, err: describeError(err), cause: this.#opts.transport?.takeLastError() ?? null },
        renewal ? 'ACME renewal failed; the current certificate stays until it succeeds' : 'ACME certificate failed; serving the attested certificate for its domain until it succeeds',
      );
    } finally {
      if (this.#challenges.size > 0) {
        this.#challenges.clear();
        this.#changed();
      }
    }
  }

  async #order(): Promise<AcmeIssued> {
    await this.#opts.transport?.ready;
    const acme = await loadAcme();
    this.#client ??= new acme.Client({
      directoryUrl: this.#opts.directoryUrl,
      accountKey: await acme.crypto.createPrivateEcdsaKey('P-256'),
      backoffMin: this.#opts.pollMinMs ?? 5_000,
    });
    const key = await acme.crypto.createPrivateEcdsaKey('P-256');
    const [, csr] = await acme.crypto.createCsr({ commonName: this.domain, altNames: [this.domain] }, key);
    const email = this.#opts.email ?? undefined;
    const chainPem = await this.#client.auto({
      csr,
      ...(email === undefined ? {} : { email }),
      termsOfServiceAgreed: this.#opts.termsOfServiceAgreed,
      challengePriority: ['tls-alpn-01'],
      // acme-client's own pre-check would dial <domain>:443 from inside the enclave; the CA's check is the one that counts.
      skipChallengeVerification: true,
      challengeCreateFn: async (authz, challenge, keyAuthorization) => {
        if ((challenge.type as string) !== 'tls-alpn-01') throw new Error(`the CA offered no tls-alpn-01 challenge (got ${challenge.type})`);
        const [alpnKey, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization);
        const name = authz.identifier.value.toLowerCase();
        const pem = { name, keyPem: alpnKey.toString(), certPem: alpnCert.toString() };
        this.#challenges.set(name, { context: createSecureContext({ ...INGRESS_TLS_OPTIONS, key: alpnKey, cert: alpnCert }), pem });
        this.#changed();
      },
      challengeRemoveFn: (authz) => {
        if (this.#challenges.delete(authz.identifier.value.toLowerCase())) this.#changed();
        return Promise.resolve();
      },
    });
    const leaf = new X509Certificate(chainPem);
    if (!leaf.checkHost(this.domain)) throw new Error(`the CA's certificate is not for ${this.domain} (subject ${leaf.subject})`);
    if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error('the CA returned a certificate for another key');
    const notBefore = Date.parse(leaf.validFrom);
    const notAfter = Date.parse(leaf.validTo);
    const issued = {
      context: createSecureContext({ ...INGRESS_TLS_OPTIONS, key, cert: chainPem }),
      chainPem,
      notBefore,
      notAfter,
      renewAt: renewalTime(notBefore, notAfter),
    } as AcmeIssued;
    Object.defineProperty(issued, 'keyPem', { value: key.toString(), enumerable: false });
    return issued;
  }
}

// The TLS ingress's attested identity for session worker threads. The main thread keeps the one
// AttestedIdentity (the boot key, the NSM, the fresh-nonce budget and cache, the /.well-known cache, rotation)
// and pushes each default certificate it issues — key PEM, certificate DER, notAfter, SPKI — to every worker,
// numbered by a generation; a worker builds its own SecureContext from it. The key crosses threads in-process
// only and is never logged. Fresh-nonce certificates (SNI <nonce>.attest.<host>) and documents are calls to the
// main thread, so every budget and cache stays process-wide.
// Rotation follows the main thread: each handed TLS connection carries the generation the main thread had
// pushed when it handed it (it re-issues a due certificate first, session-workers.ts), and the worker serves it
// no older one (want()).
// With [ingress.acme] the state pushed carries the ACME certificate for the domain (while the main thread serves
// it) and the pending tls-alpn-01 challenge certificates too, under the same generations: a CA's validation
// connection arrives after its challenge was pushed, so it is handed with a generation that includes it.
import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { AcmeChallengePem } from '../../ingress/acme-certificate.ts';
import type { AttestedIdentity, IssuedCertificate } from '../../ingress/attested-identity.ts';
import { IngressError, type IngressErrorCode } from '../../ingress/errors.ts';
import { nonceFromSni } from '../../ingress/sni-nonce.ts';
import type { AcmeSni, IngressIdentity, ServedCertificate } from '../../ingress/tls-ingress.ts';
import { INGRESS_TLS_OPTIONS } from '../../ingress/tls-options.ts';
import { WorkerServiceError } from './errors.ts';
import { rpcEndpoint, type PortLike } from './rpc-port.ts';

/** A certificate as it crosses: what a worker needs to serve it. */
interface WireCertificate {
  keyPem: string;
  der: Uint8Array;
  notAfter: number;
  spkiDer: Uint8Array;
}

/** [ingress.acme] as the main thread serves it now: the domain's certificate (null: none, or expired), the challenges. */
export interface AcmeWire {
  domain: string;
  issued: { keyPem: string; chainPem: string } | null;
  challenges: AcmeChallengePem[];
}

/** IngressError crosses as a value (its code decides the HTTP answer: 429 for a spent nonce budget). */
type Answer<T> = { ok: T } | { error: { code: IngressErrorCode; message: string } };

const INGRESS_CODES: ReadonlySet<string> = new Set<IngressErrorCode>(['INGRESS_BAD_NONCE', 'INGRESS_NONCE_RATE_LIMITED', 'INGRESS_ATTESTATION_FAILED', 'INGRESS_BAD_OPTIONS']);

function wire(c: IssuedCertificate): WireCertificate {
  return { keyPem: c.keyPem, der: new Uint8Array(c.der), notAfter: c.notAfter, spkiDer: new Uint8Array(c.spkiDer) };
}

async function answer<T>(run: () => Promise<T>): Promise<Answer<T>> {
  try {
    return { ok: await run() };
  } catch (err) {
    if (err instanceof IngressError) return { error: { code: err.code, message: err.message } };
    throw err;
  }
}

const bad = (what: string): WorkerServiceError => new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', `identity: ${what}`);
const optionalString = (v: unknown): v is string | undefined | null => v === undefined || v === null || typeof v === 'string';
const optionalBytes = (v: unknown): v is Uint8Array | undefined | null => v === undefined || v === null || v instanceof Uint8Array;

export interface IdentityServer {
  /** Sends `issued` (and the ACME state) as generation `generation` to the worker. False when the port is closed. */
  push(issued: IssuedCertificate, generation: number, acme?: AcmeWire): boolean;
  close(): void;
}

/** Main side: answers a worker's remoteIdentity with `identity`. */
export function serveIdentity(port: PortLike, identity: AttestedIdentity): IdentityServer {
  const rpc = rpcEndpoint(port, {
    service: 'identity',
    methods: {
      certificateFor: (servername, client) => {
        if (typeof servername !== 'string' || !optionalString(client)) throw bad('certificateFor(servername, client?)');
        return answer(async () => wire(await identity.certificateFor(servername, client ?? undefined)));
      },
      documentFor: (spkiDer, nonce, client) => {
        if (!(spkiDer instanceof Uint8Array) || !optionalBytes(nonce) || !optionalString(client)) throw bad('documentFor(spki, nonce?, client?)');
        return answer(async () => new Uint8Array(await identity.documentFor(spkiDer, nonce ?? undefined, client ?? undefined)));
      },
    },
  });
  return {
    push: (issued, generation, acme) => rpc.notify('certificate', { generation, certificate: wire(issued), ...(acme === undefined ? {} : { acme }) }),
    close: () => rpc.close(),
  };
}

interface Held extends ServedCertificate {
  readonly generation: number;
  readonly spkiDer: Uint8Array;
  readonly acme: HeldAcme | undefined;
}

interface HeldAcme {
  readonly domain: string;
  readonly issued: { context: SecureContext } | undefined;
  readonly challenges: ReadonlyMap<string, SecureContext>;
}

function isAcmeWire(v: unknown): v is AcmeWire {
  if (typeof v !== 'object' || v === null) return false;
  const a = v as Record<string, unknown>;
  const issued = a.issued as Record<string, unknown> | null;
  return (
    typeof a.domain === 'string' &&
    (issued === null || (typeof issued === 'object' && typeof issued.keyPem === 'string' && typeof issued.chainPem === 'string')) &&
    Array.isArray(a.challenges) &&
    a.challenges.every((c: unknown) => typeof c === 'object' && c !== null && ['name', 'keyPem', 'certPem'].every((k) => typeof (c as Record<string, unknown>)[k] === 'string'))
  );
}

function acmeOf(a: AcmeWire): HeldAcme {
  return {
    domain: a.domain,
    issued: a.issued === null ? undefined : { context: createSecureContext({ ...INGRESS_TLS_OPTIONS, key: a.issued.keyPem, cert: a.issued.chainPem }) },
    challenges: new Map(a.challenges.map((c) => [c.name, createSecureContext({ ...INGRESS_TLS_OPTIONS, key: c.keyPem, cert: c.certPem })])),
  };
}

function contextOf(c: WireCertificate): SecureContext {
  return createSecureContext({ ...INGRESS_TLS_OPTIONS, key: c.keyPem, cert: new X509Certificate(c.der).toString() });
}

function isWireCertificate(v: unknown): v is WireCertificate {
  if (typeof v !== 'object' || v === null) return false;
  const c = v as Record<string, unknown>;
  return typeof c.keyPem === 'string' && c.der instanceof Uint8Array && typeof c.notAfter === 'number' && c.spkiDer instanceof Uint8Array;
}

function unwrap<T>(v: unknown, check: (ok: unknown) => ok is T, method: string): T {
  const a = v as Partial<Record<'ok' | 'error', unknown>> | null;
  if (typeof a === 'object' && a !== null) {
    const e = a.error as { code?: unknown; message?: unknown } | undefined;
    if (typeof e === 'object' && e !== null && typeof e.code === 'string' && INGRESS_CODES.has(e.code) && typeof e.message === 'string') {
      throw new IngressError(e.code as IngressErrorCode, e.message);
    }
    if (check(a.ok)) return a.ok;
  }
  throw bad(`${method}: the main thread answered something unexpected`);
}

export interface RemoteIdentity extends IngressIdentity {
  /** [ingress.acme] as the main thread last pushed it (the ingress's `acme`). */
  readonly acme: AcmeSni;
  /** A handed connection was admitted with generation `generation`: no older certificate serves it. */
  want(generation: number): void;
  /** Rejects what waits for a certificate; later calls fail with WORKER_SERVICE_CLOSED. */
  close(): void;
}

/** Worker side: the main thread's identity (serveIdentity), with the default certificate held here. */
export function remoteIdentity(port: PortLike): RemoteIdentity {
  let held: Held | undefined;
  let wanted = 1;
  let closed = false;
  let waiters: { resolve(c: Held): void; reject(err: unknown): void }[] = [];
  const settle = (): void => {
    if (held === undefined || held.generation < wanted) return;
    const ready = waiters;
    waiters = [];
    for (const w of ready) w.resolve(held);
  };
  const shut = (): void => {
    closed = true;
    const ready = waiters;
    waiters = [];
    for (const w of ready) w.reject(new WorkerServiceError('WORKER_SERVICE_CLOSED', 'identity: the port to the main thread closed before a certificate arrived'));
  };
  const rpc = rpcEndpoint(port, {
    service: 'identity',
    notes: {
      certificate: (v) => {
        const m = v as { generation?: unknown; certificate?: unknown; acme?: unknown } | null;
        if (typeof m !== 'object' || m === null || typeof m.generation !== 'number' || !isWireCertificate(m.certificate)) throw bad('certificate note');
        if (m.acme !== undefined && !isAcmeWire(m.acme)) throw bad('certificate note: acme');
        if (held !== undefined && m.generation <= held.generation) return;
        held = { generation: m.generation, context: contextOf(m.certificate), spkiDer: m.certificate.spkiDer, acme: m.acme === undefined ? undefined : acmeOf(m.acme) };
        settle();
      },
    },
    onClose: shut,
  });
  const serving = (): Promise<Held> => {
    if (held !== undefined && held.generation >= wanted) return Promise.resolve(held);
    if (closed) return Promise.reject(new WorkerServiceError('WORKER_SERVICE_CLOSED', 'identity: the port to the main thread is closed'));
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  };
  const acme: AcmeSni = {
    issuedFor(servername) {
      const a = held?.acme;
      return a === undefined || servername?.toLowerCase() !== a.domain ? undefined : a.issued;
    },
    challengeContext(servername) {
      return servername === undefined ? undefined : held?.acme?.challenges.get(servername.toLowerCase());
    },
    // The order, its renewal and its challenges run on the main thread.
    start() {},
    stop() {},
  };
  return {
    acme,
    want(generation) {
      if (generation > wanted) wanted = generation;
    },
    get due() {
      return held === undefined || held.generation < wanted;
    },
    get served() {
      return held;
    },
    get spkiDer() {
      if (held === undefined) throw new IngressError('INGRESS_BAD_OPTIONS', 'the identity proxy was used before a certificate arrived');
      return held.spkiDer;
    },
    current: serving,
    serving,
    async contextFor(servername, client) {
      if (nonceFromSni(servername) === null) return (await serving()).context;
      const v = await rpc.call('certificateFor', [servername, client]);
      return contextOf(unwrap(v, isWireCertificate, 'certificateFor'));
    },
    async documentFor(spkiDer, nonce, client) {
      const v = await rpc.call('documentFor', [new Uint8Array(spkiDer), nonce === undefined ? undefined : new Uint8Array(nonce), client]);
      return unwrap(v, (d): d is Uint8Array => d instanceof Uint8Array, 'documentFor');
    },
    close() {
      rpc.close();
      shut();
    },
  };
}

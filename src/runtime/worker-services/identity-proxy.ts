// The TLS ingress's attested identity for session worker threads. The main thread keeps the one
// AttestedIdentity (the boot key, the NSM, the fresh-nonce budget and cache, the /.well-known cache, rotation)
// and pushes each default certificate it issues — key PEM, certificate DER, notAfter, SPKI — to every worker,
// numbered by a generation; a worker builds its own SecureContext from it. The key crosses threads in-process
// only and is never logged. Fresh-nonce certificates (SNI <nonce>.attest.<host>) and documents are calls to the
// main thread, so every budget and cache stays process-wide.
// Rotation follows the main thread: each handed TLS connection carries the generation the main thread had
// pushed when it handed it (it re-issues a due certificate first, session-workers.ts), and the worker serves it
// no older one (want()).
import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { AttestedIdentity, IssuedCertificate } from '../../ingress/attested-identity.ts';
import { IngressError, type IngressErrorCode } from '../../ingress/errors.ts';
import { nonceFromSni } from '../../ingress/sni-nonce.ts';
import type { IngressIdentity, ServedCertificate } from '../../ingress/tls-ingress.ts';
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
  /** Sends `issued` as generation `generation` to the worker. False when the port is closed. */
  push(issued: IssuedCertificate, generation: number): boolean;
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
    push: (issued, generation) => rpc.notify('certificate', { generation, certificate: wire(issued) }),
    close: () => rpc.close(),
  };
}

interface Held extends ServedCertificate {
  readonly generation: number;
  readonly spkiDer: Uint8Array;
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
        const m = v as { generation?: unknown; certificate?: unknown } | null;
        if (typeof m !== 'object' || m === null || typeof m.generation !== 'number' || !isWireCertificate(m.certificate)) throw bad('certificate note');
        if (held !== undefined && m.generation <= held.generation) return;
        held = { generation: m.generation, context: contextOf(m.certificate), spkiDer: m.certificate.spkiDer };
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
  return {
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

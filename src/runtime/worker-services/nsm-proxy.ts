// The NSM for session worker threads: the main thread keeps the one Nsm (the /dev/nsm device or the
// simulator) and answers attest/random over a port. Only the request's three byte fields cross, each as an
// exact copy (a Buffer may be a view into a larger shared pool: structured clone would copy all of it); the
// document comes back as an exact copy too. NSM failures arrive as the same class with the same code and
// typed fields — NsmError, AttestationError, the addon's NativeError, RangeError, TypeError (rpc-port.ts) —
// so a session on a worker logs and closes exactly as one on the main thread.
import type { AttestationRequest, Nsm } from '../../attestation/nsm.ts';
import { WorkerServiceError } from './errors.ts';
import { rpcEndpoint, type PortLike } from './rpc-port.ts';

/** A copy of exactly `b`'s bytes, in a buffer of its own. */
function own(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

function field(v: Uint8Array | null | undefined): Uint8Array | null | undefined {
  return v instanceof Uint8Array ? own(v) : v;
}

/** Worker side: an Nsm whose calls go to the main thread's (serveNsm). */
export function remoteNsm(port: PortLike): Nsm & { close(): void } {
  const rpc = rpcEndpoint(port, { service: 'nsm' });
  return {
    async attest(req: AttestationRequest) {
      const doc = await rpc.call('attest', [{ userData: field(req.userData), nonce: field(req.nonce), publicKey: field(req.publicKey) }]);
      if (!(doc instanceof Uint8Array)) throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'nsm.attest: the main thread answered something other than bytes');
      return doc;
    },
    async random(n: number) {
      const bytes = await rpc.call('random', [n]);
      if (!(bytes instanceof Uint8Array)) throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'nsm.random: the main thread answered something other than bytes');
      return bytes;
    },
    close: () => rpc.close(),
  };
}

function requestFrom(v: unknown): AttestationRequest {
  if (typeof v !== 'object' || v === null) throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'nsm.attest: expected a request object');
  const r = v as Record<string, unknown>;
  const out: AttestationRequest = {};
  for (const k of ['userData', 'nonce', 'publicKey'] as const) {
    const f = r[k];
    if (f === undefined) continue;
    if (f !== null && !(f instanceof Uint8Array)) throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', `nsm.attest: ${k} must be bytes or null`);
    out[k] = f;
  }
  return out;
}

/** Main side: answers a worker's remoteNsm with `nsm`. Returns a handle that closes the port. */
export function serveNsm(port: PortLike, nsm: Nsm): { close(): void } {
  const rpc = rpcEndpoint(port, {
    service: 'nsm',
    methods: {
      attest: async (req) => own(await nsm.attest(requestFrom(req))),
      random: async (n) => {
        if (typeof n !== 'number') throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'nsm.random: expected a byte count');
        return own(await nsm.random(n));
      },
    },
  });
  return { close: () => rpc.close() };
}

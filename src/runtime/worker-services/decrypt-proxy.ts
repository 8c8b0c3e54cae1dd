// ev: decryption of whole JSON bodies, and the check that a large body is JSON (isJsonText), for session worker threads: the main thread keeps the one DecryptPool
// (its threads hold copies of the keyring's scalars; no new copies per session worker) and runs each job a
// worker sends. The global max_concurrent_decrypts budget is charged where the job starts — the worker's
// DecryptScheduler, whose pool this proxy is — so serveDecryptPool does not charge it again. Refusals come
// back as the same EvDecryptError (reason, detail), EvBudgetError and EvPoolError (rpc-port.ts).
import type { DecryptPool } from '../../crypto/decrypt-pool.ts';
import { transferableBytes } from '../../crypto/json-text.ts';
import type { Keyring } from '../../crypto/keyring.ts';
import { WorkerServiceError } from './errors.ts';
import { rpcEndpoint, type PortLike } from './rpc-port.ts';

/** What DecryptScheduler needs of its pool. */
export interface RemoteDecryptPool {
  /** The worker's keyring: the scheduler sends only this keyring's bodies to the pool. */
  readonly keyring: Keyring;
  decryptJson(text: string, maxEcdh?: number): Promise<{ json: string; count: number }>;
  /** DecryptPool.isJsonText: one copy here, transferred to the main thread and on to the pool's thread. */
  isJsonText(bytes: Uint8Array): Promise<boolean>;
  close(): void;
}

/** Worker side: a pool whose jobs run on the main thread's DecryptPool (serveDecryptPool). */
export function remoteDecryptPool(port: PortLike, keyring: Keyring): RemoteDecryptPool {
  const rpc = rpcEndpoint(port, { service: 'decrypt' });
  return {
    keyring,
    async decryptJson(text, maxEcdh) {
      const out = (await rpc.call('decryptJson', maxEcdh === undefined ? [text] : [text, maxEcdh])) as { json?: unknown; count?: unknown } | null;
      if (typeof out !== 'object' || out === null || typeof out.json !== 'string' || typeof out.count !== 'number') {
        throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'decrypt.decryptJson: the main thread answered something other than { json, count }');
      }
      return { json: out.json, count: out.count };
    },
    async isJsonText(bytes) {
      const out = transferableBytes(bytes); // one copy here; handed over, not copied, on both hops
      const valid = await rpc.call('isJsonText', [out], [out.buffer]);
      if (typeof valid !== 'boolean') throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'decrypt.isJsonText: the main thread answered something other than a boolean');
      return valid;
    },
    close: () => rpc.close(),
  };
}

/** Main side: runs a worker's jobs on `pool`. Returns a handle that closes the port. */
export function serveDecryptPool(port: PortLike, pool: Pick<DecryptPool, 'decryptJson' | 'isJsonText'>): { close(): void } {
  const rpc = rpcEndpoint(port, {
    service: 'decrypt',
    methods: {
      decryptJson: (text, maxEcdh) => {
        if (typeof text !== 'string') throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'decrypt.decryptJson: expected the JSON text as a string');
        if (maxEcdh !== undefined && !(typeof maxEcdh === 'number' && Number.isSafeInteger(maxEcdh) && maxEcdh >= 0)) {
          throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'decrypt.decryptJson: expected maxEcdh as a non-negative integer');
        }
        return pool.decryptJson(text, maxEcdh);
      },
      isJsonText: (bytes) => {
        if (!(bytes instanceof Uint8Array)) throw new WorkerServiceError('WORKER_SERVICE_BAD_MESSAGE', 'decrypt.isJsonText: expected the body as a Uint8Array');
        return pool.isJsonText(bytes, true); // this thread's copy: handed on to the pool's thread
      },
    },
  });
  return { close: () => rpc.close() };
}

// What the main thread and a session worker (session-worker.ts) tell each other: the worker's start-up data
// and the messages on its parentPort. The services (NSM, logs, metrics, decrypt) have ports of their own.
import type { MessagePort } from 'node:worker_threads';
import type { Config } from '../config.ts';
import type { KeyScalars } from '../crypto/keyring.ts';
import type { SharedAdmissionInit } from '../responder/shared-admission.ts';
import type { HandedConnection } from '../transport/handoff.ts';
import type { LogSinkCapabilities } from './worker-services/trx-proxy.ts';

export interface SessionWorkerData {
  /** 1..workers: this thread's region in the shared admission state. */
  index: number;
  config: Config;
  /** Every key generation, newest first (copies: the worker wipes them once its keyring is built). */
  scalars: KeyScalars[];
  attestationKey: Uint8Array | undefined;
  features?: string[];
  apiKeyHashes?: string[];
  logLevel: string;
  admission: SharedAdmissionInit;
  ports: { nsm: MessagePort; log: MessagePort; metrics: MessagePort; decrypt: MessagePort; trx?: MessagePort; identity?: MessagePort };
  /** TLS ingress connections run here too (tls_termination = true): the identity port is given, `connection`s may be 'tls'. */
  tls?: boolean;
  /** What the main thread's transaction-log sink takes (lines or records), when there is one. */
  trxCapabilities?: LogSinkCapabilities;
}

export type ToWorker =
  /**
   * 'tls': admitted against the shared TLS slots, to be served no certificate older than `generation`
   * (identity-proxy.ts); the worker gives the slots back.
   */
  | { type: 'connection'; connection: HandedConnection; channel?: 'public' }
  | { type: 'connection'; connection: HandedConnection; channel: 'tls'; generation: number }
  | { type: 'drain'; timeoutMs: number }
  | { type: 'close' };

/**
 * `unused`: a handed connection became no session (refused while draining, or not adoptable); `tls-closed`: a
 * handed TLS connection closed (or was never served).
 */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'unused' }
  | { type: 'tls-closed' }
  /** Receipts for handed connections (their `handoff` ids) this worker adopted or closed: see HandoffLedger. */
  | { type: 'taken'; ids: number[] }
  | { type: 'stopped'; error?: string };


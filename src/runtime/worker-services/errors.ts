import { AgentError } from '../../errors.ts';

export type WorkerServiceErrorCode =
  /** The port closed (the other thread ended or closed it) before the call was answered, or was closed when called. */
  | 'WORKER_SERVICE_CLOSED'
  /** A call named no method the other side serves, or carried arguments of the wrong shape. */
  | 'WORKER_SERVICE_BAD_MESSAGE'
  /** The other side failed with an error of a class not rebuilt here; `remoteName` / `remoteCode` say which. */
  | 'WORKER_SERVICE_FAILED';

/**
 * The error class of src/runtime/worker-services: a call from a session worker thread to a main-thread
 * service (or back) that did not get the service's own answer. Errors the service itself raised arrive as
 * their own classes (rpc-port.ts rebuilds them); this class is only for what the crossing itself adds.
 */
export class WorkerServiceError extends AgentError {
  declare readonly code: WorkerServiceErrorCode;
  /** WORKER_SERVICE_FAILED: the class name and code of the error on the other side. */
  readonly remoteName: string | undefined;
  readonly remoteCode: string | undefined;

  constructor(code: WorkerServiceErrorCode, message: string, remote?: { name: string; code: string | undefined }) {
    super(code, message);
    this.remoteName = remote?.name;
    this.remoteCode = remote?.code;
  }
}

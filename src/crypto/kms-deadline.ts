// One KMS call settled within a deadline, for every caller of the AWS SDK's KMS client (the enclave's attested
// Decrypt, the operator's GenerateDataKey). The SDK's requestTimeout only warns (throwOnRequestTimeout is off)
// and its connection timeout covers neither TLS nor a socket handed to it already connected, so an endpoint or
// relay that accepts and then says nothing would leave the call waiting forever. No SDK import here: the agent
// loads the SDK only when KMS is configured.

/** Operator tools (keys seal, keys rotate, secrets seal): how long one KMS call may take, all of it. */
export const DEFAULT_KMS_CALL_TIMEOUT_MS = 30_000;

/** The call had no answer within `ms`; its request was aborted. Callers wrap it in their typed error. */
export class KmsDeadlineError extends Error {
  override readonly name = 'KmsDeadlineError';
  constructor(readonly ms: number) {
    super(`no answer within ${ms} ms`);
  }
}

/**
 * `call`, settled within `ms`: at the deadline its AbortSignal fires (the SDK destroys its request and socket)
 * and it rejects with KmsDeadlineError, whatever it was waiting for.
 */
export function withinDeadline<T>(ms: number, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  let answer: Promise<T>;
  try {
    answer = call(abort.signal);
  } catch (err) {
    // Thrown before a promise: rejected like one, and no deadline armed to reject later with nobody listening.
    return Promise.reject(err as Error);
  }
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      const err = new KmsDeadlineError(ms);
      abort.abort(err);
      reject(err);
    }, ms);
  });
  return Promise.race([answer, deadline]).finally(() => clearTimeout(timer));
}

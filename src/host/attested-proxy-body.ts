// A local request's body as `enclave-agent proxy` hands it to the attested client. There is no deadline on the
// whole request (an upload may stream for hours); what is bounded is the local client's silence: while the client
// asks for the next piece and the local side sends none for `idleMs`, the upload has stalled. Time the client does
// not ask (the enclave not taking more yet) does not count.
import type http from 'node:http';

export function hasBody(req: http.IncomingMessage): boolean {
  const te = req.headers['transfer-encoding'];
  if (te !== undefined) return true;
  const cl = req.headers['content-length'];
  return cl !== undefined && cl !== '0';
}

/**
 * The request body as the client reads it; `onIdle` runs when a piece asked for does not come within `idleMs`.
 * The client stops reading early when the app answered before the upload ended (fetch.ts returns from its loop);
 * then the rest is drained, not the request destroyed: destroying it resets the local connection, and a client
 * still sending (Python's http.client) gets ECONNRESET instead of the answer.
 */
export async function* requestBody(req: http.IncomingMessage, idleMs: number, onIdle: () => void): AsyncGenerator<Uint8Array> {
  const pieces = req.iterator({ destroyOnReturn: false });
  try {
    for (;;) {
      const timer = setTimeout(onIdle, idleMs);
      let next: IteratorResult<unknown>;
      try {
        next = await pieces.next();
      } finally {
        clearTimeout(timer);
      }
      if (next.done === true) return;
      yield next.value as Uint8Array;
    }
  } finally {
    await pieces.return?.();
    req.resume();
  }
}

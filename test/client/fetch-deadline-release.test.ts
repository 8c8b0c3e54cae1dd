// A response whose stream finished before openStream() handed the stream over (c211954 keeps the deadline armed
// there for a re-run) must still disarm the deadline once the stream does open: else its timer and its listener
// on the caller's signal outlive the request.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { clientFetch, type FetchContext } from '../../src/client/fetch.ts';
import type { Session, SessionStream, StreamHandlers } from '../../src/client/session.ts';
import type { SessionManager } from '../../src/client/reconnect.ts';

const RESPONSE = new TextEncoder().encode('HTTP/1.1 204 No Content\r\n\r\n');

/** A session whose app answers (and closes) inside openStream, before the stream is returned. */
function answeringSession(closed: { count: number }): Session {
  const stream = { close: () => void closed.count++ } as unknown as SessionStream;
  return {
    encoding: 'bstr',
    features: ['bstr'],
    openStream: (_first: Uint8Array, handlers: StreamHandlers) => {
      handlers.data(RESPONSE);
      return Promise.resolve(stream);
    },
  } as unknown as Session;
}

describe('client fetch: the deadline is disarmed when the stream opens after its response', () => {
  it('leaves no listener on the caller signal and closes the stream', async () => {
    const closed = { count: 0 };
    const session = answeringSession(closed);
    const manager = { run: <T>(fn: (s: Session) => Promise<T>) => fn(session) } as unknown as SessionManager;
    const ctx: FetchContext = { manager, host: 'enclave.test', transport: 'stream', timeoutMs: 0, maxBufferedBytes: 1 << 20 };
    const user = new AbortController();
    const res = await clientFetch(ctx, 'http://enclave.test/x', { signal: user.signal });
    expect(res.status).toBe(204);
    expect(closed.count).toBe(1);
    expect(getEventListeners(user.signal, 'abort')).toHaveLength(0);
  });
});

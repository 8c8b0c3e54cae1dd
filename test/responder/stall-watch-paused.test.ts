// The stall watch (session-streams.ts) resets a stream whose app takes none of its queued bytes — but not while the
// session itself holds its apps' output (pauseApps: the client's queue, or the shared output budget, is over). An
// app such as an echo or a proxy stops reading its input while its own output cannot go out; then it is the
// session, not the app, that stalls, and the session's write-stall timeout watches the client instead.
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createCounters } from '../../src/responder/admission.ts';
import { DEFAULT_LIMITS } from '../../src/responder/limits.ts';
import { SessionStreams, appStallText } from '../../src/responder/session-streams.ts';
import type { SessionHost } from '../../src/responder/session-types.ts';
import { waitFor } from './helpers.ts';

const STALL_MS = 40;

/** An app that never completes a write: everything sent to it stays queued. */
function neverReadingApp(): Duplex {
  return new Duplex({ read() {}, write() {} });
}

function fakeHost(app: Duplex): { host: SessionHost; errors: { id: number; message: string }[]; paused: { value: boolean } } {
  const errors: { id: number; message: string }[] = [];
  const paused = { value: false };
  const counters = createCounters({ queuedBytes: 0, over: false } as never);
  const abort = new AbortController();
  const host = {
    id: 'test-session',
    cfg: {
      limits: { ...DEFAULT_LIMITS, maxStreamQueuedBytes: 64 * 1024, maxSessionQueuedBytes: 256 * 1024, writeStallTimeoutMs: STALL_MS },
      shared: { counters },
      logger: { debug() {}, info() {}, warn() {}, error() {} },
      forwarder: { connect: () => Promise.resolve(app) },
    },
    stats: { streams: 0 },
    signal: () => abort.signal,
    state: () => 'open',
    handshakeHash: () => new Uint8Array(32),
    client: () => undefined,
    clientQueueBlocked: () => paused.value,
    inputPaused: () => false,
    admit: () => true,
    release() {},
    sessionRequestStarted() {},
    sessionRequestDone() {},
    send: () => Promise.resolve(),
    sendError(id: number, message: string) {
      errors.push({ id, message });
      return Promise.resolve();
    },
    updateFlow() {},
    close() {},
    closeGracefully() {},
  } as unknown as SessionHost;
  return { host, errors, paused };
}

describe('the stall watch while the session holds its apps', () => {
  it('resets no stream while the apps are paused, and resumes watching once they are not', async () => {
    const app = neverReadingApp();
    const { host, errors, paused } = fakeHost(app);
    const streams = new SessionStreams(host);
    try {
      expect(streams.open(1, new Uint8Array(0), 'bstr')).toBe(true);
      await waitFor(() => app.listenerCount('data') > 0, 5000, 'the app attached');
      // The client's queue is over budget: the session stops reading its apps (an echo app then stops reading too).
      paused.value = true;
      streams.pauseApps();
      for (let i = 0; i < 8; i++) streams.write(1, new Uint8Array(32 * 1024), 'bstr');
      expect(streams.appQueueBlocked()).toBe(true);

      // Many stall timeouts pass while the session holds the app's output: the stream is kept.
      await new Promise((r) => setTimeout(r, STALL_MS * 10));
      expect(errors).toEqual([]);
      expect(app.destroyed).toBe(false);

      // The client drained: the apps are read again; an app that still takes nothing is reset.
      paused.value = false;
      streams.resumeApps();
      await waitFor(() => errors.length > 0, 5000, 'the stream reset');
      expect(errors).toEqual([{ id: 1, message: appStallText(STALL_MS) }]);
      expect(app.destroyed).toBe(true);
    } finally {
      streams.destroyAll();
    }
  });
});

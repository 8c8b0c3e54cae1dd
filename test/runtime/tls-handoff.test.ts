// The TLS ingress's main-thread side with session workers (tls-handoff.ts) and the rotation timer both TLS paths
// use (tls-ingress.ts), on fakes and fake timers: a connection held while a due certificate is re-issued is
// closed after the handshake timeout, as with workers = 1; a listener that cannot start leaves no timer or hook
// behind; a certificate that is due the moment it is issued is retried after 30 s, not in a loop.
import { PassThrough } from 'node:stream';
import type { SecureContext } from 'node:tls';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AttestedIdentity } from '../../src/ingress/attested-identity.ts';
import { startRotationTimer, startTlsIngress, type IngressIdentity } from '../../src/ingress/tls-ingress.ts';
import type { SharedAdmission } from '../../src/responder/shared-admission.ts';
import { startTlsHandoff } from '../../src/runtime/tls-handoff.ts';
import type { SessionWorkers } from '../../src/runtime/session-workers.ts';
import type { Listener, ListenOptions } from '../../src/transport/types.ts';
import pino from 'pino';

const silent = pino({ level: 'silent' });
const cert = { der: new Uint8Array(1), document: new Uint8Array(1), notAfter: 0, spkiDer: new Uint8Array(1), context: {} as SecureContext };

/** An identity whose serving() waits for `reissued()` when `slow`; counts current() calls. */
function fakeIdentity(opts: { due: boolean; msUntilDue?: number; slow?: boolean }) {
  const calls = { current: 0 };
  let reissued!: () => void;
  const slowServing = new Promise<typeof cert>((r) => (reissued = () => r(cert)));
  const id = {
    served: cert,
    due: opts.due,
    spkiDer: cert.spkiDer,
    onIssued: undefined as (() => void) | undefined,
    current: () => (calls.current++, Promise.resolve(cert)),
    serving: () => (opts.slow === true ? slowServing : Promise.resolve(cert)),
    contextFor: () => Promise.reject(new Error('unused')),
    documentFor: () => Promise.reject(new Error('unused')),
    msUntilDue: () => opts.msUntilDue ?? 3_600_000,
  };
  return { id, calls, reissued: () => reissued() };
}

function countingSlots() {
  const n = { connections: 0, handshakes: 0, refused: 0 };
  return {
    n,
    slots: {
      tryOpen: () => (n.connections++, n.handshakes++, true),
      handshakeEnded: () => void n.handshakes--,
      closed: () => void n.connections--,
      refused: () => void n.refused++,
      get refusedCount() {
        return n.refused;
      },
    },
  };
}

const fakeWorkers = { tls: true, onIdentityPort: () => () => {}, handTls: () => true } as unknown as SessionWorkers;

afterEach(() => {
  vi.useRealTimers();
});

describe('startTlsHandoff', () => {
  it('closes a connection held for a due certificate after the handshake timeout and gives its slots back once', async () => {
    vi.useFakeTimers();
    const { id, reissued } = fakeIdentity({ due: true, slow: true });
    const { n, slots } = countingSlots();
    let accept: ListenOptions['onConnection'] | undefined;
    const listen = (o: ListenOptions): Promise<Listener> => ((accept = o.onConnection), Promise.resolve({ address: 'fake', port: 1, close: () => Promise.resolve() } as unknown as Listener));
    const ingress = await startTlsHandoff({ listen, identity: id as unknown as AttestedIdentity, workers: fakeWorkers, admission: { tls: slots } as unknown as SharedAdmission, handshakeTimeoutMs: 1_000, logger: silent });
    const raw = new PassThrough();
    accept!(raw, { remote: 'fake', transport: 'tcp' } as never);
    expect(n).toEqual({ connections: 1, handshakes: 1, refused: 0 });
    await vi.advanceTimersByTimeAsync(999);
    expect(raw.destroyed).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(raw.destroyed).toBe(true);
    // When the re-issue answers, the closed connection goes to no worker and its slots come back exactly once.
    reissued();
    await vi.advanceTimersByTimeAsync(0);
    expect(n).toEqual({ connections: 0, handshakes: 0, refused: 1 });
    await ingress.close();
  });

  it('a listener that cannot start leaves no rotation timer and no hook on the identity', async () => {
    vi.useFakeTimers();
    const { id, calls } = fakeIdentity({ due: false, msUntilDue: 1_000 });
    const { slots } = countingSlots();
    const listen = (): Promise<Listener> => Promise.reject(new Error('EADDRINUSE'));
    await expect(startTlsHandoff({ listen, identity: id as unknown as AttestedIdentity, workers: fakeWorkers, admission: { tls: slots } as unknown as SharedAdmission, logger: silent })).rejects.toThrow('EADDRINUSE');
    expect(id.onIssued).toBeUndefined();
    const before = calls.current;
    await vi.advanceTimersByTimeAsync(2 * 3_600_000);
    expect(calls.current).toBe(before);
  });
});

describe('startTlsIngress', () => {
  it('a listener that cannot start leaves no rotation timer', async () => {
    vi.useFakeTimers();
    const { id, calls } = fakeIdentity({ due: false, msUntilDue: 1_000 });
    const listen = (): Promise<Listener> => Promise.reject(new Error('EADDRINUSE'));
    await expect(startTlsIngress({ listen, identity: id as unknown as IngressIdentity, attach: () => { throw new Error('unused'); }, logger: silent })).rejects.toThrow('EADDRINUSE');
    const before = calls.current;
    await vi.advanceTimersByTimeAsync(2 * 3_600_000);
    expect(calls.current).toBe(before);
  });
});

describe('startRotationTimer', () => {
  it('retries a certificate that is due as soon as it is issued after 30 s, not in a loop', async () => {
    vi.useFakeTimers();
    const { id, calls } = fakeIdentity({ due: true, msUntilDue: 0 });
    const stop = startRotationTimer(id, silent);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(calls.current).toBe(1);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(calls.current).toBe(2);
    stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls.current).toBe(2);
  });
});

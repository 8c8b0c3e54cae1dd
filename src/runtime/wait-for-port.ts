// Polls a TCP port until something accepts a connection: how the runtime knows the app is up.
import net from 'node:net';
import { RuntimeError } from './errors.ts';

export interface WaitForPortOptions {
  /** Between attempts. Default 100 ms. */
  intervalMs?: number;
  /** One attempt's connect timeout. Default 1 000 ms. */
  attemptTimeoutMs?: number;
  /** Stops waiting (rejects with RUNTIME_ABORTED). */
  signal?: AbortSignal;
}

/** One connect attempt: true when accepted, false when refused, reset or timed out. */
export function probePort(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.on('error', () => {});
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** Resolves once `host:port` accepts a connection; retries forever until `signal` aborts. */
export async function waitForPort(host: string, port: number, opts: WaitForPortOptions = {}): Promise<void> {
  const intervalMs = opts.intervalMs ?? 100;
  const attemptTimeoutMs = opts.attemptTimeoutMs ?? 1_000;
  const aborted = (): RuntimeError => new RuntimeError('RUNTIME_ABORTED', `stopped waiting for ${host}:${port}`);
  for (;;) {
    if (opts.signal?.aborted) throw aborted();
    if (await probePort(host, port, attemptTimeoutMs)) return;
    if (opts.signal?.aborted) throw aborted();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(finish, intervalMs);
      function finish(): void {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', finish);
        resolve();
      }
      opts.signal?.addEventListener('abort', finish, { once: true });
    });
  }
}

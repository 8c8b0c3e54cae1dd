// Listening on the parent's TCP ports: a bind failure is one typed error naming the address.
import type net from 'node:net';
import { BridgeError } from './errors.ts';

/** `what` names the listener in the error (e.g. 'ops'). */
export async function listenOrFail(server: net.Server, listen: { host: string; port: number }, what?: string): Promise<void> {
  const label = what === undefined ? '' : ` (${what})`;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void =>
      reject(new BridgeError('BRIDGE_LISTEN_FAILED', `cannot listen on ${listen.host}:${listen.port}${label}: ${err.code ?? err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

// Listening on the parent's TCP ports: a bind failure is one typed error naming the address.
import net from 'node:net';
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

/**
 * A TCP host that only this machine can reach: 127.0.0.0/8, ::1 (bracketed or not), or the name localhost.
 * One rule for a listen address and for a Host header's name (a request for a loopback name, not a rebound
 * one): an IPv4 address must be one (net.isIPv4), since "127.999.0.1" would be resolved as a name.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (h.toLowerCase() === 'localhost' || h === '::1') return true;
  return net.isIPv4(h) && h.startsWith('127.');
}

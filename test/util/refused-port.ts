// A loopback TCP port nothing listens on, for tests that expect a refused connection. Not one freed after
// listen(0): the kernel hands such a port to the next listen(0), and test files run in parallel (a WebSocket
// server of another file once answered on it). listen(0) never picks a port below the ephemeral range.
import { readFileSync } from 'node:fs';
import net from 'node:net';

export async function refusedPort(): Promise<number> {
  const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  for (let p = low - 1; p > low - 200; p--) {
    const refused = await new Promise<boolean>((resolve) => {
      const c = net.connect({ host: '127.0.0.1', port: p });
      c.once('connect', () => (c.destroy(), resolve(false)));
      c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
    });
    if (refused) return p;
  }
  throw new Error('no refused loopback port below the ephemeral range');
}

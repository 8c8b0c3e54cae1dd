// A stand-in for the native vsock listener, for the host services that serve only one peer CID (credentials, the
// egress dialer, the log sink; src/host/vsock-peer.ts): no vsock here. `listenWith` takes the place of the
// service's listener and keeps its connection handler; `peer(info)` hands the service one end of a fresh AF_UNIX
// connection, labelled with `info` as the native listener labels a vsock peer, and returns the enclave's end —
// the service's own code path from there on.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { ConnectionHandler, ConnectionInfo, Listener } from '../../src/transport/types.ts';

export interface VsockStandIn {
  listenWith(where: unknown, o: { onConnection: ConnectionHandler }): Promise<Listener>;
  /** How often the service opened its listener. */
  readonly listened: number;
  peer(info: ConnectionInfo): Promise<net.Socket>;
  /** Removes the directory of the connections' socket files, when the stand-in made it. */
  cleanup(): void;
}

/** `dir`: where the connections' socket files go (default: a directory of its own, removed by cleanup()). */
export function vsockStandIn(port: number, dir?: string): VsockStandIn {
  const own = dir === undefined;
  const where = dir ?? mkdtempSync(path.join(os.tmpdir(), 'vsock-stand-in-'));
  let handle: ConnectionHandler | undefined;
  let listened = 0;
  let made = 0;
  return {
    listenWith(_where, o) {
      handle = o.onConnection;
      listened++;
      return Promise.resolve({ address: `vsock:*:${port}`, port, close: () => Promise.resolve() });
    },
    get listened() {
      return listened;
    },
    async peer(info) {
      if (handle === undefined) throw new Error('test setup: the service has not listened');
      const pairPath = path.join(where, `vsock-pair-${made++}.sock`);
      const srv = net.createServer();
      await new Promise<void>((r) => srv.listen(pairPath, r));
      const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
      const enclave = net.connect(pairPath);
      await new Promise<void>((r) => enclave.once('connect', r));
      handle(await accepted, info);
      srv.close(); // stops listening; the accepted connection stays open
      enclave.on('error', () => {});
      return enclave;
    },
    cleanup: () => {
      if (own) rmSync(where, { recursive: true, force: true });
    },
  };
}

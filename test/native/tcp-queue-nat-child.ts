// Run by tcp-queue.test.ts inside a fresh network namespace (`unshare --net`, root), never in the machine's own one:
// the agent's connection to the app goes through a DNAT (127.0.0.1:P1 → 127.0.0.1:P2) and another socket listens on
// P1. Our socket's peer address is then P1, where the only socket is that listener: the exact sock_diag lookup of
// the peer falls back to the listener, whose "receive queue" is its accept backlog, not the app's unread bytes.
// Prints one JSON line: what socketOutq and tcpPeerUnread answered.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { bringUpLoopback, loadNative } from '../../src/transport/native.ts';

const q = loadNative() as unknown as { socketOutq(fd: number): number; tcpPeerUnread(fd: number): number };

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

bringUpLoopback();
const app = net.createServer({ pauseOnConnect: true });
const other = net.createServer();
const appPort = await listen(app);
const otherPort = await listen(other);
execFileSync('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-d', '127.0.0.1', '--dport', String(otherPort), '-j', 'DNAT', '--to-destination', `127.0.0.1:${appPort}`]);
const accepted = new Promise<net.Socket>((resolve) => app.once('connection', resolve));
const agentEnd = net.connect(otherPort, '127.0.0.1');
await new Promise<void>((resolve) => agentEnd.once('connect', resolve));
await accepted;
agentEnd.write(Buffer.alloc(100_000, 1)); // fits the app's receive buffer: all of it waits there unread
await new Promise((r) => setTimeout(r, 200));
const fd = (agentEnd as unknown as { _handle: { fd: number } })._handle.fd;
const out: Record<string, unknown> = { peerPort: agentEnd.remotePort, otherPort, outq: q.socketOutq(fd) };
try {
  out.peerUnread = q.tcpPeerUnread(fd);
} catch (err) {
  out.code = (err as { code?: string }).code;
}
console.log(JSON.stringify(out));
process.exit(0);

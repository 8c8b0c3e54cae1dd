// The host dialer's DNS forwarding: one raw query to the parent instance's resolvers (those of
// /etc/resolv.conf unless configured), over UDP, retried over TCP when the answer is truncated; the next
// resolver on a timeout or error. The answer goes back to the enclave unchanged.
import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import { EgressError } from '../egress/errors.ts';

export interface ResolverAddress {
  host: string;
  port: number;
}

/** The parent's resolvers as Node read them from /etc/resolv.conf. */
export function systemResolvers(): ResolverAddress[] {
  return dns.getServers().map((s) => {
    const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(s);
    return net.isIP(s) ? { host: s, port: 53 } : { host: m?.[1] ?? s, port: Number(m?.[2] ?? 53) };
  });
}

function udpQuery(r: ResolverAddress, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(net.isIPv6(r.host) ? 'udp6' : 'udp4');
    const timer = setTimeout(() => finish(new Error(`no answer from ${r.host}:${r.port} within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | null, msg?: Buffer): void => {
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(msg!);
    };
    sock.on('error', (err) => finish(err));
    sock.on('message', (msg, from) => {
      // Only the resolver's answer to this query id counts.
      if (from.address !== r.host || from.port !== r.port || msg.length < 12 || msg.readUInt16BE(0) !== query.readUInt16BE(0)) return;
      finish(null, msg);
    });
    sock.send(query, r.port, r.host);
  });
}

function tcpQuery(r: ResolverAddress, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: r.host, port: r.port });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error(`no TCP answer from ${r.host}:${r.port} within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | null, msg?: Buffer): void => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(msg!);
    };
    sock.on('error', (err) => finish(err));
    sock.on('end', () => finish(new Error(`${r.host}:${r.port} closed before a complete answer`)));
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) finish(null, buf.subarray(2, 2 + buf.readUInt16BE(0)));
    });
    const len = Buffer.alloc(2);
    len.writeUInt16BE(query.length);
    sock.write(Buffer.concat([len, query]));
  });
}

export async function forwardDnsQuery(resolvers: readonly ResolverAddress[], query: Buffer, timeoutMs: number): Promise<Buffer> {
  const errors: string[] = [];
  for (const r of resolvers) {
    try {
      const answer = await udpQuery(r, query, timeoutMs);
      const truncated = (answer.readUInt16BE(2) & 0x0200) !== 0;
      return truncated ? await tcpQuery(r, query, timeoutMs) : answer;
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  throw new EgressError('EGRESS_RESOLVER_ERROR', resolvers.length === 0 ? 'no resolvers configured' : errors.join('; '));
}

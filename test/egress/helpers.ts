// Loopback fixtures for the egress tests: a test DNS server (its own small encoder, independent of
// src/egress/dns-message.ts), a byte-exact echo-ish TCP server, an HTTP server, and the whole egress stack
// (host dialer on TCP standing in for vsock + the in-enclave egress service).
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { configFromObject } from '../../src/config.ts';
import type { EgressDecision } from '../../src/egress/decision-log.ts';
import { decodeRequestBody, decodeRequestHeader, encodeRequest, REQUEST_HEADER_BYTES } from '../../src/egress/flow-frame.ts';
import { readBytes } from '../../src/egress/read-bytes.ts';
import { startEgress, type EgressService } from '../../src/egress/service.ts';
import { startEgressDialer, type EgressDialer } from '../../src/host/egress-dialer.ts';
import { connectStream } from '../../src/transport/connect.ts';

export const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/**
 * A global address standing in for a public server in DNS answers and original destinations (the TEST-NETs
 * cannot: they are not globally reachable, address-class.ts). Never dialled: startFlowNat maps it to a
 * loopback or namespace server on the way to the host dialer.
 */
export const publicIp = (n: number): string => `1.2.3.${n}`;

/**
 * A NAT in front of a host dialer, as far as the enclave can tell: a CONNECT to an address `map` names dials
 * the address it maps to instead; anything else passes unchanged. Listens on `listen`, reaches the dialer at
 * `dialer`.
 */
export async function startFlowNat(listen: net.ListenOptions, dialer: net.NetConnectOpts, map: Record<string, string>): Promise<net.Server> {
  const nat = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    void (async () => {
      const { op, len } = decodeRequestHeader(await readBytes(s, REQUEST_HEADER_BYTES, 2_000, 'header'));
      const req = decodeRequestBody(op, await readBytes(s, len, 2_000, 'body'));
      const up = net.connect({ ...dialer, allowHalfOpen: true });
      up.on('error', () => s.destroy());
      s.on('close', () => up.destroy());
      up.write(encodeRequest(req.op === 'connect' && map[req.ip] !== undefined ? { ...req, ip: map[req.ip]! } : req));
      s.pipe(up);
      up.pipe(s);
    })().catch(() => s.destroy());
  });
  await new Promise<void>((r) => nat.listen(listen, () => r()));
  return nat;
}

export interface TestDns {
  port: number;
  /** Every name asked, in order. */
  queries: string[];
  close(): Promise<void>;
}

/** A UDP DNS server answering A queries from `records` (name → IPv4 list); other names NXDOMAIN. */
export async function startTestDns(records: Record<string, string[]>, host = '127.0.0.1'): Promise<TestDns> {
  const queries: string[] = [];
  const sock = dgram.createSocket('udp4');
  sock.on('message', (msg, from) => {
    let p = 12;
    const labels: string[] = [];
    while (msg[p]! > 0) {
      labels.push(msg.subarray(p + 1, p + 1 + msg[p]!).toString('latin1'));
      p += 1 + msg[p]!;
    }
    const qtype = msg.readUInt16BE(p + 1);
    const qEnd = p + 5;
    const name = labels.join('.').toLowerCase();
    queries.push(name);
    const ips = qtype === 1 ? (records[name] ?? []) : [];
    const head = Buffer.alloc(12);
    msg.copy(head, 0, 0, 2);
    head.writeUInt16BE(0x8180 | (name in records ? 0 : 3), 2);
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(ips.length, 6);
    const answers = ips.map((ip) => {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // pointer to the question's name
      rr.writeUInt16BE(1, 2);
      rr.writeUInt16BE(1, 4);
      rr.writeUInt32BE(60, 6);
      rr.writeUInt16BE(4, 10);
      ip.split('.').forEach((o, i) => rr.writeUInt8(Number(o), 12 + i));
      return rr;
    });
    sock.send(Buffer.concat([head, msg.subarray(12, qEnd), ...answers]), from.port, from.address);
  });
  await new Promise<void>((r) => sock.bind({ address: host, port: 0 }, () => r()));
  return { port: sock.address().port, queries, close: () => new Promise((r) => sock.close(() => r())) };
}

export interface ExchangeServer {
  port: number;
  /** sha256 and length of everything each connection received before its client half-closed. */
  received: { hash: string; length: number }[];
  close(): Promise<void>;
}

/**
 * Reads until the client half-closes, then answers `reply(received)` and closes: proves both directions and
 * the half-close in between.
 */
export async function startExchangeServer(host: string, reply: (got: Buffer) => Buffer): Promise<ExchangeServer> {
  const received: { hash: string; length: number }[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => {});
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      const got = Buffer.concat(chunks);
      received.push({ hash: sha256(got), length: got.length });
      s.end(reply(got));
    });
  });
  await new Promise<void>((r) => server.listen({ host, port: 0 }, () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

export interface HttpServer {
  port: number;
  /** Every request the server saw: path, Host and body. */
  requests: { url: string; host: string | undefined; body: string }[];
  close(): Promise<void>;
}

export async function startHttpServer(host: string): Promise<HttpServer> {
  const requests: HttpServer['requests'] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => requests.push({ url: req.url ?? '', host: req.headers.host, body: Buffer.concat(chunks).toString('latin1') }));
    const body = JSON.stringify({ method: req.method, url: req.url, host: req.headers.host, proxyConnection: req.headers['proxy-connection'] ?? null, proxyAuthorization: req.headers['proxy-authorization'] ?? null });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen({ host, port: 0 }, () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    requests,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface Stack {
  dialer: EgressDialer;
  egress: EgressService;
  decisions: EgressDecision[];
  records: object[];
  close(): Promise<void>;
}

/** The host dialer on 127.0.0.1:0 (resolving through `dnsPort`) and the explicit proxy on a free port. */
export async function startStack(destinations: string[], dnsPort: number, extra: Record<string, unknown> = {}, allowNonGlobal = ['127.0.0.2/32']): Promise<Stack> {
  const dialer = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: dnsPort }], allowNonGlobal });
  const config = configFromObject({ egress: { enabled: true, destinations, ...extra } });
  const decisions: EgressDecision[] = [];
  const records: object[] = [];
  const egress = await startEgress({
    egress: config.egress,
    dialer: () => connectStream({ kind: 'tcp', host: '127.0.0.1', port: dialer.port! }),
    proxyPort: 0,
    onDecision: (d) => decisions.push(d),
    trxSink: { write: (r) => records.push(r), close: async () => {} },
  });
  return {
    dialer,
    egress,
    decisions,
    records,
    async close() {
      await egress.close();
      await dialer.close();
    },
  };
}

/** A raw CONNECT through the proxy: the status line, and the socket positioned after the proxy's head. */
export function connectVia(proxyPort: number, target: string): Promise<{ status: number; head: string; socket: net.Socket; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port: proxyPort, allowHalfOpen: true });
    socket.on('error', reject);
    socket.write(`CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\n\r\n`);
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      socket.pause();
      const head = buf.subarray(0, end).toString('latin1');
      resolve({ status: Number(head.split(' ')[1]), head, socket, rest: buf.subarray(end + 4) });
    };
    socket.on('data', onData);
  });
}

/** Sends `out`, half-closes, and collects everything until the server closes. */
export function exchange(socket: net.Socket, out: Buffer, already: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [already];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.resume();
    socket.end(out);
  });
}

/** Reads a whole raw HTTP response (the proxy closes after one). */
export function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('error', reject);
    s.write(text);
  });
}

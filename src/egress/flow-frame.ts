// The enclave ↔ host egress flow protocol (EGRESS.md §3.3). One stream per flow; big-endian integers.
//   Request : "EGR1" | ver u8 = 1 | op u8 | len u16 | body[len]
//     op 1 CONNECT : af u8 (4|6) | addr[4|16] | port u16 | timeout_ms u32 | name_len u8 | name (ASCII, logs only)
//     op 2 DNS     : one raw DNS query message (QR 0, opcode QUERY, one question of class IN, no
//                    zone transfer; anything else is malformed)
//   Response: "EGR1" | ver u8 = 1 | status u8 | errno i32 | len u16 | body[len]
//     CONNECT: body = a UTF-8 message; after status OK the stream carries raw bytes both ways.
//     DNS    : body = the raw DNS response, then the stream closes.
//   Status 6 BUSY: the host dialer is at its cap of concurrent flows (the enclave answers 503).
import net from 'node:net';
import { parseIPv6 } from '../util/ip-bytes.ts';
import { parseQuery, QTYPE, type Query } from './dns-message.ts';
import { EgressError } from './errors.ts';

export const MAGIC = Buffer.from('EGR1', 'latin1');
export const VERSION = 1;
export const REQUEST_HEADER_BYTES = 8;
export const RESPONSE_HEADER_BYTES = 12;
export const MAX_CONNECT_BODY = 1024;
export const MAX_BODY = 0xffff;

export const Op = { CONNECT: 1, DNS: 2 } as const;
export const Status = { OK: 0, HOST_POLICY_DENY: 1, CONNECT_FAILED: 2, TIMEOUT: 3, BAD_REQUEST: 4, RESOLVER_ERROR: 5, BUSY: 6 } as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

export interface ConnectRequest {
  op: 'connect';
  ip: string;
  port: number;
  timeoutMs: number;
  /** The name the enclave authorised (empty for an IP entry): for the host's log only. */
  name: string;
}
export interface DnsRequest {
  op: 'dns';
  query: Buffer;
}
export type FlowRequest = ConnectRequest | DnsRequest;

export interface FlowResponse {
  status: StatusCode;
  errno: number;
  body: Buffer;
}

function badFrame(why: string): never {
  throw new EgressError('EGRESS_BAD_FRAME', `malformed egress frame: ${why}`);
}

function header(kind: number, extra: Buffer, body: Buffer): Buffer {
  if (body.length > MAX_BODY) badFrame(`body of ${body.length} bytes exceeds ${MAX_BODY}`);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(body.length);
  return Buffer.concat([MAGIC, Buffer.from([VERSION, kind]), extra, len, body]);
}

export function encodeRequest(req: FlowRequest): Buffer {
  if (req.op === 'dns') return header(Op.DNS, Buffer.alloc(0), req.query);
  const family = net.isIP(req.ip);
  if (family === 0) badFrame(`${JSON.stringify(req.ip)} is not an IP address`);
  const addr = family === 4 ? Buffer.from(req.ip.split('.').map(Number)) : Buffer.from(parseIPv6(req.ip.replace(/%.*$/, '')) ?? badFrame(`${JSON.stringify(req.ip)} is not an IP address`));
  const name = Buffer.from(req.name, 'latin1');
  if (name.length > 255 || !/^[\x21-\x7e]*$/.test(req.name)) badFrame('the name must be ≤ 255 printable ASCII characters');
  const tail = Buffer.alloc(7);
  tail.writeUInt16BE(req.port, 0);
  tail.writeUInt32BE(req.timeoutMs, 2);
  tail.writeUInt8(name.length, 6);
  return header(Op.CONNECT, Buffer.alloc(0), Buffer.concat([Buffer.from([family]), addr, tail, name]));
}

export function encodeResponse(res: { status: StatusCode; errno?: number; body?: Buffer | string }): Buffer {
  const body = typeof res.body === 'string' ? Buffer.from(res.body, 'utf8') : (res.body ?? Buffer.alloc(0));
  const errno = Buffer.alloc(4);
  errno.writeInt32BE(res.errno ?? 0);
  return header(res.status, errno, body);
}

/** Checks magic and version; returns the body length announced. */
function checkHeader(h: Buffer, lenAt: number): number {
  if (!h.subarray(0, 4).equals(MAGIC)) badFrame(`expected magic "EGR1", found 0x${h.subarray(0, 4).toString('hex')}`);
  if (h[4] !== VERSION) badFrame(`expected version ${VERSION}, found ${h[4]}`);
  return h.readUInt16BE(lenAt);
}

/** The request header's op and body length (validated). */
export function decodeRequestHeader(h: Buffer): { op: number; len: number } {
  const len = checkHeader(h, 6);
  const op = h[5]!;
  if (op !== Op.CONNECT && op !== Op.DNS) badFrame(`unknown op ${op}`);
  if (op === Op.CONNECT && len > MAX_CONNECT_BODY) badFrame(`CONNECT body of ${len} bytes exceeds ${MAX_CONNECT_BODY}`);
  if (op === Op.DNS && len < 12) badFrame(`DNS query of ${len} bytes is shorter than a DNS header`);
  return { op, len };
}

export function decodeRequestBody(op: number, body: Buffer): FlowRequest {
  if (op === Op.DNS) {
    // A standard query only (all the enclave builds): the host forwards it from its own address to its
    // resolvers, which must not get a dynamic UPDATE, a NOTIFY, a forged response or a zone transfer request
    // from a compromised enclave.
    let q: Query;
    try {
      q = parseQuery(body);
    } catch (err) {
      badFrame(`DNS body is not one query: ${(err as Error).message}`);
    }
    if (q.opcode !== 0) badFrame(`DNS opcode ${q.opcode}, expected 0 (QUERY)`);
    if (q.question.class !== 1) badFrame(`DNS class ${q.question.class}, expected 1 (IN)`);
    if (q.question.type === QTYPE.AXFR || q.question.type === QTYPE.IXFR) badFrame(`DNS type ${q.question.type} is a zone transfer, not a lookup`);
    return { op: 'dns', query: body };
  }
  const family = body[0];
  const addrLen = family === 4 ? 4 : family === 6 ? 16 : badFrame(`address family must be 4 or 6, found ${family}`);
  if (body.length < 1 + addrLen + 7) badFrame(`CONNECT body of ${body.length} bytes is too short`);
  const addr = body.subarray(1, 1 + addrLen);
  const ip = family === 4 ? [...addr].join('.') : ipv6Text(addr);
  const at = 1 + addrLen;
  const port = body.readUInt16BE(at);
  const timeoutMs = body.readUInt32BE(at + 2);
  const nameLen = body[at + 6]!;
  if (body.length !== at + 7 + nameLen) badFrame(`CONNECT body is ${body.length} bytes, its fields say ${at + 7 + nameLen}`);
  const name = body.subarray(at + 7).toString('latin1');
  if (!/^[\x21-\x7e]*$/.test(name)) badFrame('the name is not printable ASCII');
  if (port === 0) badFrame('port 0');
  return { op: 'connect', ip, port, timeoutMs, name };
}

export function decodeResponseHeader(h: Buffer): { status: StatusCode; errno: number; len: number } {
  const len = checkHeader(h, 10);
  const status = h[5]!;
  if (status > Status.BUSY) badFrame(`unknown status ${status}`);
  return { status: status as StatusCode, errno: h.readInt32BE(6), len };
}

function ipv6Text(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // Let the socket layer canonicalise (compresses the longest zero run).
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

// The few DNS message operations egress needs (RFC 1035): read a query's question, build a query, read
// a response's answers (names decompressed, with loop protection), and build a response from a question and
// A/AAAA/CNAME records (no compression). Everything else in a message is passed over, never interpreted.
import net from 'node:net';
import { EgressError } from './errors.ts';

export const QTYPE = { A: 1, CNAME: 5, AAAA: 28, IXFR: 251, AXFR: 252 } as const;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;
const CLASS_IN = 1;

export interface Question {
  name: string;
  type: number;
  class: number;
}
export interface Query {
  id: number;
  /** Recursion desired, echoed in the answer. */
  rd: boolean;
  opcode: number;
  question: Question;
}
export type Answer =
  | { name: string; type: typeof QTYPE.A | typeof QTYPE.AAAA; ttl: number; address: string }
  | { name: string; type: typeof QTYPE.CNAME; ttl: number; target: string }
  | { name: string; type: number; ttl: number };
export interface Response {
  id: number;
  rcode: number;
  truncated: boolean;
  question: Question | null;
  answers: Answer[];
}

function bad(why: string): never {
  throw new EgressError('EGRESS_BAD_DNS_MESSAGE', `malformed DNS message: ${why}`);
}

/** A (possibly compressed) name at `at`: the name and the offset just after it in the original position. */
function readName(msg: Buffer, at: number): { name: string; next: number } {
  const labels: string[] = [];
  let pos = at;
  let next = -1;
  // Octets of the name so far, counting each length byte and the final zero (RFC 1035: at most 255). Checked
  // as the walk goes: a limit applied only at the end let 64 pointer jumps each re-walk ~64 KiB of labels.
  let octets = 1;
  for (let jumps = 0; ; ) {
    if (pos >= msg.length) bad('name runs past the end');
    const len = msg[pos]!;
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= msg.length) bad('truncated compression pointer');
      const target = ((len & 0x3f) << 8) | msg[pos + 1]!;
      if (next < 0) next = pos + 2;
      if (target >= pos || ++jumps > 64) bad('compression pointer loop');
      pos = target;
      continue;
    }
    if (len > 63) bad(`label length ${len}`);
    octets += 1 + len;
    if (octets > 255) bad('name longer than 255 octets');
    if (pos + 1 + len > msg.length) bad('label runs past the end');
    // A '.' byte inside a label would read as a label boundary once joined: "a."+"com" as a..com.
    if (msg.subarray(pos + 1, pos + 1 + len).includes(0x2e)) bad('a "." byte inside a label');
    // Letter case kept: an answer echoes the question as asked (0x20 clients check it); policy normalises.
    labels.push(msg.subarray(pos + 1, pos + 1 + len).toString('latin1'));
    pos += 1 + len;
  }
  return { name: labels.join('.'), next };
}

function writeName(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const label of name === '' ? [] : name.split('.')) {
    const b = Buffer.from(label, 'latin1');
    if (b.length === 0 || b.length > 63) bad(`label ${JSON.stringify(label)}`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function readQuestion(msg: Buffer, at: number): { q: Question; next: number } {
  const { name, next } = readName(msg, at);
  if (next + 4 > msg.length) bad('question runs past the end');
  return { q: { name, type: msg.readUInt16BE(next), class: msg.readUInt16BE(next + 2) }, next: next + 4 };
}

export function parseQuery(msg: Buffer): Query {
  if (msg.length < 12) bad(`${msg.length} bytes is shorter than a header`);
  const flags = msg.readUInt16BE(2);
  if (flags & 0x8000) bad('a response where a query was expected');
  if (msg.readUInt16BE(4) !== 1) bad(`expected one question, found ${msg.readUInt16BE(4)}`);
  return { id: msg.readUInt16BE(0), rd: (flags & 0x0100) !== 0, opcode: (flags >> 11) & 0xf, question: readQuestion(msg, 12).q };
}

export function buildQuery(id: number, name: string, type: number): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2); // RD
  head.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(CLASS_IN, 2);
  return Buffer.concat([head, writeName(name), tail]);
}

export function parseResponse(msg: Buffer): Response {
  if (msg.length < 12) bad(`${msg.length} bytes is shorter than a header`);
  const flags = msg.readUInt16BE(2);
  if (!(flags & 0x8000)) bad('a query where a response was expected');
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  let pos = 12;
  let question: Question | null = null;
  for (let i = 0; i < qd; i++) {
    const r = readQuestion(msg, pos);
    question ??= r.q;
    pos = r.next;
  }
  const answers: Answer[] = [];
  for (let i = 0; i < an; i++) {
    const { name, next } = readName(msg, pos);
    if (next + 10 > msg.length) bad('record runs past the end');
    const type = msg.readUInt16BE(next);
    const ttl = msg.readUInt32BE(next + 4);
    const rdlen = msg.readUInt16BE(next + 8);
    const rdata = next + 10;
    if (rdata + rdlen > msg.length) bad('record data runs past the end');
    if (type === QTYPE.A && rdlen === 4) answers.push({ name, type, ttl, address: [...msg.subarray(rdata, rdata + 4)].join('.') });
    else if (type === QTYPE.AAAA && rdlen === 16) answers.push({ name, type, ttl, address: v6(msg.subarray(rdata, rdata + 16)) });
    else if (type === QTYPE.CNAME) answers.push({ name, type, ttl, target: readName(msg, rdata).name });
    else answers.push({ name, type, ttl });
    pos = rdata + rdlen;
  }
  return { id: msg.readUInt16BE(0), rcode: flags & 0xf, truncated: (flags & 0x0200) !== 0, question, answers };
}

function v6(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

function encodeAnswer(a: Answer): Buffer {
  let rdata: Buffer;
  if ('address' in a) rdata = a.type === QTYPE.A ? Buffer.from(a.address.split('.').map(Number)) : v6Bytes(a.address);
  else if ('target' in a) rdata = writeName(a.target);
  else bad(`cannot re-encode a record of type ${a.type}`);
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(a.type, 0);
  fixed.writeUInt16BE(CLASS_IN, 2);
  fixed.writeUInt32BE(a.ttl, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([writeName(a.name), fixed, rdata]);
}

function v6Bytes(ip: string): Buffer {
  const out = Buffer.alloc(16);
  // BlockList-free expansion: SocketAddress canonicalises, then "::" is widened.
  const canon = new net.SocketAddress({ address: ip, family: 'ipv6' }).address;
  const [h, t] = canon.split('::');
  const head = h ? h.split(':') : [];
  const tail = t === undefined ? [] : t ? t.split(':') : [];
  const groups = t === undefined ? head : [...head, ...Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/**
 * A response to `query` with `rcode` and `answers`. `maxBytes` (512 over UDP): when the answers do not fit,
 * they are left out and TC is set, so the client retries over TCP.
 */
export function buildResponse(query: Query, rcode: number, answers: readonly Answer[], maxBytes = 0xffff): Buffer {
  const q = query.question;
  const qtail = Buffer.alloc(4);
  qtail.writeUInt16BE(q.type, 0);
  qtail.writeUInt16BE(q.class, 2);
  const question = Buffer.concat([writeName(q.name), qtail]);
  const records = answers.map(encodeAnswer);
  let truncated = 12 + question.length + records.reduce((n, r) => n + r.length, 0) > maxBytes;
  if (truncated) records.length = 0;
  if (12 + question.length > maxBytes) truncated = true;
  const head = Buffer.alloc(12);
  head.writeUInt16BE(query.id, 0);
  // QR, opcode echoed, RD echoed, RA, TC when truncated, rcode
  head.writeUInt16BE(0x8000 | (query.opcode << 11) | (truncated ? 0x0200 : 0) | (query.rd ? 0x0100 : 0) | 0x0080 | (rcode & 0xf), 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(records.length, 6);
  return Buffer.concat([head, question, ...records]);
}

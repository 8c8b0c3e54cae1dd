// Transparent mode's resolver on 127.0.0.1:53 (UDP and TCP; iptables sends every DNS packet here):
//   a name no entry allows       → REFUSED, and no query leaves the enclave
//   an allowed name, type A      → resolved through the host; non-global answers dropped (unless an IP entry
//                                  names them); each global address pinned to the name for max(TTL, 30 s) (a
//                                  non-global one is never pinned: only an IP entry on its port allows a flow).
//                                  The answer is kept for its TTL (name-cache.ts, ≤ 300 s): a lookup within it
//                                  makes no host round trip, is answered with the TTL left, and pins again
//   an allowed name, other types → empty NOERROR (IPv6 is off: AAAA gets no address)
// The answer is rebuilt from the question and the kept A records (CNAME chains flattened onto the name).
// Bounded whatever the app sends: concurrent queries for one name share one host exchange; at most
// MAX_DNS_IN_FLIGHT host exchanges process-wide (more: SERVFAIL, recorded as busy); per TCP connection at
// most TCP_MAX_OUTSTANDING queries answered at once and TCP_MAX_UNWRITTEN answer bytes queued (past either,
// the connection is not read until they drain); at most MAX_TCP_CONNECTIONS connections; over UDP, queries of at
// most UDP_MAX bytes (a question is far smaller; larger ones get FORMERR) and at most UDP_MAX_OUTSTANDING waiting
// for an answer (more get SERVFAIL at once), so what waits is bounded too.
import dgram from 'node:dgram';
import net from 'node:net';
import type { DecisionLog } from './decision-log.ts';
import { buildResponse, parseQuery, QTYPE, RCODE, type Answer, type Query } from './dns-message.ts';
import { EgressError } from './errors.ts';
import type { NameCache } from './name-cache.ts';
import { MAX_PIN_S, type PinTable } from './pin-table.ts';
import { isNonGlobal } from './address-class.ts';
import { normalizeName, type EgressPolicy } from './policy.ts';
import { resolveAShared, type DnsTransport } from './resolver.ts';

const UDP_MAX = 512;
const TCP_IDLE_MS = 10_000;
export const MAX_TCP_CONNECTIONS = 32;
export const TCP_MAX_OUTSTANDING = 16;
export const TCP_MAX_UNWRITTEN = 64 * 1024;
export const UDP_MAX_OUTSTANDING = 256;

export interface DnsStubOptions {
  policy: EgressPolicy;
  dns: DnsTransport;
  pins: PinTable;
  log: DecisionLog;
  /** Answers kept for their TTL (absent: every lookup goes to the host). */
  cache?: NameCache;
  host?: string;
  /** Default 53; 0 picks a free port (tests). */
  port?: number;
  /** A TCP connection with no query of its own in flight is closed after this long idle (default TCP_IDLE_MS). */
  tcpIdleMs?: number;
}

export interface DnsStub {
  readonly port: number;
  close(): Promise<void>;
}

/** A bare header answering message `id` with `rcode`: no question (QDCOUNT 0, as it carries none), no records. */
function headerOnly(id: number, rcode: number): Buffer {
  const head = buildResponse({ id, rd: false, opcode: 0, question: { name: '', type: 0, class: 1 } }, rcode, []).subarray(0, 12);
  head.writeUInt16BE(0, 4);
  return head;
}

/**
 * The answer to one query message (null: not even a DNS header, drop it). Never rejects: whatever goes wrong
 * inside is answered SERVFAIL, so one packet cannot become an unhandled rejection (which ends the agent).
 */
export async function answerQuery(opts: DnsStubOptions, msg: Buffer, maxBytes: number): Promise<Buffer | null> {
  try {
    return await answerParsed(opts, msg, maxBytes);
  } catch {
    return msg.length < 12 ? null : headerOnly(msg.readUInt16BE(0), RCODE.SERVFAIL);
  }
}

async function answerParsed(opts: DnsStubOptions, msg: Buffer, maxBytes: number): Promise<Buffer | null> {
  let q: Query;
  try {
    q = parseQuery(msg);
  } catch {
    return msg.length < 12 ? null : headerOnly(msg.readUInt16BE(0), RCODE.FORMERR);
  }
  const started = performance.now();
  const name = normalizeName(q.question.name);
  const deny = (reason: string): Buffer => {
    opts.log.record({ allowed: false, via: 'dns', name: q.question.name.slice(0, 253), ip: null, port: 53, bytesOut: 0, bytesIn: 0, durationMs: performance.now() - started, reason });
    return buildResponse(q, RCODE.REFUSED, [], maxBytes);
  };
  if (q.opcode !== 0 || q.question.class !== 1) return deny('not a standard IN query');
  if (name === null || !opts.policy.allowsNameOnSomePort(name)) return deny('name not on the allow-list');
  if (q.question.type !== QTYPE.A) return buildResponse(q, RCODE.NOERROR, [], maxBytes);
  try {
    // Concurrent queries for one name share one host exchange (and its pins).
    const cached = opts.cache?.get(name);
    const r = cached ?? (await resolveAShared(opts, name, name, opts.dns, (ip) => opts.policy.answerableAddress(ip)));
    if (cached === undefined) opts.cache?.set(name, r);
    for (const { ip, ttl } of r.allowed) if (!isNonGlobal(ip)) opts.pins.pin(name, ip, ttl);
    if (r.allowed.length === 0 && r.refused.length > 0) {
      opts.log.record({ allowed: false, via: 'dns', name, ip: r.refused[0]!, port: 53, bytesOut: 0, bytesIn: 0, durationMs: performance.now() - started, reason: 'resolves only to non-global addresses' });
    } else if (r.allowed.length > 0) {
      const dropped = r.refused.length > 0 ? `; dropped non-global ${r.refused.join(', ')}` : '';
      opts.log.record({ allowed: true, via: 'dns', name, ip: r.allowed[0]!.ip, port: 53, bytesOut: 0, bytesIn: 0, durationMs: performance.now() - started, reason: `answered ${r.allowed.length} address(es)${cached === undefined ? '' : ' from the cache'}, pinned${dropped}` });
    }
    // The pin lives max(TTL, 30 s) but at most MAX_PIN_S: a longer TTL would let the app keep an address its pin
    // no longer covers (its flows then reset).
    const answers: Answer[] = r.allowed.map(({ ip, ttl }) => ({ name: q.question.name, type: QTYPE.A, ttl: Math.min(ttl, MAX_PIN_S), address: ip }));
    return buildResponse(q, RCODE.NOERROR, answers, maxBytes);
  } catch (err) {
    if (err instanceof EgressError && err.code === 'EGRESS_DIALER_BUSY') {
      opts.log.record({ allowed: false, via: 'dns', name, ip: null, port: 53, bytesOut: 0, bytesIn: 0, durationMs: performance.now() - started, reason: err.message, failed: true, busy: true });
      return buildResponse(q, RCODE.SERVFAIL, [], maxBytes);
    }
    const nx = err instanceof EgressError && /NXDOMAIN/.test(err.message);
    return buildResponse(q, nx ? RCODE.NXDOMAIN : RCODE.SERVFAIL, [], maxBytes);
  }
}

export async function startDnsStub(opts: DnsStubOptions): Promise<DnsStub> {
  // Port 0 (tests): UDP picks a free port, TCP may find it taken; then try again with another.
  for (let attempt = 0; ; attempt++) {
    try {
      return await bindStub(opts);
    } catch (err) {
      if (opts.port !== 0 || attempt >= 10 || !(err instanceof EgressError) || !/EADDRINUSE/.test(err.message)) throw err;
    }
  }
}

async function bindStub(opts: DnsStubOptions): Promise<DnsStub> {
  const host = opts.host ?? '127.0.0.1';
  const udp = dgram.createSocket('udp4');
  udp.on('error', () => {});
  let udpOutstanding = 0;
  udp.on('message', (msg, from) => {
    const reply = (res: Buffer | null): void => {
      // try: send throws once the socket is closed (the stub stopped while the query was resolving)
      try {
        if (res !== null) udp.send(res, from.port, from.address);
      } catch {
        // nothing to answer to
      }
    };
    if (msg.length > UDP_MAX || udpOutstanding >= UDP_MAX_OUTSTANDING) {
      return reply(msg.length < 12 ? null : headerOnly(msg.readUInt16BE(0), msg.length > UDP_MAX ? RCODE.FORMERR : RCODE.SERVFAIL));
    }
    udpOutstanding++;
    void answerQuery(opts, msg, UDP_MAX)
      .then(reply, () => {})
      .finally(() => udpOutstanding--);
  });
  await new Promise<void>((resolve, reject) => {
    udp.once('error', (err) => reject(new EgressError('EGRESS_SETUP_FAILED', `DNS stub: cannot bind udp ${host}:${opts.port ?? 53}: ${(err as NodeJS.ErrnoException).code ?? err.message}`)));
    udp.bind({ address: host, port: opts.port ?? 53 }, () => resolve());
  });
  const port = udp.address().port;
  const tcp = net.createServer((s) => {
    s.on('error', () => {});
    let buf: Buffer = Buffer.alloc(0);
    let outstanding = 0;
    // Idle is the app's silence with no answer owed: a query the host takes ~10 s to answer (the enclave's DNS
    // deadline) must not lose its connection just before the answer; the answer's write re-arms the timer.
    s.setTimeout(opts.tcpIdleMs ?? TCP_IDLE_MS);
    s.on('timeout', () => {
      if (outstanding === 0) s.destroy();
    });
    const full = (): boolean => outstanding >= TCP_MAX_OUTSTANDING || s.writableLength > TCP_MAX_UNWRITTEN;
    // Starts the framed queries buffered while under both limits; reads on only while under them.
    const pump = (): void => {
      while (!full() && buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        outstanding++;
        void answerQuery(opts, msg, 0xffff)
          .then((res) => {
            outstanding--;
            if (s.destroyed) return;
            if (res !== null) {
              const len = Buffer.alloc(2);
              len.writeUInt16BE(res.length);
              s.write(Buffer.concat([len, res]));
            }
            pump();
          })
          .catch(() => s.destroy());
      }
      if (s.destroyed) return;
      if (full()) s.pause();
      else s.resume();
    };
    s.on('drain', pump);
    s.on('data', (c: Buffer) => {
      buf = buf.length === 0 ? c : Buffer.concat([buf, c]);
      pump();
    });
  });
  tcp.maxConnections = MAX_TCP_CONNECTIONS;
  tcp.on('error', () => {});
  try {
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', (err: NodeJS.ErrnoException) => reject(new EgressError('EGRESS_SETUP_FAILED', `DNS stub: cannot listen on tcp ${host}:${port}: ${err.code ?? err.message}`)));
      tcp.listen({ host, port }, () => resolve());
    });
  } catch (err) {
    udp.close();
    throw err;
  }
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        udp.close();
        tcp.close();
        resolve();
      }),
  };
}

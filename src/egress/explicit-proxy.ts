// The explicit egress proxy on 127.0.0.1 (HTTP_PROXY / HTTPS_PROXY for the app):
//   CONNECT host:port              → policy, resolve, dial over the host dialer → 200, then raw bytes
//   GET http://host[:port]/path    → the same checks; the request goes upstream in origin-form with Host
//                                    set to the checked authority (the app's own Host, which could name a
//                                    denied host on a shared address, is dropped), hop-by-hop headers removed
//                                    and Connection: close; then its Content-Length body and not a byte more
//                                    (a pipelined second request, with any Host, never leaves). One request
//                                    per proxy connection; a Transfer-Encoding body gets 411.
//   GET https://…                  → 400 "use CONNECT" (axios sends this; answering it in cleartext loops)
//   origin-form or anything else   → 400
// Refused → 403, dial failure or dialer down → 502, host dialer at its flow cap → 503, connect timeout (or no
// answer from the dialer) → 504. Each app connection takes a setup slot until its bytes are relayed
// (connection-slots.ts: it may hold a request head of up to 64 KiB while it arrives), one over that bound answered 503
// before a byte is read; and a flow slot once its upstream is open, one over that bound answered 503 (upstream closed).
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { DecisionLog } from './decision-log.ts';
import { ConnectionSlots, DEFAULT_MAX_PROXY_CONNECTIONS, type ConnectionSlot } from './connection-slots.ts';
import { authorizeAndDial, EgressDenied, type DialDeps } from './dial.ts';
import { EgressError } from './errors.ts';
import type { FlowTracker } from './flow-tracker.ts';
import { readHead, type ProxyHead } from './proxy-head.ts';
import { peekSni, sniForLog } from './sni.ts';
import { allowHalfOpen } from './splice.ts';
import { closeLingering, refusalLinger, type LingerLimits } from '../transport/lingering-close.ts';

const HEAD_TIMEOUT_MS = 30_000;
const SNI_TIMEOUT_MS = 10_000;
const HOP_BY_HOP = new Set(['connection', 'proxy-connection', 'keep-alive', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'upgrade']);

export interface ExplicitProxyOptions extends DialDeps {
  /** 0 picks a free port. */
  port: number;
  log: DecisionLog;
  flows: FlowTracker;
  /** CONNECT to a name: the TLS ClientHello must name the same host. */
  sniCheck: boolean;
  /** How long a request head may take to arrive (default HEAD_TIMEOUT_MS); then 408. */
  headTimeoutMs?: number;
  /**
   * An answered refusal lingers (lingering-close.ts) until no byte came for `lingerTimeoutMs`, or `lingerTimeMs`
   * after the answer at the latest ([limits] linger_timeout_ms / linger_time_ms; default 5 s / 30 s).
   */
  lingerTimeoutMs?: number;
  lingerTimeMs?: number;
  /** The bounds on app connections, shared with the transparent listener (default: own, at their defaults); one more is answered 503. */
  slots?: ConnectionSlots;
}

export interface ExplicitProxy {
  readonly port: number;
  /** "http://127.0.0.1:PORT" */
  readonly url: string;
  /** Stops accepting (open flows are the tracker's). */
  close(): Promise<void>;
}

/**
 * Answers and closes lingering (lingering-close.ts, within `linger`): not at once, since a close with unread
 * request bytes would reset before the answer; not never, since end() only half-closes a socket that allows
 * half-open and a client may never close its side (one descriptor held per such client, forever).
 */
function reply(socket: Duplex, linger: LingerLimits, status: number, reason: string, body: string): void {
  const text = body + '\n';
  socket.write(`HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
  closeLingering(socket, linger);
}

/** Where a request goes: host, port, and for absolute http:// the origin-form path. */
function targetOf(head: ProxyHead): { host: string; port: number; path: string | null } | { error: string; status: number } {
  if (head.method === 'CONNECT') {
    const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]/]+):(\d{1,5})$/.exec(head.target);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) return { status: 400, error: `CONNECT needs host:port (the ${head.target.length}-character target is not; not shown: it may hold credentials)` };
    return { host: m[1]!, port: Number(m[2]), path: null };
  }
  if (/^https:\/\//i.test(head.target)) return { status: 400, error: 'use CONNECT: this proxy does not fetch https:// URLs for you (set HTTPS_PROXY and let the client tunnel)' };
  if (!/^http:\/\//i.test(head.target)) return { status: 400, error: 'this is an egress proxy: send CONNECT host:port or an absolute http:// URL' };
  let url: URL;
  try {
    url = new URL(head.target);
  } catch {
    return { status: 400, error: `bad http:// URL (${head.target.length} characters; not shown: its query may hold secrets)` };
  }
  if (url.username !== '' || url.password !== '') return { status: 400, error: 'credentials in the URL are not forwarded' };
  return { host: url.hostname, port: url.port === '' ? 80 : Number(url.port), path: `${url.pathname}${url.search}` };
}

/** The request body's length from Content-Length (0 without one), or why it cannot be forwarded. */
function bodyLength(head: ProxyHead): number | { error: string; status: number } {
  if (head.headers.some(([n]) => n.toLowerCase() === 'transfer-encoding')) return { status: 411, error: 'send the request body with Content-Length (Transfer-Encoding bodies are not forwarded)' };
  const values = head.headers.filter(([n]) => n.toLowerCase() === 'content-length').flatMap(([, v]) => v.split(',').map((x) => x.trim()));
  if (values.length === 0) return 0;
  if (!values.every((v) => /^\d{1,15}$/.test(v) && v === values[0])) return { status: 400, error: 'conflicting or malformed Content-Length' };
  return Number(values[0]);
}

/**
 * The request in origin-form, as the upstream gets it: the checked authority as Host, the app's headers less
 * hop-by-hop ones and those its Connection headers name, the body's length written by us (never removable
 * through Connection, never two values), and `connection: close` (one request per flow).
 */
function originRequest(head: ProxyHead, host: string, port: number, path: string, body: number): string {
  const lines = [`${head.method} ${path} HTTP/1.1`, `host: ${port === 80 ? host : `${host}:${port}`}`];
  const named = new Set(
    head.headers
      .filter(([n]) => n.toLowerCase() === 'connection')
      .flatMap(([, v]) => v.toLowerCase().split(','))
      .map((s) => s.trim()),
  );
  let hadLength = false;
  for (const [n, v] of head.headers) {
    const l = n.toLowerCase();
    if (l === 'content-length') hadLength = true;
    if (l === 'host' || l === 'content-length' || HOP_BY_HOP.has(l) || named.has(l)) continue;
    lines.push(`${n}: ${v}`);
  }
  if (hadLength || body > 0) lines.push(`content-length: ${body}`);
  lines.push('connection: close');
  return lines.join('\r\n') + '\r\n\r\n';
}

function statusFor(err: unknown): [number, string] {
  if (err instanceof EgressError) {
    switch (err.code) {
      case 'EGRESS_DENIED':
        return [403, 'Forbidden'];
      case 'EGRESS_TIMEOUT':
      case 'EGRESS_FRAME_TIMEOUT': // the host dialer did not answer within the connect timeout and its margin
        return [504, 'Gateway Timeout'];
      case 'EGRESS_DIALER_BUSY':
        return [503, 'Service Unavailable'];
      default:
        return [502, 'Bad Gateway'];
    }
  }
  return [502, 'Bad Gateway'];
}

export async function startExplicitProxy(opts: ExplicitProxyOptions): Promise<ExplicitProxy> {
  const slots = opts.slots ?? new ConnectionSlots(DEFAULT_MAX_PROXY_CONNECTIONS, opts.log);
  const linger = refusalLinger(opts.lingerTimeoutMs, opts.lingerTimeMs);
  const handle = async (socket: net.Socket, slot: ConnectionSlot): Promise<void> => {
    const startedAt = performance.now();
    allowHalfOpen(socket);
    socket.on('error', () => {});
    let head: ProxyHead;
    try {
      head = await readHead(socket, opts.headTimeoutMs ?? HEAD_TIMEOUT_MS);
    } catch (err) {
      if ((err as EgressError).code === 'EGRESS_FRAME_TIMEOUT') reply(socket, linger, 408, 'Request Timeout', (err as Error).message);
      else reply(socket, linger, 400, 'Bad Request', (err as Error).message);
      return;
    }
    const target = targetOf(head);
    if ('error' in target) {
      reply(socket, linger, target.status, 'Bad Request', target.error);
      return;
    }
    const body = target.path === null ? 0 : bodyLength(head);
    if (typeof body !== 'number') {
      reply(socket, linger, body.status, body.status === 411 ? 'Length Required' : 'Bad Request', body.error);
      return;
    }
    // The host is the app's, unchecked when refused: cut to a DNS name's length, as the DNS stub does.
    const deny = (reason: string, ip: string | null, failed = false, busy = false): void =>
      opts.log.record({ allowed: false, via: 'explicit', name: target.host.slice(0, 253), ip, port: target.port, bytesOut: 0, bytesIn: 0, durationMs: performance.now() - startedAt, reason, failed, busy });
    let dialed;
    try {
      dialed = await authorizeAndDial(opts, target.host, target.port);
    } catch (err) {
      const [status, reason] = statusFor(err);
      deny((err as Error).message, err instanceof EgressDenied ? err.ip : null, status !== 403, status === 503);
      reply(socket, linger, status, reason, status === 403 ? `egress denied: ${(err as Error).message}` : `egress failed: ${(err as Error).message}`);
      return;
    }
    if (socket.destroyed) {
      dialed.stream.destroy();
      return;
    }
    if (!slot.startFlow()) {
      dialed.stream.destroy();
      reply(socket, linger, 503, 'Service Unavailable', `egress failed: ${slots.refuseFlow('explicit', dialed.name, { ip: dialed.ip, port: target.port }).message}`);
      return;
    }
    if (target.path === null) {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (opts.sniCheck && dialed.name !== '') {
        const sni = await peekSni(socket, SNI_TIMEOUT_MS);
        if (sni.kind !== 'sni' || sni.name !== dialed.name) {
          deny(sni.kind === 'sni' ? `TLS SNI ${sniForLog(sni.name)} is not ${dialed.name}` : 'no TLS SNI (sni_check)', dialed.ip);
          dialed.stream.destroy();
          socket.destroy();
          return;
        }
      }
    } else {
      const authority = dialed.name !== '' ? dialed.name : dialed.ip.includes(':') ? `[${dialed.ip}]` : dialed.ip;
      dialed.stream.write(originRequest(head, authority, target.port, target.path, body));
    }
    slot.relaying();
    await opts.flows.run(socket, dialed.stream, { via: 'explicit', name: dialed.name, ip: dialed.ip, port: target.port, startedAt }, target.path === null ? {} : { maxAToB: body });
  };

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    const slot = slots.take(socket);
    if (slot === null) {
      // 503 before any byte is read, so a refused connection holds no head.
      socket.on('error', () => {});
      reply(socket, linger, 503, 'Service Unavailable', `egress failed: ${slots.refuse('explicit', null).message}`);
      return;
    }
    void handle(socket, slot).catch(() => socket.destroy());
  });
  // Served: at most max being set up plus maxFlows relaying. The refused ones linger (`linger`) each:
  // past max more, Node closes new ones at accept, recorded and counted busy too.
  server.maxConnections = 2 * slots.max + slots.maxFlows;
  slots.recordDrops(server, 'explicit');
  server.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void =>
      reject(new EgressError('EGRESS_SETUP_FAILED', `egress proxy: cannot listen on 127.0.0.1:${opts.port}: ${err.code ?? err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen({ host: '127.0.0.1', port: opts.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        if (!server.listening) return resolve();
        server.close();
        setImmediate(resolve);
      }),
  };
}

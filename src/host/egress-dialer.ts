// The parent instance's side of egress: one stream per flow from the enclave (vsock; TCP or a UNIX socket in
// the local stack and tests). It reads one framed request (EGRESS.md §3.3, src/egress/flow-frame.ts) and
//   CONNECT ip:port → dials exactly that address (never a name), answers the status, then copies raw bytes
//                     both ways with half-close and ≤ 32 KiB writes;
//   DNS query       → forwards it to the parent's resolvers and answers with the raw response.
// The enclave is the enforcement point; this side refuses non-global addresses and the parent's own addresses
// unless configured (--allow-nonglobal), as defence in depth. A malformed or late frame closes the stream;
// nothing else is hurt.
// At most maxFlows requests are served at once (connecting, spliced or resolving); one more is answered BUSY
// (the enclave's proxy answers 503), so a runaway enclave cannot take every file descriptor of the parent.
// Streams that have not sent their request yet are capped too (maxWaitingStreams: a silent stream is held up to
// the header timeout); past the cap the oldest is closed.
// Every enclave on the instance reaches the parent's vsock port, and this side dials for whoever asks (the
// --allow-nonglobal private ranges included): over vsock it serves only the CID of the agent the bridge serves;
// any other peer, or one whose CID cannot be read, is closed unanswered and counted. Without that CID it does not
// start.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import pino from 'pino';
import { inList, isNonGlobal, prefixList } from '../egress/address-class.ts';
import { EgressError } from '../egress/errors.ts';
import {
  decodeRequestBody,
  decodeRequestHeader,
  encodeResponse,
  REQUEST_HEADER_BYTES,
  Status,
  type ConnectRequest,
  type FlowRequest,
} from '../egress/flow-frame.ts';
import { readBytes, StreamEndedEarly } from '../egress/read-bytes.ts';
import { allowHalfOpen, splice, type Splice } from '../egress/splice.ts';
import { listenTcp } from '../transport/tcp.ts';
import type { ConnectionInfo, Listener, ListenOptions } from '../transport/types.ts';
import { listenUnix } from '../transport/unix.ts';
import { forwardDnsQuery, systemResolvers, type ResolverAddress } from './egress-dialer-dns.ts';
import { isLoopbackHost } from './listen.ts';
import { isOwnAddress } from './own-addresses.ts';
import { ForeignPeers, servedCid } from './vsock-peer.ts';

export const DEFAULT_EGRESS_VSOCK_PORT = 8001;
const HEADER_TIMEOUT_MS = 5_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const MAX_CONNECT_TIMEOUT_MS = 120_000;
const DNS_TIMEOUT_MS = 3_000;
/** Idle time before TCP keep-alive probes on an upstream connection (the kernel's interval and count then). */
export const UPSTREAM_KEEPALIVE_MS = 60_000;
/** Concurrent flows (CONNECT or DNS) served at once; two file descriptors each on this side. */
export const DEFAULT_MAX_EGRESS_FLOWS = 1024;

/** Streams held at once before their request arrives: the enclave's pre-opened ones and flows being set up. */
export function maxWaitingStreams(maxFlows: number): number {
  return 2 * maxFlows + 16;
}

/** Over vsock, `agentCid` is the CID of the enclave whose agent is served: the only peer answered. */
export type EgressDialerListen = { kind: 'tcp'; host?: string; port: number } | { kind: 'unix'; path: string } | { kind: 'vsock'; port: number; agentCid: number };

export interface EgressDialerOptions {
  listen: EgressDialerListen;
  /** Non-global prefixes this dialer may still dial ("10.0.0.0/8"): e.g. a VPC-internal service. */
  allowNonGlobal?: readonly string[];
  /** Default: the parent's /etc/resolv.conf servers. */
  resolvers?: readonly ResolverAddress[];
  /** Requests served at once; more are answered BUSY. Default DEFAULT_MAX_EGRESS_FLOWS. */
  maxFlows?: number;
  logger?: Logger;
  /** Opens the listener for `listen` (default: the tcp, unix or vsock listener). Tests stand in one that reports vsock peers. */
  listenWith?: (where: EgressDialerListen, opts: ListenOptions) => Promise<Listener>;
}

export interface EgressDialer {
  readonly address: string;
  readonly port: number | undefined;
  /** Flows currently spliced. */
  readonly activeFlows: number;
  /** Requests refused BUSY (at maxFlows) since start. */
  readonly refusedBusy: number;
  /** Streams closed before their request because maxWaitingStreams were already waiting, since start. */
  readonly closedWaiting: number;
  /** vsock streams closed unanswered because the peer is not the agent's CID (or its CID could not be read), since start. */
  readonly foreignPeers: number;
  /** Stops accepting and cuts every open flow. */
  close(): Promise<void>;
}

async function listenOn(where: EgressDialerListen, opts: ListenOptions): Promise<Listener> {
  switch (where.kind) {
    case 'tcp': {
      // TCP stands in for vsock on a development machine: on any other address, whoever reaches the port could
      // have this host dial any global address for them (an open proxy).
      const host = where.host ?? '127.0.0.1';
      if (!isLoopbackHost(host)) throw new EgressError('EGRESS_SETUP_FAILED', `egress dialer: over tcp it listens on loopback only (127.0.0.1, ::1, localhost), found ${host}: use vsock or a unix socket`);
      return listenTcp({ host, port: where.port }, opts);
    }
    case 'unix':
      return listenUnix({ path: where.path }, opts);
    case 'vsock': {
      const { listenVsock } = await import('../transport/vsock.ts');
      return listenVsock({ port: where.port }, opts);
    }
  }
}

/** The only peer CID served over vsock; refuses options that would leave it unknown (every enclave served). */
function agentCidOf(where: EgressDialerListen): number | undefined {
  if (where.kind !== 'vsock') return undefined;
  return servedCid((where as { agentCid?: unknown }).agentCid, (reason) => new EgressError('EGRESS_SETUP_FAILED', `egress dialer: over vsock it serves only the agent's enclave CID, ${reason}`));
}

export async function startEgressDialer(opts: EgressDialerOptions): Promise<EgressDialer> {
  const agentCid = agentCidOf(opts.listen);
  const logger = opts.logger ?? pino({ enabled: false });
  let extra: net.BlockList;
  try {
    extra = prefixList(opts.allowNonGlobal ?? []);
  } catch (err) {
    throw new EgressError('EGRESS_SETUP_FAILED', `egress dialer: --allow-nonglobal: ${(err as Error).message}`);
  }
  const resolvers = opts.resolvers ?? systemResolvers();
  const maxFlows = opts.maxFlows ?? DEFAULT_MAX_EGRESS_FLOWS;
  if (!Number.isInteger(maxFlows) || maxFlows < 1) throw new EgressError('EGRESS_SETUP_FAILED', `egress dialer: the flow cap must be a positive integer, found ${maxFlows}`);
  const streams = new Set<Duplex>();
  /** Streams whose request has not arrived, oldest first. */
  const waiting = new Set<Duplex>();
  const maxWaiting = maxWaitingStreams(maxFlows);
  let closedWaiting = 0;
  const flows = new Set<Splice>();
  /** Streams whose request is being served (from its decoding until the stream closes). */
  let serving = 0;
  let refusedBusy = 0;
  let saturated = false;
  const foreign = new ForeignPeers(agentCid, logger, "egress dialer: stream from a CID other than the agent's; closed unanswered");

  const answer = (stream: Duplex, status: (typeof Status)[keyof typeof Status], body: string | Buffer, errno = 0): void => {
    stream.write(encodeResponse({ status, errno, body }));
  };

  const connect = (stream: Duplex, req: ConnectRequest): void => {
    if (isNonGlobal(req.ip) && !inList(extra, req.ip)) {
      logger.warn({ ip: req.ip, port: req.port, name: req.name }, 'egress dialer: non-global address refused');
      answer(stream, Status.HOST_POLICY_DENY, `${req.ip} is not a global address`);
      stream.end();
      return;
    }
    if (isOwnAddress(req.ip) && !inList(extra, req.ip)) {
      logger.warn({ ip: req.ip, port: req.port, name: req.name }, "egress dialer: the parent's own address refused");
      answer(stream, Status.HOST_POLICY_DENY, `${req.ip} is an address of the parent instance`);
      stream.end();
      return;
    }
    const timeoutMs = Math.min(req.timeoutMs || DEFAULT_CONNECT_TIMEOUT_MS, MAX_CONNECT_TIMEOUT_MS);
    // Keep-alive probes after a minute idle: an upstream that vanished without a FIN or RST (a host gone, a NAT
    // that forgot the flow) would otherwise hold this flow, and one of the maxFlows slots, for as long as the
    // enclave keeps its side open; a flow may idle legitimately (a database pool), so no idle timeout cuts it.
    const upstream = net.connect({ host: req.ip, port: req.port, noDelay: true, allowHalfOpen: true, keepAlive: true, keepAliveInitialDelay: UPSTREAM_KEEPALIVE_MS });
    const timer = setTimeout(() => {
      upstream.destroy();
      answer(stream, Status.TIMEOUT, `no connection to ${req.ip}:${req.port} within ${timeoutMs} ms`);
      stream.end();
    }, timeoutMs);
    const onEnclaveGone = (): void => {
      clearTimeout(timer);
      upstream.destroy();
    };
    stream.once('close', onEnclaveGone);
    const onConnectError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      stream.off('close', onEnclaveGone);
      if (stream.destroyed) return;
      answer(stream, Status.CONNECT_FAILED, `connecting to ${req.ip}:${req.port}: ${err.code ?? err.message}`, Math.abs(err.errno ?? 0));
      stream.end();
    };
    upstream.once('error', onConnectError);
    upstream.once('connect', () => {
      clearTimeout(timer);
      stream.off('close', onEnclaveGone);
      // From the OK on, the stream carries raw bytes: an upstream error (a reset mid-flow) is the splice's to
      // pass on as a reset of both sides, never a status frame written into the byte stream.
      upstream.off('error', onConnectError);
      answer(stream, Status.OK, '');
      logger.debug({ ip: req.ip, port: req.port, name: req.name }, 'egress dialer: flow open');
      const s = splice(stream, upstream);
      flows.add(s);
      void s.done.then((r) => {
        flows.delete(s);
        logger.debug({ ip: req.ip, port: req.port, name: req.name, bytesOut: r.aToB, bytesIn: r.bToA, clean: r.clean }, 'egress dialer: flow closed');
      });
    });
  };

  /** Settles once the resolvers are done with the query (answered, failed or timed out). */
  const dnsQuery = (stream: Duplex, query: Buffer): Promise<void> =>
    forwardDnsQuery(resolvers, query, DNS_TIMEOUT_MS).then(
      (res) => {
        answer(stream, Status.OK, res);
        stream.end();
      },
      (err: unknown) => {
        answer(stream, Status.RESOLVER_ERROR, (err as Error).message);
        stream.end();
      },
    );


  const onConnection = (stream: Duplex, info: ConnectionInfo): void => {
    if (foreign.refuse(stream, info)) return; // over vsock, before a byte is read or written
    allowHalfOpen(stream);
    stream.on('error', () => {});
    streams.add(stream);
    waiting.add(stream);
    stream.once('close', () => {
      streams.delete(stream);
      waiting.delete(stream);
    });
    if (waiting.size > maxWaiting) {
      const oldest = waiting.values().next().value!;
      waiting.delete(oldest);
      if (closedWaiting++ === 0) logger.warn({ maxWaiting }, 'egress dialer: too many streams without a request; closing the oldest');
      oldest.destroy();
    }
    void (async () => {
      let req: FlowRequest;
      try {
        const { op, len } = decodeRequestHeader(await readBytes(stream, REQUEST_HEADER_BYTES, HEADER_TIMEOUT_MS, 'egress request header'));
        req = decodeRequestBody(op, await readBytes(stream, len, HEADER_TIMEOUT_MS, 'egress request body'));
      } catch (err) {
        // Closed before a byte: a stream the enclave opened ahead of need and did not use (src/egress/dialer-pool.ts).
        if (err instanceof StreamEndedEarly && err.received === 0) logger.debug('egress dialer: unused stream closed');
        else logger.warn({ err: (err as EgressError).code ?? String(err), reason: (err as Error).message }, 'egress dialer: bad request; stream closed');
        stream.destroy();
        return;
      }
      waiting.delete(stream);
      if (serving >= maxFlows) {
        refusedBusy++;
        if (!saturated) logger.warn({ maxFlows }, 'egress dialer: at the cap of concurrent flows; refusing more until some close');
        saturated = true;
        answer(stream, Status.BUSY, `the host egress dialer is serving its maximum of ${maxFlows} flows`);
        stream.end();
        return;
      }
      saturated = false;
      serving++;
      if (req.op === 'connect') {
        stream.once('close', () => serving--); // a closed stream ends its connect or splice at once
        connect(stream, req);
      } else {
        // The forward runs on after a stream reset (sockets and timers per resolver): its slot is held until
        // both are over, or an enclave resetting streams in a loop would have unbounded queries in flight.
        const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
        void Promise.all([closed, dnsQuery(stream, req.query).catch(() => {})]).then(() => serving--);
      }
    })();
  };

  const listener = await (opts.listenWith ?? listenOn)(opts.listen, { onConnection });
  logger.info({ listen: listener.address, resolvers: resolvers.map((r) => `${r.host}:${r.port}`), allowNonGlobal: opts.allowNonGlobal ?? [] }, 'egress dialer listening');
  return {
    address: listener.address,
    port: listener.port,
    get activeFlows() {
      return flows.size;
    },
    get refusedBusy() {
      return refusedBusy;
    },
    get closedWaiting() {
      return closedWaiting;
    },
    get foreignPeers() {
      return foreign.count;
    },
    async close() {
      await listener.close();
      for (const f of flows) f.destroy();
      for (const s of streams) s.destroy();
    },
  };
}

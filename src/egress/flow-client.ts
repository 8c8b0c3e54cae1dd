// The enclave side of one egress flow: open a stream to the host dialer, send one framed request, read the
// framed status. CONNECT hands back the stream for the raw phase; DNS returns the response message.
import type { Duplex } from 'node:stream';
import { decodeResponseHeader, encodeRequest, RESPONSE_HEADER_BYTES, Status, type ConnectRequest, type StatusCode } from './flow-frame.ts';
import { EgressError, type EgressErrorCode } from './errors.ts';
import { readBytes } from './read-bytes.ts';
import { allowHalfOpen } from './splice.ts';

/** Opens one stream to the host dialer (vsock in an enclave; TCP or a UNIX socket standing in for it). */
export type DialerConnect = () => Promise<Duplex>;

/** The dialer has this long beyond the connect timeout to answer (or a DNS query this long in all). */
const ANSWER_MARGIN_MS = 5_000;

const CODE_OF: Record<StatusCode, EgressErrorCode> = {
  [Status.OK]: 'EGRESS_CONNECT_FAILED',
  [Status.HOST_POLICY_DENY]: 'EGRESS_DENIED',
  [Status.CONNECT_FAILED]: 'EGRESS_CONNECT_FAILED',
  [Status.TIMEOUT]: 'EGRESS_TIMEOUT',
  [Status.BAD_REQUEST]: 'EGRESS_BAD_FRAME',
  [Status.RESOLVER_ERROR]: 'EGRESS_RESOLVER_ERROR',
  [Status.BUSY]: 'EGRESS_DIALER_BUSY',
};

async function openStream(connect: DialerConnect): Promise<Duplex> {
  try {
    const s = await connect();
    allowHalfOpen(s);
    return s;
  } catch (err) {
    throw new EgressError('EGRESS_DIALER_UNREACHABLE', `the host egress dialer is unreachable: ${(err as Error).message}`, { cause: err });
  }
}

async function exchange(stream: Duplex, request: Buffer, timeoutMs: number): Promise<{ status: StatusCode; errno: number; body: Buffer }> {
  stream.write(request);
  const head = decodeResponseHeader(await readBytes(stream, RESPONSE_HEADER_BYTES, timeoutMs, 'egress response header'));
  const body = await readBytes(stream, head.len, timeoutMs, 'egress response body');
  return { status: head.status, errno: head.errno, body };
}

/** A connected flow to req.ip:req.port through the host, ready for raw bytes. */
export async function openFlow(connect: DialerConnect, req: Omit<ConnectRequest, 'op'>): Promise<Duplex> {
  const stream = await openStream(connect);
  stream.on('error', () => {}); // the caller's splice reports; never an uncaught error
  try {
    const res = await exchange(stream, encodeRequest({ op: 'connect', ...req }), req.timeoutMs + ANSWER_MARGIN_MS);
    if (res.status !== Status.OK) {
      const detail = res.body.toString('utf8').slice(0, 200);
      throw new EgressError(CODE_OF[res.status], `host dialer: ${detail || `status ${res.status}`}${res.errno ? ` (errno ${res.errno})` : ''}`);
    }
    return stream;
  } catch (err) {
    stream.destroy();
    throw err;
  }
}

/** One DNS query answered through the host's resolvers. */
export async function dnsExchange(connect: DialerConnect, query: Buffer, timeoutMs: number): Promise<Buffer> {
  const stream = await openStream(connect);
  stream.on('error', () => {});
  try {
    const res = await exchange(stream, encodeRequest({ op: 'dns', query }), timeoutMs + ANSWER_MARGIN_MS);
    if (res.status !== Status.OK) throw new EgressError(CODE_OF[res.status], `host resolver: ${res.body.toString('utf8').slice(0, 200) || `status ${res.status}`}`);
    return res.body;
  } finally {
    stream.destroy();
  }
}

// Stage: client address. The host bridge may put a PROXY v2 header in front of the stream (opt-in,
// `accept_proxy_protocol`); the session parses it and hands us `ctx.client`. The app is told who the
// client is with X-Forwarded-For, X-Forwarded-Proto and Forwarded (RFC 7239). Whatever the client wrote
// in those headers is dropped — anyone can type an X-Forwarded-For — unless the peer is trusted
// (`trustForwardedFromClient`, e.g. the agent sits behind another proxy of ours), in which case the
// client address is appended to the chain the client sent.
import { isIP } from 'node:net';
import type { Stage } from '../exchange.ts';
import { getHeaders, removeHeader, removeUnderscoreAliases } from '../headers.ts';

export interface ClientAddressOptions {
  /** Keep and extend client-supplied forwarding headers (default false: replace them). */
  trustForwardedFromClient?: boolean;
  /** X-Forwarded-Proto / Forwarded proto (default 'https': the channel is end-to-end encrypted). */
  proto?: string;
}

const FORWARDING_HEADERS = ['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip'];
const FORWARDING_SET: ReadonlySet<string> = new Set(FORWARDING_HEADERS);

/** RFC 7239 node: IPv4 bare, IPv6 quoted and bracketed. */
function forwardedNode(ip: string): string {
  return isIP(ip) === 6 ? `"[${ip}]"` : ip;
}

export function clientAddressStage(opts: ClientAddressOptions = {}): Stage {
  const trusted = opts.trustForwardedFromClient ?? false;
  const proto = opts.proto ?? 'https';
  return (ex, next) => {
    const headers = ex.upstreamHeaders;
    const candidate = ex.conn.client?.address;
    // The address came from the session's parser; still, only a literal IP goes into a header.
    const ip = candidate !== undefined && isIP(candidate) !== 0 ? candidate : undefined;

    const priorFor = trusted ? getHeaders(headers, 'x-forwarded-for').join(', ') : '';
    const priorProto = trusted ? getHeaders(headers, 'x-forwarded-proto')[0] : undefined;
    const priorForwarded = trusted ? getHeaders(headers, 'forwarded').join(', ') : '';
    // `X_Forwarded_For` reads as X-Forwarded-For to a CGI/WSGI app: never passed on, trusted peer or not.
    removeUnderscoreAliases(headers, FORWARDING_SET);
    if (!trusted) for (const h of FORWARDING_HEADERS) removeHeader(headers, h);
    else for (const h of ['x-forwarded-for', 'x-forwarded-proto', 'forwarded']) removeHeader(headers, h);

    if (ip !== undefined) {
      headers.push('x-forwarded-for', priorFor !== '' ? `${priorFor}, ${ip}` : ip);
      const node = `for=${forwardedNode(ip)};proto=${proto}`;
      headers.push('forwarded', priorForwarded !== '' ? `${priorForwarded}, ${node}` : node);
      ex.remoteIp = trusted && priorFor !== '' ? priorFor.split(',')[0]!.trim() : ip;
    } else {
      if (priorFor !== '') {
        headers.push('x-forwarded-for', priorFor);
        ex.remoteIp = priorFor.split(',')[0]!.trim();
      }
      if (priorForwarded !== '') headers.push('forwarded', priorForwarded);
      else headers.push('forwarded', `proto=${proto}`);
    }
    headers.push('x-forwarded-proto', priorProto ?? proto);
    return next();
  };
}

// Stage: client address. The host bridge may put a PROXY v2 header in front of the stream (opt-in,
// `accept_proxy_protocol`); the session parses it and hands us `ctx.client`. The app is told who the
// client is with X-Forwarded-For, X-Forwarded-Proto and Forwarded (RFC 7239). Whatever the client wrote
// in those headers is dropped — anyone can type an X-Forwarded-For — unless the peer is trusted
// (`trustForwardedFromClient`, e.g. the agent sits behind another proxy of ours), in which case the
// client address is appended to the chain the client sent. The other headers CDNs and load balancers use for
// the client's address (X-Client-IP, True-Client-IP, CF-Connecting-IP...) are always dropped: nothing in front of
// the agent sets them, and libraries read them before X-Forwarded-For (request-ip checks X-Client-IP first), so
// a client could pick the address an app rate-limits or logs. From an untrusted peer every `X-Forwarded-*`
// goes, not only the ones set here: the agent is the proxy in front of the app, so any other is forged, and apps
// trust their loopback proxy's (X-Forwarded-Prefix builds URLs and redirects in Werkzeug's ProxyFix, Spring,
// Symfony and ASP.NET; Rack takes the scheme from X-Forwarded-Scheme or X-Forwarded-Ssl before X-Forwarded-Proto,
// gunicorn from X-Forwarded-Protocol); so do the scheme headers without that prefix (Front-End-Https, X-Url-Scheme).
import { isIP } from 'node:net';
import type { Stage } from '../exchange.ts';
import { getHeaders, headerNames, removeHeaders, removeUnderscoreAliases } from '../headers.ts';

export interface ClientAddressOptions {
  /** Keep and extend client-supplied forwarding headers (default false: replace them). */
  trustForwardedFromClient?: boolean;
  /** X-Forwarded-Proto / Forwarded proto (default 'https': the channel is end-to-end encrypted). */
  proto?: string;
}

/** Set by this stage (the chain of a trusted peer kept and extended). */
const CHAIN_HEADERS = ['x-forwarded-for', 'x-forwarded-proto', 'forwarded'];
const FORWARDING_HEADERS = [...CHAIN_HEADERS, 'x-forwarded-host', 'x-forwarded-port', 'x-real-ip'];
/** The client's address as other proxies and CDNs spell it: never set in front of the agent. */
const CLIENT_IP_HEADERS = ['x-client-ip', 'true-client-ip', 'cf-connecting-ip', 'cf-pseudo-ipv4', 'fastly-client-ip', 'x-cluster-client-ip', 'x-forwarded', 'forwarded-for', 'x-original-forwarded-for', 'appengine-user-ip'];
/** Scheme headers some servers and frameworks read, outside the X-Forwarded-* family. */
const SCHEME_HEADERS = ['front-end-https', 'x-url-scheme'];
/** Untrusted peer: every forwarding, scheme and client-IP header and every X-Forwarded-*, and their underscore aliases (headers.ts). */
const STRIP_UNTRUSTED = headerNames([...FORWARDING_HEADERS, ...SCHEME_HEADERS, ...CLIENT_IP_HEADERS], ['x-forwarded-']);
/** Trusted peer: the chain (re-set below) and the client-IP headers. */
const STRIP_TRUSTED = headerNames([...CHAIN_HEADERS, ...CLIENT_IP_HEADERS]);
/** Their underscore aliases are dropped whatever the peer: `X_Forwarded_For` reads as X-Forwarded-For to a CGI/WSGI app. */
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
    removeHeaders(headers, trusted ? STRIP_TRUSTED : STRIP_UNTRUSTED);
    if (trusted) removeUnderscoreAliases(headers, FORWARDING_SET);

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

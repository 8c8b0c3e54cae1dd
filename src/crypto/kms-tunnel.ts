// An https.Agent that reaches KMS through the in-enclave egress proxy: `CONNECT host:443` to the explicit
// proxy on 127.0.0.1, then TLS to the real host over that tunnel, terminated here and verified against
// Node's bundled roots (plus NODE_EXTRA_CA_CERTS, which Node reads at start-up, plus `extraCa` for tests).
// The proxy only relays bytes; neither it nor the host sees the request.
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';

export interface TunnelAgentOptions {
  /** The explicit egress proxy, e.g. { host: '127.0.0.1', port: 3128 }. */
  proxy: { host: string; port: number };
  /** Extra trusted roots (PEM), added to the default ones. */
  extraCa?: string[];
  /** Give up on the CONNECT answer after this long. */
  connectTimeoutMs?: number;
}

const MAX_PROXY_HEAD = 16 * 1024;

/** Sends CONNECT and resolves with the socket once the proxy answers 2xx (bytes after the head are unshifted). */
export function connectThroughProxy(proxy: { host: string; port: number }, host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(proxy.port, proxy.host);
    let head = Buffer.alloc(0);
    const fail = (msg: string) => {
      sock.destroy();
      reject(new Error(`egress proxy ${proxy.host}:${proxy.port}: ${msg}`));
    };
    sock.setTimeout(timeoutMs, () => fail(`no answer to CONNECT ${host}:${port} within ${timeoutMs} ms`));
    sock.once('error', (err) => fail((err as NodeJS.ErrnoException).code ?? err.message));
    sock.once('connect', () => {
      const target = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
      sock.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    });
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_PROXY_HEAD) fail('answer head too long');
        return;
      }
      sock.off('data', onData);
      sock.pause();
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.subarray(0, end).toString('latin1'));
      if (!status || status[1]![0] !== '2') {
        fail(`CONNECT ${host}:${port} refused (${status ? status[1] : 'not HTTP'})`);
        return;
      }
      const rest = head.subarray(end + 4);
      if (rest.length > 0) sock.unshift(rest);
      sock.setTimeout(0);
      sock.removeAllListeners('error');
      resolve(sock);
    };
    sock.on('data', onData);
  });
}

/** https.Agent for the AWS SDK's NodeHttpHandler: every connection is a CONNECT tunnel through `proxy`. */
export class ConnectTunnelAgent extends https.Agent {
  readonly #proxy: { host: string; port: number };
  readonly #ca: string[] | undefined;
  readonly #timeout: number;

  constructor(opts: TunnelAgentOptions) {
    super({ keepAlive: true });
    this.#proxy = opts.proxy;
    this.#ca = opts.extraCa && opts.extraCa.length > 0 ? [...tls.rootCertificates, ...opts.extraCa] : undefined;
    this.#timeout = opts.connectTimeoutMs ?? 10_000;
  }

  override createConnection(req: https.RequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | undefined {
    // Node hands the agent the TLS options (servername, ca, …) with the request's.
    const options = req as tls.ConnectionOptions;
    const host = options.host ?? 'localhost';
    const port = Number(options.port ?? 443);
    connectThroughProxy(this.#proxy, host, port, this.#timeout).then(
      (raw) => {
        const servername = options.servername ?? (net.isIP(host) ? undefined : host);
        const s = tls.connect({ ...options, socket: raw, host, ...(servername === undefined ? {} : { servername }), ...(this.#ca === undefined ? {} : { ca: this.#ca }) });
        callback?.(null, s);
      },
      (err: Error) => callback?.(err, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

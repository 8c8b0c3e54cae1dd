// acme-client talks to the CA with its one shared axios instance (exposed as `acme.axios`, the hook its README
// documents for routing requests). Inside the enclave every call must go through the egress tunnel: an
// https.Agent whose connections are `CONNECT host:port` to the explicit proxy, TLS terminated here and verified
// against Node's bundled roots (+ NODE_EXTRA_CA_CERTS, + extraCa). axios's own proxy handling is turned off (it
// would send absolute-form `GET https://…`, which the proxy refuses), and so are its retries: the caller
// (acme-certificate.ts) retries a whole order with backoff instead of waiting out 5 axios retries per request.
// Process-wide by nature: the runtime runs at most one ACME certificate.
//
// acme-client 5.4.0's response interceptor reads `response.config` even when there is no response, so every
// network error reaches the caller as "Cannot read properties of undefined (reading 'config')". The agent
// below keeps the last connection error (proxy refusal, TLS verification…) so the failure log can name it.
import type https from 'node:https';
import type { Duplex } from 'node:stream';
import { loadAcme } from './acme-library.ts';
import { ConnectTunnelAgent } from '../crypto/kms-tunnel.ts';

export interface AcmeTransportOptions {
  /** The explicit egress proxy on 127.0.0.1. */
  proxy: { host: string; port: number };
  /** Extra trusted roots (PEM) for the CA's HTTPS endpoint (tests: Pebble's). */
  extraCa?: string[];
  /** Whole-request timeout (default 30 s): a silent CA fails the attempt instead of hanging it. */
  timeoutMs?: number;
}

/** The tunnel agent, remembering the last connection failure. */
class AcmeTunnelAgent extends ConnectTunnelAgent {
  #lastError: string | null = null;

  /** The last connection failure since the previous call, then forgets it. */
  takeLastError(): string | null {
    const e = this.#lastError;
    this.#lastError = null;
    return e;
  }

  override createConnection(req: https.RequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | undefined {
    const record = (err: Error) => (this.#lastError = (err as NodeJS.ErrnoException).code === undefined ? err.message : `${(err as NodeJS.ErrnoException).code}: ${err.message}`);
    return super.createConnection(req, (err, stream) => {
      if (err !== null) record(err);
      else stream.once('error', record);
      callback?.(err, stream);
    });
  }
}

export interface AcmeTransport {
  readonly agent: https.Agent;
  /** Settles once acme-client (loaded on demand) is routed through the agent: await it before any ACME call. */
  readonly ready: Promise<void>;
  /** The last connection failure since the previous call (null if none): the cause behind acme-client's error. */
  takeLastError(): string | null;
  /** Closes the kept-alive tunnels (so egress need not wait for them at shutdown). */
  close(): void;
}

/** Routes acme-client's requests through the egress tunnel. */
export function routeAcmeThroughEgress(opts: AcmeTransportOptions): AcmeTransport {
  const agent = new AcmeTunnelAgent({ proxy: opts.proxy, ...(opts.extraCa === undefined ? {} : { extraCa: opts.extraCa }) });
  const ready = loadAcme().then((acme) => {
    const defaults = acme.axios.defaults as typeof acme.axios.defaults & { acmeSettings: { retryMaxAttempts: number } };
    defaults.httpsAgent = agent;
    defaults.proxy = false;
    defaults.timeout = opts.timeoutMs ?? 30_000;
    defaults.acmeSettings.retryMaxAttempts = 0;
  });
  return { agent, ready, takeLastError: () => agent.takeLastError(), close: () => agent.destroy() };
}

// Egress inside the enclave, assembled from [egress]: the explicit proxy always (the app gets HTTP_PROXY
// and friends in explicit mode), and in transparent mode the DNS stub, the REDIRECT listener and the
// packet rules. Every flow goes to the host dialer through `dialer` (vsock CID 3 in an enclave; TCP or a
// UNIX socket in the local stack and tests).
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { LogSink } from '../http/log-sink.ts';
import { ConnectionSlots } from './connection-slots.ts';
import { DecisionLog, type EgressDecision } from './decision-log.ts';
import { dialerPool } from './dialer-pool.ts';
import { startDnsStub, type DnsStub } from './dns-stub.ts';
import { startExplicitProxy, type ExplicitProxy } from './explicit-proxy.ts';
import { NameCache } from './name-cache.ts';
import { dnsExchange, type DialerConnect } from './flow-client.ts';
import { FlowTracker } from './flow-tracker.ts';
import { originalDstReader } from './original-dst.ts';
import { PinTable } from './pin-table.ts';
import { EgressPolicy } from './policy.ts';
import { installTransparentRules } from './transparent-rules.ts';
import { startTransparentListener, type TransparentListener } from './transparent-listener.ts';

const DNS_TIMEOUT_MS = 5_000;

export interface EgressServiceOptions {
  egress: Config['egress'];
  dialer: DialerConnect;
  /** Streams to the dialer kept open ahead of need (default POOL_SIZE; 0 = connect per flow: benchmarks). */
  dialerPoolSize?: number;
  /** Overrides egress.proxy_port (0 picks a free port: the local stack). */
  proxyPort?: number;
  /** Transparent mode only: overrides the DNS stub's port 53 and egress.transparent_port (tests). */
  dnsPort?: number;
  transparentPort?: number;
  /** Transparent mode: install the iptables rules (default true; the caller must be root in the enclave). */
  installRules?: boolean;
  /** How the explicit proxy's refusals linger ([limits] linger_timeout_ms / linger_time_ms; default 5 s / 30 s). */
  lingerTimeoutMs?: number;
  lingerTimeMs?: number;
  logger?: Logger;
  trxSink?: LogSink;
  onDecision?: (d: EgressDecision) => void;
}

export interface EgressService {
  /** "http://127.0.0.1:PORT" */
  readonly proxyUrl: string;
  readonly mode: Config['egress']['mode'];
  /** The app's environment additions: HTTP(S)_PROXY / NO_PROXY in both cases (explicit mode; {} in transparent). */
  readonly appEnv: Record<string, string>;
  readonly dnsPort: number | null;
  readonly transparentPort: number | null;
  /** Flows open now. */
  activeFlows(): number;
  /** Stops accepting; open flows finish for up to timeoutMs, then are cut. */
  drain(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** What a process needs to use the explicit proxy (curl, Python, Go read the lower case; Node tools the upper). */
export function proxyEnv(url: string): Record<string, string> {
  const noProxy = 'localhost,127.0.0.1';
  return { HTTP_PROXY: url, HTTPS_PROXY: url, NO_PROXY: noProxy, http_proxy: url, https_proxy: url, no_proxy: noProxy };
}

export async function startEgress(opts: EgressServiceOptions): Promise<EgressService> {
  const cfg = opts.egress;
  const policy = new EgressPolicy(cfg.destinations);
  const log = new DecisionLog({ trxSink: opts.trxSink, logger: opts.logger, onDecision: opts.onDecision });
  const flows = new FlowTracker(log);
  // The bounds on the app connections of both listeners, together ([egress] max_proxy_connections, max_flows).
  const slots = new ConnectionSlots(cfg.max_proxy_connections, log, cfg.max_flows);
  // Every flow and DNS query takes a stream opened ahead of need (src/egress/dialer-pool.ts).
  const pool = dialerPool(opts.dialer, { size: opts.dialerPoolSize });
  const dialer = pool.connect;
  const dns = (q: Buffer): Promise<Buffer> => dnsExchange(dialer, q, DNS_TIMEOUT_MS);
  // Closed last (closers run in reverse): the counts of refusals held back reach the log.
  const closers: (() => Promise<void>)[] = [() => Promise.resolve(log.flush()), () => Promise.resolve(pool.close())];
  const closeAll = async (): Promise<void> => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => {});
  };
  try {
    let stub: DnsStub | null = null;
    let transparent: TransparentListener | null = null;
    if (cfg.mode === 'transparent') {
      const originalDst = originalDstReader(); // fail before anything listens when the addon cannot do it
      const pins = new PinTable();
      stub = await startDnsStub({ policy, dns, pins, log, cache: new NameCache(), port: opts.dnsPort ?? 53 });
      closers.push(() => stub!.close());
      transparent = await startTransparentListener({
        port: opts.transparentPort ?? cfg.transparent_port,
        policy,
        pins,
        dialer,
        connectTimeoutMs: cfg.connect_timeout_ms,
        sniCheck: cfg.sni_check,
        log,
        flows,
        originalDst,
        slots,
      });
      closers.push(() => transparent!.close());
    }
    const proxy: ExplicitProxy = await startExplicitProxy({
      port: opts.proxyPort ?? cfg.proxy_port,
      policy,
      dialer,
      dns,
      connectTimeoutMs: cfg.connect_timeout_ms,
      log,
      flows,
      sniCheck: cfg.sni_check,
      slots,
      names: new NameCache(),
      lingerTimeoutMs: opts.lingerTimeoutMs,
      lingerTimeMs: opts.lingerTimeMs,
    });
    closers.push(() => proxy.close());
    if (cfg.mode === 'transparent' && opts.installRules !== false) await installTransparentRules({ transparentPort: transparent!.port, dnsPort: stub!.port });
    opts.logger?.info({ mode: cfg.mode, proxy: proxy.url, dnsPort: stub?.port ?? null, transparentPort: transparent?.port ?? null, destinations: cfg.destinations.length }, 'egress ready');
    let drained: Promise<void> | undefined;
    return {
      proxyUrl: proxy.url,
      mode: cfg.mode,
      appEnv: cfg.mode === 'explicit' ? proxyEnv(proxy.url) : {},
      dnsPort: stub?.port ?? null,
      transparentPort: transparent?.port ?? null,
      activeFlows: () => flows.size,
      drain(timeoutMs) {
        drained ??= (async () => {
          await closeAll();
          await flows.drain(timeoutMs);
        })();
        return drained;
      },
      async close() {
        await closeAll();
        flows.destroyAll();
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

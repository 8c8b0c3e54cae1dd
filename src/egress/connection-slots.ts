// [egress] max_proxy_connections: one bound on the app connections the in-enclave egress listeners serve at once
// — the explicit proxy and, in transparent mode, the REDIRECT listener, together. Each served connection may hold
// a request head or wait for a TLS SNI before it is dialled; without a bound an app (or anything it runs) could
// open them until the enclave runs out of descriptors or memory. A connection refused for want of a slot is
// recorded as EGRESS_PROXY_BUSY and counted `busy`; the decision log rate-limits the records and warns.
import type net from 'node:net';
import type { DecisionLog, EgressVia } from './decision-log.ts';
import { EgressError } from './errors.ts';

/** [egress] max_proxy_connections' default (as the host dialer's flow cap). */
export const DEFAULT_MAX_PROXY_CONNECTIONS = 1024;

export class ConnectionSlots {
  #open = 0;

  constructor(
    readonly max: number,
    private readonly log: DecisionLog,
  ) {}

  /** Slots in use now. */
  get open(): number {
    return this.#open;
  }

  /** Takes a slot for `socket` until it closes; false (nothing taken) when all `max` are in use. */
  take(socket: net.Socket): boolean {
    if (this.#open >= this.max) return false;
    this.#open++;
    socket.once('close', () => this.#open--);
    return true;
  }

  /** Records a connection refused for want of a slot (`dst`: its destination when known) and returns the error. */
  refuse(via: Exclude<EgressVia, 'dns'>, dst: { ip: string; port: number } | null): EgressError {
    return this.#record(via, dst, new EgressError('EGRESS_PROXY_BUSY', `egress proxy: ${this.max} connections open ([egress] max_proxy_connections); try again later`));
  }

  /**
   * Records, the same way, each connection Node closes at accept because `server` holds `server.maxConnections`
   * (its 'drop' event, Node ≥ 18.6): those never reach the connection handler. The client's address is not kept.
   */
  recordDrops(server: net.Server, via: Exclude<EgressVia, 'dns'>): void {
    server.on('drop', () => {
      const why = `egress proxy: ${server.maxConnections} connections open, refused ones still being answered included ([egress] max_proxy_connections); closed at accept`;
      this.#record(via, null, new EgressError('EGRESS_PROXY_BUSY', why));
    });
  }

  #record(via: Exclude<EgressVia, 'dns'>, dst: { ip: string; port: number } | null, err: EgressError): EgressError {
    this.log.record({ allowed: false, via, name: '', ip: dst?.ip ?? null, port: dst?.port ?? 0, bytesOut: 0, bytesIn: 0, durationMs: 0, reason: err.message, code: err.code, failed: true, busy: true });
    return err;
  }
}

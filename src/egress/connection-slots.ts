// The bounds on the app connections the in-enclave egress listeners serve at once — the explicit proxy and, in
// transparent mode, the REDIRECT listener, together. Two counts, because two different things hold connections:
// - [egress] max_proxy_connections: connections being set up — reading a request head (up to 64 KiB, 30 s),
//   dialling, or waiting for a TLS SNI (10 s). This is the bound against a flood: without it an app (or anything
//   it runs) could open them until the enclave runs out of descriptors or memory, each costing the enclave work.
// - [egress] max_flows: flows whose upstream connection is open (the app's bytes relayed, JS or native splice).
//   A database pool keeps these for hours; counting them against the setup bound let a pool's idle connections
//   starve new connections' set-up, and a flood of half-sent heads starve the pool. The default is the host
//   dialer's own flow cap (--egress-max-flows), past which a default host answers BUSY anyway.
// A connection takes a setup slot at accept and gives it back once its bytes are relayed (or it closes); it takes a
// flow slot once its upstream is open, before anything is answered, and holds it until it closes. Between the two
// (the explicit proxy's SNI wait follows its dial) it holds both, so at most max_proxy_connections + max_flows are
// served at once. One refused for want of either is recorded as EGRESS_PROXY_BUSY and counted `busy`; the decision
// log rate-limits the records and warns.
import type net from 'node:net';
import type { DecisionLog, EgressVia } from './decision-log.ts';
import { EgressError } from './errors.ts';

/** [egress] max_proxy_connections' default (as the host dialer's flow cap). */
export const DEFAULT_MAX_PROXY_CONNECTIONS = 1024;
/** [egress] max_flows' default: the host dialer's default flow cap (--egress-max-flows). */
export const DEFAULT_MAX_EGRESS_FLOWS = 1024;

type Via = Exclude<EgressVia, 'dns'>;

/** One served connection's hold on the bounds. */
export interface ConnectionSlot {
  /** Takes a flow slot (its upstream is open); false, nothing taken, when max_flows flows are open. */
  startFlow(): boolean;
  /** Gives the setup slot back: the connection's bytes are relayed from now on. */
  relaying(): void;
}

export class ConnectionSlots {
  #setup = 0;
  #flows = 0;

  constructor(
    /** [egress] max_proxy_connections: connections being set up at once. */
    readonly max: number,
    private readonly log: DecisionLog,
    /** [egress] max_flows: flows with an open upstream at once. */
    readonly maxFlows = DEFAULT_MAX_EGRESS_FLOWS,
  ) {}

  /** Connections being set up now (setup slots in use). */
  get setup(): number {
    return this.#setup;
  }

  /** Flows with an open upstream now (flow slots in use). */
  get flows(): number {
    return this.#flows;
  }

  /** Takes a setup slot for `socket`, given back when it closes at the latest; null (nothing taken) when all `max` are in use. */
  take(socket: net.Socket): ConnectionSlot | null {
    if (this.#setup >= this.max) return null;
    this.#setup++;
    let setup = true;
    let flow = false;
    const releaseSetup = (): void => {
      if (!setup) return;
      setup = false;
      this.#setup--;
    };
    socket.once('close', () => {
      releaseSetup();
      if (flow) {
        flow = false;
        this.#flows--;
      }
    });
    return {
      startFlow: () => {
        if (flow) return true;
        if (socket.destroyed || this.#flows >= this.maxFlows) return false;
        this.#flows++;
        flow = true;
        return true;
      },
      relaying: releaseSetup,
    };
  }

  /** Records a connection refused for want of a setup slot (`dst`: its destination when known) and returns the error. */
  refuse(via: Via, dst: { ip: string; port: number } | null): EgressError {
    return this.#record(via, '', dst, new EgressError('EGRESS_PROXY_BUSY', `egress proxy: ${this.max} connections being set up ([egress] max_proxy_connections); try again later`));
  }

  /** Records a connection refused for want of a flow slot (its upstream already open, to be closed) and returns the error. */
  refuseFlow(via: Via, name: string, dst: { ip: string; port: number }): EgressError {
    return this.#record(via, name, dst, new EgressError('EGRESS_PROXY_BUSY', `egress proxy: ${this.maxFlows} flows open ([egress] max_flows); try again later`));
  }

  /**
   * Records, the same way, each connection Node closes at accept because `server` holds `server.maxConnections`
   * (its 'drop' event, Node ≥ 18.6): those never reach the connection handler. The client's address is not kept.
   */
  recordDrops(server: net.Server, via: Via): void {
    server.on('drop', () => {
      const why = `egress proxy: ${server.maxConnections} connections open, flows and refused ones still being answered included ([egress] max_proxy_connections, max_flows); closed at accept`;
      this.#record(via, '', null, new EgressError('EGRESS_PROXY_BUSY', why));
    });
  }

  #record(via: Via, name: string, dst: { ip: string; port: number } | null, err: EgressError): EgressError {
    this.log.record({ allowed: false, via, name, ip: dst?.ip ?? null, port: dst?.port ?? 0, bytesOut: 0, bytesIn: 0, durationMs: 0, reason: err.message, code: err.code, failed: true, busy: true });
    return err;
  }
}

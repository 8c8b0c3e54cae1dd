// The host services an enclave reaches over vsock (credentials, the egress dialer, the log sink) listen on the
// parent's port, which every enclave on the instance can reach: each serves only the CID of the enclave it is
// for. A connection from any other CID, or one whose CID cannot be read, is closed before a byte is read or
// written, counted, and logged at warn once per CID (debug after that), so another enclave can neither use the
// service nor flood the host's log.
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ConnectionInfo } from '../transport/types.ts';

/** VMADDR_CID_ANY (src/transport/vsock.ts, not imported here: it loads the native addon's wrapper). */
const VMADDR_CID_ANY = 0xffffffff;
/** Distinct refused CIDs logged at warn (each once); enclaves on one instance are few, so this is never reached. */
const MAX_LOGGED_CIDS = 1024;

/** `cid` when it names one enclave (0 … VMADDR_CID_ANY − 1), else the error `refuse` makes from the reason. */
export function servedCid(cid: unknown, refuse: (reason: string) => Error): number {
  if (typeof cid !== 'number' || !Number.isInteger(cid) || cid < 0 || cid >= VMADDR_CID_ANY) {
    throw refuse(`found ${String(cid)}: give the CID of the enclave served (0..${VMADDR_CID_ANY - 1})`);
  }
  return cid;
}

/** Closes vsock connections from peers other than `cid`. */
export class ForeignPeers {
  /** Connections closed because their peer is another CID (or none could be read). */
  count = 0;
  readonly #logged = new Set<number | '?'>();

  /** `cid`: the enclave served (undefined: not listening on vsock); `message`: the warn line's text. */
  constructor(
    readonly cid: number | undefined,
    private readonly logger: Logger,
    private readonly message: string,
  ) {}

  /** True, with the stream closed, when it comes over vsock from anyone but the enclave served. */
  refuse(stream: Duplex, info: ConnectionInfo): boolean {
    if (info.transport !== 'vsock' || (this.cid !== undefined && info.peerCid === this.cid)) return false;
    this.count++;
    const key = info.peerCid ?? '?';
    const first = !this.#logged.has(key) && this.#logged.size < MAX_LOGGED_CIDS;
    if (first) this.#logged.add(key);
    this.logger[first ? 'warn' : 'debug']({ peerCid: info.peerCid ?? null, servedCid: this.cid ?? null, refused: this.count }, this.message);
    stream.on('error', () => {});
    stream.destroy();
    return true;
  }
}

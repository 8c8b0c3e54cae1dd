// How many NSM documents for client nonces (fresh-nonce certificates by SNI, /.well-known/attestation?nonce=)
// the TLS ingress makes: a token bucket for the whole process — the NSM is shared with attested Noise sessions —
// and, under it, one per client, so that a single client cannot take the whole budget and refuse everyone else
// fresh documents. A client is the source address of the bridge's PROXY v2 header (accept_proxy_protocol): without
// it every connection comes from the bridge, and only the process-wide bucket applies. IPv6 sources count per /64
// (one host commonly holds a whole /64; per address it could mint budgets at will).
import { clientKey } from '../util/ip-bytes.ts';
import { TokenBucket, type Rate } from '../util/token-bucket.ts';

export type { Rate };

export interface NonceBudgetOptions {
  /** The whole process (default 20 per second, bursts of 20). */
  total?: Rate;
  /** Each client (default 5 per second, bursts of 10: a quarter of the default total). */
  perClient?: Rate;
  /** Clients remembered at once (default 4,096): past it, full buckets are forgotten first, then the oldest. */
  maxClients?: number;
  /** ms (default Date.now). */
  now?: () => number;
}

export const DEFAULT_TOTAL_RATE: Rate = { perSecond: 20, burst: 20 };
export const DEFAULT_CLIENT_RATE: Rate = { perSecond: 5, burst: 10 };
const DEFAULT_MAX_CLIENTS = 4096;

export class NonceBudget {
  readonly #total: Rate;
  readonly #perClient: Rate;
  readonly #maxClients: number;
  readonly #now: () => number;
  readonly #global: TokenBucket;
  readonly #clients = new Map<string, TokenBucket>();

  constructor(opts: NonceBudgetOptions = {}) {
    this.#total = opts.total ?? DEFAULT_TOTAL_RATE;
    this.#perClient = opts.perClient ?? DEFAULT_CLIENT_RATE;
    this.#maxClients = opts.maxClients ?? DEFAULT_MAX_CLIENTS;
    this.#now = opts.now ?? Date.now;
    this.#global = new TokenBucket(this.#total, this.#now());
  }

  /** Clients with a bucket now (for tests and metrics). */
  get clients(): number {
    return this.#clients.size;
  }

  /**
   * One document for `client` (a source address; undefined when unknown): true when both its bucket and the
   * process's have a token, which are then spent; false spends nothing.
   */
  take(client: string | undefined): boolean {
    const now = this.#now();
    if (this.#global.level(this.#total, now) < 1) return false;
    if (client === undefined) {
      this.#global.tokens -= 1;
      return true;
    }
    const key = clientKey(client);
    let bucket = this.#clients.get(key);
    if (bucket === undefined) {
      this.#makeRoom(now);
      bucket = new TokenBucket(this.#perClient, now);
      this.#clients.set(key, bucket);
    }
    if (bucket.level(this.#perClient, now) < 1) return false;
    bucket.tokens -= 1;
    this.#global.tokens -= 1;
    return true;
  }

  /** Keeps the map under its cap: a full bucket holds nothing a new one would not, so those go first. */
  #makeRoom(now: number): void {
    if (this.#clients.size < this.#maxClients) return;
    for (const [k, b] of this.#clients) if (b.level(this.#perClient, now) >= this.#perClient.burst) this.#clients.delete(k);
    while (this.#clients.size >= this.#maxClients) this.#clients.delete(this.#clients.keys().next().value!);
  }
}

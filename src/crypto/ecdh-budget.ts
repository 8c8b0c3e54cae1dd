// The per-request cap on ECDH work. An `ev:` string does not name the key it was made for, so after
// `keys rotate` a value is opened by trying the key generations newest first: one ECDH per generation tried
// (the cache of shared secrets per ephemeral key makes repeats free). The field cap ([limits]
// max_decrypt_fields) counts values before anything is decrypted; this budget, of the same size, counts the
// ECDHs actually done, so a request whose values all need the oldest generation — or none opens — costs at
// most as many ECDHs as before rotation, and is refused past it (EvBudgetError → 413) instead.
import { EvBudgetError } from './errors.ts';

export class EcdhBudget {
  readonly limit: number;
  #used = 0;

  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 0) throw new RangeError(`EcdhBudget: expected a non-negative integer, found ${String(limit)}`);
    this.limit = limit;
  }

  /** ECDHs left. */
  get remaining(): number {
    return this.limit - this.#used;
  }

  /** Call before each ECDH: throws EvBudgetError once the budget is spent (the ECDH is not done). */
  spend(): void {
    if (this.#used >= this.limit) throw new EvBudgetError(this.limit);
    this.#used++;
  }
}

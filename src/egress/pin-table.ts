// Transparent mode's memory of what the DNS stub answered: IP → the allowed names it was returned for, each
// until max(TTL, 30 s) (capped at an hour). A flow to an IP is allowed under a name only while the pin lives,
// so an app can reach what it resolved through the stub and nothing it did not (a raw IP, another name).
// Bounded whatever the app resolves: MAX_PINS in all and MAX_NAMES_PER_IP on one address (a wildcard zone or a
// CDN address gives one IP for any number of names; namesFor walks that IP's names on every flow). Full, the
// table drops expired pins, then the least recently pinned ones: only an app resolving tens of thousands of
// names within their TTLs loses a pin it still holds, and it gets it back by resolving again.
const MIN_PIN_MS = 30_000;
/** A pin's longest life; the DNS stub answers with no longer a TTL, so an app never holds an address past its pin. */
export const MAX_PIN_S = 3_600;
const MAX_PIN_MS = MAX_PIN_S * 1000;
export const MAX_PINS = 65_536;
export const MAX_NAMES_PER_IP = 1_024;
/** When full, room is made down to this (a sweep of the whole table then comes at most once per 1/8 of it). */
const REFILL_TO = MAX_PINS - MAX_PINS / 8;

export class PinTable {
  /** Both levels in the order pins were last set: the first entries are the least recently pinned. */
  private readonly pins = new Map<string, Map<string, number>>();
  private count = 0;
  constructor(private readonly now: () => number = Date.now) {}

  /** Pins `ip` to `name` for max(ttlSeconds, 30 s), at most an hour. */
  pin(name: string, ip: string, ttlSeconds: number): void {
    const expiry = this.now() + Math.min(Math.max(ttlSeconds * 1000, MIN_PIN_MS), MAX_PIN_MS);
    let names = this.pins.get(ip);
    const held = names?.get(name);
    if (names !== undefined && held === undefined && names.size >= MAX_NAMES_PER_IP) {
      this.namesFor(ip);
      if (names.size >= MAX_NAMES_PER_IP) this.drop(ip, names, names.keys().next().value!);
    }
    if (held === undefined && this.count >= MAX_PINS) this.makeRoom();
    names = this.pins.get(ip) ?? new Map<string, number>();
    // Re-inserted at the end of both maps: now the most recently pinned.
    this.pins.delete(ip);
    this.pins.set(ip, names);
    if (held === undefined) this.count++;
    else names.delete(name);
    names.set(name, Math.max(expiry, held ?? 0));
  }

  /** The names `ip` is pinned to now. */
  namesFor(ip: string): string[] {
    const names = this.pins.get(ip);
    if (names === undefined) return [];
    const t = this.now();
    const live: string[] = [];
    for (const [name, expiry] of names) {
      if (expiry > t) live.push(name);
      else this.drop(ip, names, name);
    }
    return live;
  }

  get size(): number {
    return this.count;
  }

  private drop(ip: string, names: Map<string, number>, name: string): void {
    if (!names.delete(name)) return;
    this.count--;
    if (names.size === 0) this.pins.delete(ip);
  }

  /** Expired pins out, then the least recently pinned until REFILL_TO. */
  private makeRoom(): void {
    for (const ip of [...this.pins.keys()]) this.namesFor(ip);
    for (const [ip, names] of this.pins) {
      for (const name of names.keys()) {
        if (this.count <= REFILL_TO) return;
        this.drop(ip, names, name);
      }
    }
  }
}

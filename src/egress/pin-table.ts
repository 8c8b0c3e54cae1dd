// Transparent mode's memory of what the DNS stub answered: IP → the allowed names it was returned for, each
// until max(TTL, 30 s) (capped at an hour). A flow to an IP is allowed under a name only while the pin lives,
// so an app can reach what it resolved through the stub and nothing it did not (a raw IP, another name).
const MIN_PIN_MS = 30_000;
const MAX_PIN_MS = 3_600_000;
const MAX_PINS = 65_536;

export class PinTable {
  private readonly pins = new Map<string, Map<string, number>>();
  private count = 0;
  constructor(private readonly now: () => number = Date.now) {}

  /** Pins `ip` to `name` for max(ttlSeconds, 30 s), at most an hour. */
  pin(name: string, ip: string, ttlSeconds: number): void {
    const expiry = this.now() + Math.min(Math.max(ttlSeconds * 1000, MIN_PIN_MS), MAX_PIN_MS);
    let names = this.pins.get(ip);
    if (names === undefined) {
      if (this.count >= MAX_PINS) this.sweep();
      if (this.count >= MAX_PINS) this.evictOne();
      names = new Map();
      this.pins.set(ip, names);
    }
    if (!names.has(name)) this.count++;
    names.set(name, Math.max(expiry, names.get(name) ?? 0));
  }

  /** The names `ip` is pinned to now. */
  namesFor(ip: string): string[] {
    const names = this.pins.get(ip);
    if (names === undefined) return [];
    const t = this.now();
    const live: string[] = [];
    for (const [name, expiry] of names) {
      if (expiry > t) live.push(name);
      else {
        names.delete(name);
        this.count--;
      }
    }
    if (names.size === 0) this.pins.delete(ip);
    return live;
  }

  get size(): number {
    return this.count;
  }

  private sweep(): void {
    for (const ip of [...this.pins.keys()]) this.namesFor(ip);
  }

  private evictOne(): void {
    const [ip, names] = this.pins.entries().next().value!;
    this.count -= names.size;
    this.pins.delete(ip);
  }
}

// Egress's memory of resolved names: explicit mode keys it "name:port" (the addresses the policy let through on
// that port), the DNS stub by name. Kept until the answer's shortest TTL (at most MAX_TTL_S). Saves a DNS round
// trip through the host per connection or per lookup; an expired or failed name is resolved again. Only allowed
// addresses are kept, so a cached answer was checked like a fresh one. What `get` returns carries the TTL left,
// not the one received: whoever passes it on (the stub, to the app) must not promise an address for longer.
import type { Resolved } from './resolver.ts';

const MAX_TTL_S = 300;
const MAX_NAMES = 4096;

export class NameCache {
  private readonly entries = new Map<string, { value: Resolved; expiry: number }>();
  constructor(private readonly now: () => number = Date.now) {}

  get(name: string): Resolved | undefined {
    const e = this.entries.get(name);
    if (e === undefined) return undefined;
    const left = e.expiry - this.now();
    if (left <= 0) {
      this.entries.delete(name);
      return undefined;
    }
    const leftS = Math.ceil(left / 1000);
    return { allowed: e.value.allowed.map(({ ip, ttl }) => ({ ip, ttl: Math.min(ttl, leftS) })), refused: e.value.refused };
  }

  set(name: string, value: Resolved): void {
    if (value.allowed.length === 0) return;
    const ttl = Math.min(MAX_TTL_S, ...value.allowed.map((a) => a.ttl));
    if (ttl <= 0) return;
    // Full: the oldest name makes room (not when this one is only renewed).
    if (!this.entries.delete(name) && this.entries.size >= MAX_NAMES) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(name, { value, expiry: this.now() + ttl * 1000 });
  }
}

// Explicit mode's memory of resolved names: "name:port" → the addresses the policy let through on that port, until the answer's
// TTL (at most MAX_TTL_S). Saves a DNS round trip through the host per connection; an expired or failed
// name is resolved again. Only allowed addresses are kept, so a cached answer was checked like a fresh one.
import type { Resolved } from './resolver.ts';

const MAX_TTL_S = 300;
const MAX_NAMES = 4096;

export class NameCache {
  private readonly entries = new Map<string, { value: Resolved; expiry: number }>();
  constructor(private readonly now: () => number = Date.now) {}

  get(name: string): Resolved | undefined {
    const e = this.entries.get(name);
    if (e === undefined) return undefined;
    if (e.expiry <= this.now()) {
      this.entries.delete(name);
      return undefined;
    }
    return e.value;
  }

  set(name: string, value: Resolved): void {
    if (value.allowed.length === 0) return;
    const ttl = Math.min(MAX_TTL_S, ...value.allowed.map((a) => a.ttl));
    if (ttl <= 0) return;
    if (this.entries.size >= MAX_NAMES) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(name, { value, expiry: this.now() + ttl * 1000 });
  }
}

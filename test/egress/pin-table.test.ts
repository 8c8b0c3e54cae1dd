// Transparent mode's pin table: what the DNS stub answered, held for max(TTL, 30 s), within a bounded size
// however the names and addresses are spread (one address for many names is what a wildcard zone or a CDN gives).
import { describe, expect, it } from 'vitest';
import { MAX_NAMES_PER_IP, MAX_PINS, PinTable } from '../../src/egress/pin-table.ts';

const ipOf = (i: number): string => `10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`;

describe('pin table', () => {
  it('pins an address to a name for max(TTL, 30 s) and forgets it after', () => {
    let now = 0;
    const pins = new PinTable(() => now);
    pins.pin('a.test', '203.0.113.1', 5);
    now = 29_000;
    expect(pins.namesFor('203.0.113.1')).toEqual(['a.test']);
    now = 30_001;
    expect(pins.namesFor('203.0.113.1')).toEqual([]);
    expect(pins.size).toBe(0);
  });

  it('holds at most MAX_NAMES_PER_IP names on one address: a flood of names on it keeps the newest', () => {
    const pins = new PinTable();
    const total = MAX_NAMES_PER_IP + 500;
    for (let i = 0; i < total; i++) pins.pin(`a${i}.example.com`, '93.184.215.14', 3600);
    const names = pins.namesFor('93.184.215.14');
    expect(names).toHaveLength(MAX_NAMES_PER_IP);
    expect(names).toContain(`a${total - 1}.example.com`);
    expect(names).not.toContain('a0.example.com');
    expect(pins.size).toBe(MAX_NAMES_PER_IP);
  });

  it('holds at most MAX_PINS pins however they are spread over addresses, evicting the least recently pinned', () => {
    const pins = new PinTable();
    // names spread over addresses, each address well under its own cap
    const total = MAX_PINS + 20_000;
    for (let i = 0; i < total; i++) pins.pin(`n${i}.test`, ipOf(i % 4096), 3600);
    expect(pins.size).toBeLessThanOrEqual(MAX_PINS);
    expect(pins.namesFor(ipOf((total - 1) % 4096))).toContain(`n${total - 1}.test`);
    expect(pins.namesFor(ipOf(0))).not.toContain('n0.test');
  });

  it('renewing a pin makes it recent: it survives the eviction of older ones', () => {
    const pins = new PinTable();
    pins.pin('keep.test', '203.0.113.9', 3600);
    for (let i = 0; i < MAX_PINS - 1; i++) pins.pin(`f${i}.test`, ipOf(i), 3600);
    pins.pin('keep.test', '203.0.113.9', 3600);
    for (let i = 0; i < 1000; i++) pins.pin(`g${i}.test`, ipOf(100_000 + i), 3600);
    expect(pins.size).toBeLessThanOrEqual(MAX_PINS);
    expect(pins.namesFor('203.0.113.9')).toEqual(['keep.test']);
  });

  it('drops expired pins before evicting a live one', () => {
    let now = 0;
    const pins = new PinTable(() => now);
    for (let i = 0; i < MAX_PINS; i++) pins.pin(`old${i}.test`, ipOf(i), 30);
    now = 31_000;
    pins.pin('live.test', '203.0.113.2', 3600);
    expect(pins.size).toBe(1);
    expect(pins.namesFor('203.0.113.2')).toEqual(['live.test']);
  });
});

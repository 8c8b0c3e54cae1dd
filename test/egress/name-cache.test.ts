// Explicit mode reuses a resolved name until its TTL, never longer, and never remembers a refusal.
import { describe, expect, it } from 'vitest';
import { NameCache } from '../../src/egress/name-cache.ts';

describe('NameCache', () => {
  it('keeps allowed answers for their TTL (at most 300 s), then forgets them', () => {
    let now = 0;
    const c = new NameCache(() => now);
    c.set('a.test', { allowed: [{ ip: '1.2.3.4', ttl: 10 }, { ip: '1.2.3.5', ttl: 20 }], refused: [] });
    c.set('b.test', { allowed: [{ ip: '1.2.3.6', ttl: 86_400 }], refused: [] });
    now = 9_999;
    expect(c.get('a.test')?.allowed.map((a) => a.ip)).toEqual(['1.2.3.4', '1.2.3.5']);
    now = 10_000;
    expect(c.get('a.test')).toBeUndefined();
    now = 300_000;
    expect(c.get('b.test')).toBeUndefined();
  });

  it('hands out the TTL left, never the one received', () => {
    let now = 0;
    const c = new NameCache(() => now);
    c.set('a.test', { allowed: [{ ip: '1.2.3.4', ttl: 60 }, { ip: '1.2.3.5', ttl: 90 }], refused: [] });
    now = 20_500; // the entry lives 60 s (the shortest TTL)
    expect(c.get('a.test')?.allowed).toEqual([
      { ip: '1.2.3.4', ttl: 40 },
      { ip: '1.2.3.5', ttl: 40 },
    ]);
    now = 59_999;
    expect(c.get('a.test')?.allowed[0]!.ttl).toBe(1);
  });

  it('does not keep an answer with no allowed address, nor one with TTL 0', () => {
    const c = new NameCache(() => 0);
    c.set('r.test', { allowed: [], refused: ['127.0.0.1'] });
    c.set('z.test', { allowed: [{ ip: '1.2.3.4', ttl: 0 }], refused: [] });
    expect(c.get('r.test')).toBeUndefined();
    expect(c.get('z.test')).toBeUndefined();
  });

  it('holds at most 4,096 names: the oldest goes for a new one, none for one renewed', () => {
    const c = new NameCache(() => 0);
    const r = { allowed: [{ ip: '1.2.3.4', ttl: 60 }], refused: [] };
    for (let i = 0; i < 4096; i++) c.set(`n${i}.test`, r);
    c.set('n4095.test', r); // renewed: nothing evicted (before, n0 went)
    expect(c.get('n0.test')).toBeDefined();
    c.set('new.test', r);
    expect(c.get('n0.test')).toBeUndefined();
    expect(c.get('n1.test')).toBeDefined();
    expect(c.get('new.test')).toBeDefined();
  });
});

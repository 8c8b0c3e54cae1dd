// The fresh-nonce budget (src/ingress/nonce-budget.ts): a process-wide token bucket and one per client under it.
import { describe, expect, it } from 'vitest';
import { NonceBudget } from '../../src/ingress/nonce-budget.ts';
import { clientKey } from '../../src/util/ip-bytes.ts';

const clock = (): { now: () => number; advance: (ms: number) => void } => {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => void (t += ms) };
};

describe('NonceBudget', () => {
  it('one client spending its share leaves the others theirs; the process-wide bucket caps the sum', () => {
    const c = clock();
    const b = new NonceBudget({ total: { perSecond: 1, burst: 5 }, perClient: { perSecond: 1, burst: 2 }, now: c.now });
    expect([b.take('192.0.2.1'), b.take('192.0.2.1'), b.take('192.0.2.1')]).toEqual([true, true, false]);
    expect([b.take('192.0.2.2'), b.take('192.0.2.2')]).toEqual([true, true]);
    // 4 of 5 spent: one left for the process, whoever asks.
    expect(b.take('192.0.2.3')).toBe(true);
    expect(b.take('192.0.2.4')).toBe(false);
    expect(b.take(undefined)).toBe(false);
  });

  it('a refusal spends nothing: a client refused by the process-wide bucket keeps its tokens', () => {
    const c = clock();
    const b = new NonceBudget({ total: { perSecond: 1, burst: 1 }, perClient: { perSecond: 1, burst: 2 }, now: c.now });
    expect(b.take('192.0.2.9')).toBe(true);
    expect(b.take('192.0.2.1')).toBe(false);
    c.advance(1000);
    expect(b.take('192.0.2.1')).toBe(true);
    c.advance(1000);
    expect(b.take('192.0.2.1')).toBe(true); // its second token was never spent by the refusal
  });

  it('without a client address only the process-wide bucket applies', () => {
    const b = new NonceBudget({ total: { perSecond: 1, burst: 4 }, perClient: { perSecond: 1, burst: 1 }, now: clock().now });
    expect([b.take(undefined), b.take(undefined), b.take(undefined), b.take(undefined), b.take(undefined)]).toEqual([true, true, true, true, false]);
    expect(b.clients).toBe(0);
  });

  it('a clock stepped back takes no tokens (the budget does not freeze for the step)', () => {
    const c = clock();
    const b = new NonceBudget({ total: { perSecond: 1, burst: 3 }, perClient: { perSecond: 1, burst: 3 }, now: c.now });
    expect(b.take('192.0.2.1')).toBe(true);
    c.advance(-60_000);
    expect([b.take('192.0.2.1'), b.take('192.0.2.2')]).toEqual([true, true]);
  });

  it('buckets refill at their rate, up to their burst', () => {
    const c = clock();
    const b = new NonceBudget({ total: { perSecond: 100, burst: 100 }, perClient: { perSecond: 2, burst: 3 }, now: c.now });
    for (let i = 0; i < 3; i++) expect(b.take('192.0.2.1')).toBe(true);
    expect(b.take('192.0.2.1')).toBe(false);
    c.advance(500);
    expect([b.take('192.0.2.1'), b.take('192.0.2.1')]).toEqual([true, false]);
    c.advance(60_000);
    expect([b.take('192.0.2.1'), b.take('192.0.2.1'), b.take('192.0.2.1'), b.take('192.0.2.1')]).toEqual([true, true, true, false]);
  });

  it('IPv6 sources count per /64; IPv4-mapped addresses count as the IPv4 address', () => {
    expect(clientKey('2001:db8:1:2::7')).toBe(clientKey('2001:DB8:1:2:ffff:1:2:3'));
    expect(clientKey('2001:db8:1:2::7')).toBe('2001:db8:1:2::/64');
    expect(clientKey('2001:db8:1:3::7')).not.toBe(clientKey('2001:db8:1:2::7'));
    expect(clientKey('::1')).toBe('0:0:0:0::/64');
    expect(clientKey('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(clientKey('192.0.2.1')).toBe('192.0.2.1');
    // Other text forms of the same addresses: a dotted IPv4 tail, hex IPv4-mapped, a zone id.
    expect(clientKey('1::2:3:4:5:1.2.3.4')).toBe('1:0:2:3::/64');
    expect(clientKey('::ffff:102:304')).toBe('1.2.3.4');
    expect(clientKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    const b = new NonceBudget({ total: { perSecond: 100, burst: 100 }, perClient: { perSecond: 1, burst: 1 }, now: clock().now });
    expect(b.take('2001:db8:1:2::1')).toBe(true);
    expect(b.take('2001:db8:1:2::2')).toBe(false);
    expect(b.take('2001:db8:1:5::1')).toBe(true);
  });

  it('remembers at most maxClients: full buckets are forgotten first, then the oldest', () => {
    const c = clock();
    const b = new NonceBudget({ total: { perSecond: 1000, burst: 1000 }, perClient: { perSecond: 1, burst: 2 }, maxClients: 3, now: c.now });
    b.take('192.0.2.1');
    b.take('192.0.2.2');
    b.take('192.0.2.3');
    b.take('192.0.2.3'); // .3 is empty
    c.advance(1000); // .1 and .2 are full again, .3 holds one token
    b.take('192.0.2.4');
    expect(b.clients).toBe(2); // .1 and .2 forgotten (nothing lost: a new bucket starts full), .3 and .4 kept
    expect(b.take('192.0.2.3')).toBe(true);
    expect(b.take('192.0.2.3')).toBe(false);
    for (let i = 10; i < 20; i++) b.take(`192.0.2.${i}`);
    expect(b.clients).toBeLessThanOrEqual(3);
  });
});

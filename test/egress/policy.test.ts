// The allow-list grammar and matching, the non-global ranges, config validation naming the entry, and real
// Evervault enclave.toml files ([egress] enabled/destinations unchanged) enforcing their destinations.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config.ts';
import { isNonGlobal } from '../../src/egress/address-class.ts';
import { EgressPolicy, parseDestination } from '../../src/egress/policy.ts';

describe('destinations grammar', () => {
  it('parses names, wildcards, ports, ranges, IP literals and CIDRs', () => {
    expect(parseDestination('API.Stripe.com.')).toMatchObject({ kind: 'name', name: 'api.stripe.com', ports: { from: 1, to: 65535 } });
    expect(parseDestination('*.example.com:443')).toMatchObject({ kind: 'suffix', suffix: 'example.com', ports: { from: 443, to: 443 } });
    expect(parseDestination('db.internal:5432-5433')).toMatchObject({ kind: 'name', ports: { from: 5432, to: 5433 } });
    expect(parseDestination('*')).toMatchObject({ kind: 'any-name' });
    expect(parseDestination('10.0.0.0/8:443')).toMatchObject({ kind: 'ip', family: 4, prefix: '10.0.0.0/8' });
    expect(parseDestination('1.2.3.4')).toMatchObject({ kind: 'ip', family: 4, prefix: '1.2.3.4/32' });
    expect(parseDestination('[2001:db8::/32]:443')).toMatchObject({ kind: 'ip', family: 6, prefix: '2001:db8::/32', ports: { from: 443, to: 443 } });
    expect(parseDestination('2001:db8::1')).toMatchObject({ kind: 'ip', family: 6, prefix: '2001:db8::1/128' });
    expect(parseDestination('host:*')).toMatchObject({ kind: 'name', ports: { from: 1, to: 65535 } });
  });

  it.each(['', 'a..b', '*foo.com', 'foo.*.com', '*.', 'host:0', 'host:70000', 'host:9-3', 'host:x', '1.2.3.4/33', '300.1.1.1', '[1.2.3.4]', '[::1]/129', '-bad.com', 'a_b c', '[2001:db8::/32/64]:443', '2001:db8::/32/64', '[::ffff:10.0.0.0/80]'])(
    'rejects %j, naming the entry in the config error',
    (entry) => {
      expect(() => configFromObject({ egress: { enabled: true, destinations: ['ok.com', entry] } })).toThrow(new RegExp(`egress\\.destinations: invalid entry ${JSON.stringify(entry).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    },
  );

  it('rejects transparent mode without enabled and any unknown [egress] key', () => {
    expect(() => configFromObject({ egress: { mode: 'transparent' } })).toThrow(/transparent.*enabled/);
    expect(() => configFromObject({ egress: { enabled: true, ports: [443] } })).toThrow(/unknown key "egress.ports"/);
  });

  it('rejects, in transparent mode, an entry naming port 53 (TCP 53 goes to the DNS stub), naming the entry', () => {
    // Failed before the fix: "ns.example.com:53" loaded and could never be reached over TCP.
    const transparent = (destinations: string[]) => () => configFromObject({ egress: { enabled: true, mode: 'transparent', destinations } });
    for (const entry of ['ns.example.com:53', '10.0.0.2:1-1024', '*.example.org:53-53']) {
      expect(transparent(['ok.com:443', entry]), entry).toThrow(`egress.destinations: invalid entry ${JSON.stringify(entry)}: in transparent mode TCP to port 53 goes to the DNS stub`);
    }
    expect(transparent(['api.example.com', '*.example.org:*', '10.0.0.0/8:54-100', 'x.example.com:1-52'])).not.toThrow(); // any port: 53 aside, reachable
    expect(() => configFromObject({ egress: { enabled: true, destinations: ['ns.example.com:53'] } })).not.toThrow(); // explicit mode dials it
  });
});

describe('matching', () => {
  const p = new EgressPolicy(['*.example.com:443', 'api.stripe.com', 'db.test:5432-5433', '10.1.0.0/16:8080', '[2001:db8::/32]:443']);
  it('matches wildcards on label boundaries only, never the apex', () => {
    expect(p.matchName('a.example.com', 443)).not.toBeNull();
    expect(p.matchName('a.b.example.com', 443)).not.toBeNull();
    expect(p.matchName('A.EXAMPLE.COM.', 443)).not.toBeNull();
    expect(p.matchName('example.com', 443)).toBeNull();
    expect(p.matchName('badexample.com', 443)).toBeNull();
    expect(p.matchName('example.com.evil.com', 443)).toBeNull();
    expect(p.matchName('a.example.com.evil.com', 443)).toBeNull();
    expect(p.matchName('a.example.com', 80)).toBeNull();
  });
  it('matches exact names on any port when no port is given, ranges inclusively', () => {
    expect(p.matchName('api.stripe.com', 1)).not.toBeNull();
    expect(p.matchName('x.api.stripe.com', 443)).toBeNull();
    expect(p.matchName('db.test', 5433)).not.toBeNull();
    expect(p.matchName('db.test', 5434)).toBeNull();
  });
  it('never matches an IP literal with a name entry, nor a name with an IP entry', () => {
    expect(new EgressPolicy(['*']).matchName('1.2.3.4', 443)).toBeNull();
    expect(p.matchIp('10.1.2.3', 8080)).not.toBeNull();
    expect(p.matchIp('10.2.0.1', 8080)).toBeNull();
    expect(p.matchIp('10.1.2.3', 8081)).toBeNull();
    expect(p.matchIp('2001:db8::5', 443)).not.toBeNull();
    expect(p.matchIp('::ffff:10.1.2.3', 8080)).not.toBeNull();
  });
  it('takes an IPv4-mapped entry for its IPv4 address or prefix (it would otherwise never match)', () => {
    const mapped = new EgressPolicy(['[::ffff:10.0.0.0/104]:5432', '[::ffff:192.168.1.7]']);
    expect(mapped.matchIp('10.9.8.7', 5432)).not.toBeNull();
    expect(mapped.matchIp('::ffff:10.9.8.7', 5432)).not.toBeNull();
    expect(mapped.matchIp('11.0.0.1', 5432)).toBeNull();
    expect(mapped.matchIp('10.9.8.7', 5433)).toBeNull();
    expect(mapped.matchIp('192.168.1.7', 80)).not.toBeNull();
    expect(mapped.resolvedAddressAllowed('10.0.0.1', 5432)).toBe(true);
  });
  it('refuses non-global answers unless an IP entry names the address', () => {
    for (const ip of ['127.0.0.1', '169.254.169.254', '10.0.0.1', '172.16.5.5', '192.168.1.1', '100.64.0.1', '224.0.0.1', '0.0.0.0', '::1', 'fd00::1', 'fe80::1', 'ff02::1', '::ffff:127.0.0.1', '::ffff:a9fe:a9fe']) {
      expect(isNonGlobal(ip)).toBe(true);
      expect(p.resolvedAddressAllowed(ip, 8080)).toBe(false);
    }
    expect(p.resolvedAddressAllowed('10.1.0.7', 8080)).toBe(true); // named by 10.1.0.0/16:8080
    expect(p.resolvedAddressAllowed('93.184.216.34', 443)).toBe(true);
    for (const ip of ['8.8.8.8', '1.1.1.1', '2606:4700::1111', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1']) expect(isNonGlobal(ip)).toBe(false);
  });
  it('classifies the IPv4 address inside NAT64, 6to4, IPv4-compatible and IPv4-translated IPv6 addresses', () => {
    // Failed before the fix: only ::ffff: was unwrapped, so these reached 169.254.169.254 / 10.0.0.5 as "global".
    for (const ip of ['64:ff9b::a9fe:a9fe', '64:ff9b::10.0.0.5', '::a9fe:a9fe', '::ffff:0:a9fe:a9fe', '2002:a9fe:a9fe::1', '2002:a00:5::']) {
      expect(isNonGlobal(ip), ip).toBe(true);
      expect(p.resolvedAddressAllowed(ip, 443), ip).toBe(false);
    }
  });
  it('refuses every block the IANA special-purpose registries mark not globally reachable, unless an IP entry names it', () => {
    // Failed before the fix: benchmarking, the TEST-NETs and these IPv6 blocks counted as global, so a DNS answer
    // in them was dialled without an IP entry. One address per block: [address, the block an IP entry gives].
    const blocks: [string, string][] = [
      ['0.0.0.1', '0.0.0.0/8'],
      ['192.0.0.8', '192.0.0.0/24'],
      ['192.0.0.170', '192.0.0.0/24'],
      ['192.0.2.1', '192.0.2.0/24'],
      ['198.18.0.1', '198.18.0.0/15'],
      ['198.19.255.254', '198.18.0.0/15'],
      ['198.51.100.7', '198.51.100.0/24'],
      ['203.0.113.7', '203.0.113.0/24'],
      ['240.0.0.1', '240.0.0.0/4'],
      ['255.255.255.255', '255.255.255.255/32'],
      ['64:ff9b:1::a', '64:ff9b:1::/48'],
      ['100::1', '100::/64'],
      ['100:0:0:1::1', '100:0:0:1::/64'],
      ['2001::1', '2001::/32'], // Teredo, inside 2001::/23
      ['2001:2::1', '2001:2::/48'],
      ['2001:10::1', '2001::/23'],
      ['2001:db8::1', '2001:db8::/32'],
      ['3fff::1', '3fff::/20'],
      ['5f00::1', '5f00::/16'],
      ['fec0::1', 'fec0::/10'], // site-local (RFC 3879): failed before the fix, dialled as global
      ['feff:ffff::1', 'fec0::/10'],
      // the same blocks carried inside IPv6 (an IPv4 entry covers the mapped form; the others need their own)
      ['::ffff:198.18.0.1', '198.18.0.0/15'],
      ['64:ff9b::c000:201', '64:ff9b::c000:200/120'],
      ['2002:cb00:7107::1', '2002:cb00:7100::/40'],
    ];
    for (const [ip, block] of blocks) {
      expect(isNonGlobal(ip), ip).toBe(true);
      expect(new EgressPolicy(['*:443']).resolvedAddressAllowed(ip, 443), ip).toBe(false);
      expect(new EgressPolicy(['*:443']).answerableAddress(ip), ip).toBe(false);
      const named = new EgressPolicy(['*:443', `${block.includes(':') ? `[${block}]` : block}:443`]);
      expect(named.resolvedAddressAllowed(ip, 443), `${ip} with ${block}`).toBe(true);
      expect(named.resolvedAddressAllowed(ip, 80), `${ip} with ${block} on another port`).toBe(false);
    }
    // Globally reachable: assignments inside those blocks, and special-purpose blocks the registries mark so.
    for (const ip of ['192.0.0.9', '192.0.0.10', '192.31.196.1', '192.52.193.1', '192.175.48.1', '2001:1::1', '2001:1::2', '2001:1::3', '2001:3::1', '2001:4:112::1', '2001:20::1', '2001:30::1', '2620:4f:8000::1', '64:ff9b::808:808']) {
      expect(isNonGlobal(ip), ip).toBe(false);
    }
  });

  it('lets a name reach a non-global address only on the ports an IP entry gives that address', () => {
    // "*:443" with the database on 5432 only: a public name rebound to 10.0.0.5 must not reach it on 443
    // (failed before the fix: any IP entry covering the address exempted it on every port).
    const q = new EgressPolicy(['*:443', '10.0.0.0/8:5432']);
    expect(q.resolvedAddressAllowed('10.0.0.5', 5432)).toBe(true);
    expect(q.resolvedAddressAllowed('10.0.0.5', 443)).toBe(false);
    expect(q.resolvedAddressAllowed('::ffff:10.0.0.5', 443)).toBe(false);
    expect(q.resolvedAddressAllowed('93.184.216.34', 443)).toBe(true);
    expect(q.answerableAddress('10.0.0.5')).toBe(true); // the DNS stub may answer it; a flow needs the IP entry
    expect(q.answerableAddress('192.168.0.1')).toBe(false);
  });
});

describe('Evervault enclave.toml files', () => {
  const dir = path.resolve('test/config/fixtures/evervault');
  // Their [egress] table as written, through our config loader (the other tables are another test's subject).
  const loadConfig = (file: string, _env: object) => configFromObject({ egress: (parseToml(readFileSync(file, 'utf8')) as { egress: unknown }).egress });
  it('debug-pcrs: wildcard and exact destinations, any port, enforced as written', () => {
    const c = loadConfig(path.join(dir, 'debug-pcrs.enclave.toml'), {});
    expect(c.egress).toMatchObject({ enabled: true, destinations: ['*.metrics.example.com', 'relay.example.org'], mode: 'explicit', app_vsock: false });
    const p = new EgressPolicy(c.egress.destinations);
    expect(p.matchName('eu.metrics.example.com', 443)).not.toBeNull();
    expect(p.matchName('relay.example.org', 8545)).not.toBeNull();
    expect(p.matchName('metrics.example.com', 443)).toBeNull();
    expect(p.matchName('relay.example.org.attacker.net', 443)).toBeNull();
    expect(p.matchName('evil.example.org', 443)).toBeNull();
  });
  it('egress-scaling: two exact names, nothing else', () => {
    const c = loadConfig(path.join(dir, 'egress-scaling.enclave.toml'), {});
    const p = new EgressPolicy(c.egress.destinations);
    expect(p.matchName('rpc.example.org', 443)).not.toBeNull();
    expect(p.matchName('backend.example.net', 80)).not.toBeNull();
    expect(p.matchName('www.example.org', 443)).toBeNull();
  });
  it('app_vsock (ours): false unless set; a boolean', () => {
    expect(configFromObject({ egress: { enabled: true, app_vsock: true } }).egress.app_vsock).toBe(true);
    expect(() => configFromObject({ egress: { enabled: true, app_vsock: 'yes' } })).toThrow(/egress\.app_vsock/);
  });
  it('enabled = false: egress stays off', () => {
    expect(loadConfig(path.join(dir, 'api-key-auth.enclave.toml'), {}).egress.enabled).toBe(false);
  });
});

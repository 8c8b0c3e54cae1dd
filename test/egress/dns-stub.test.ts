// The transparent-mode DNS stub's answers (answerQuery, the code behind UDP and TCP port 53), checked with
// Node's own resolver over real UDP and TCP sockets where it matters.
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecisionLog, type EgressDecision } from '../../src/egress/decision-log.ts';
import { buildQuery, parseResponse, RCODE } from '../../src/egress/dns-message.ts';
import { answerQuery, MAX_TCP_CONNECTIONS, startDnsStub, TCP_MAX_OUTSTANDING, UDP_MAX_OUTSTANDING, type DnsStub } from '../../src/egress/dns-stub.ts';
import { NameCache } from '../../src/egress/name-cache.ts';
import { MAX_PIN_S, PinTable } from '../../src/egress/pin-table.ts';
import { EgressPolicy } from '../../src/egress/policy.ts';
import { MAX_DNS_IN_FLIGHT, type DnsTransport } from '../../src/egress/resolver.ts';
import { publicIp } from './helpers.ts';

const many = Array.from({ length: 40 }, (_, i) => publicIp(i + 1));
const OK_IP = publicIp(7);
/** Answers to refuse: loopback, and benchmarking and documentation addresses (not globally reachable). */
const REBIND_IPS = ['127.0.0.1', '198.18.0.1', '203.0.113.7'];
let upstreamQueries: string[] = [];
/** The host's resolver, answering from a table (stands in for the flow protocol's DNS op). */
const upstream: DnsTransport = (q) => {
  const query = parseResponse(Buffer.concat([q.subarray(0, 2), Buffer.from([0x81, 0x80]), q.subarray(4)]));
  const name = query.question!.name;
  upstreamQueries.push(name);
  const ips = name === 'ok.test' ? [OK_IP] : name === 'many.test' ? many : name === 'rebind.test' ? REBIND_IPS : [];
  const head = Buffer.from(q.subarray(0, 12));
  head.writeUInt16BE(0x8180, 2);
  head.writeUInt16BE(ips.length, 6);
  const end = q.indexOf(0, 12) + 5;
  const rrs = ips.map((ip) => Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 120, 0, 4, ...ip.split('.').map(Number)]));
  return Promise.resolve(Buffer.concat([head, q.subarray(12, end), ...rrs]));
};

const policy = new EgressPolicy(['ok.test:443', 'many.test', 'rebind.test']);
const pins = new PinTable();
const decisions: EgressDecision[] = [];
const opts = { policy, dns: upstream, pins, log: new DecisionLog({ onDecision: (d) => decisions.push(d) }) };
let stub: DnsStub;
let resolver: Resolver;

beforeAll(async () => {
  stub = await startDnsStub({ ...opts, port: 0 });
  resolver = new Resolver({ timeout: 2_000, tries: 1 });
  resolver.setServers([`127.0.0.1:${stub.port}`]);
});
afterAll(async () => {
  await stub?.close();
});

/** One query over TCP to the stub (2-byte length prefix) and its answer. */
function tcpExchange(q: Buffer): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port: stub.port });
    const len = Buffer.alloc(2);
    len.writeUInt16BE(q.length);
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        s.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    s.on('close', () => reject(new Error('closed without an answer')));
    s.on('error', reject);
    s.write(Buffer.concat([len, q]));
  });
}

describe('DNS stub', () => {
  it('answers an allowed name with its addresses and pins them to the name', async () => {
    expect(await resolver.resolve4('ok.test')).toEqual([OK_IP]);
    expect(pins.namesFor(OK_IP)).toEqual(['ok.test']);
    expect(decisions.at(-1)).toMatchObject({ allowed: true, via: 'dns', name: 'ok.test', ip: OK_IP });
  });

  it('echoes the question as asked, letter case included (0x20 clients drop an answer whose question differs)', async () => {
    const q = buildQuery(0x55, 'oK.TeSt', 1);
    const res = (await answerQuery(opts, q, 512))!;
    expect(res.readUInt16BE(2) & 0xf).toBe(RCODE.NOERROR);
    expect(res.readUInt16BE(6)).toBe(1);
    expect(res.subarray(12, q.length).toString('latin1')).toBe(q.subarray(12).toString('latin1'));
    expect(pins.namesFor(OK_IP)).toContain('ok.test'); // the policy and the pin still see the name in lower case
  });

  it('answers with a TTL no longer than the pin lives (an upstream TTL of a day becomes an hour)', async () => {
    // Failed before the fix: the app got 86400 s while the pin lasted 3600 s, so its cached address was reset.
    let now = 1_000_000;
    const longPins = new PinTable(() => now);
    const day: DnsTransport = (q) => upstream(q).then((r) => {
      const b = Buffer.from(r);
      b.writeUInt32BE(86_400, b.length - 10); // the one answer's TTL
      return b;
    });
    const res = parseResponse((await answerQuery({ ...opts, dns: day, pins: longPins }, buildQuery(21, 'ok.test', 1), 512))!);
    expect(res.answers).toEqual([expect.objectContaining({ address: OK_IP, ttl: MAX_PIN_S })]);
    now += (MAX_PIN_S - 1) * 1000;
    expect(longPins.namesFor(OK_IP)).toEqual(['ok.test']); // pinned for as long as the app may keep it
    const short = parseResponse((await answerQuery(opts, buildQuery(22, 'ok.test', 1), 512))!);
    expect(short.answers[0]).toMatchObject({ ttl: 120 }); // shorter TTLs pass unchanged
  });

  it('answers a name again from its cache within the TTL: no host round trip, the TTL left, pinned again', async () => {
    let now = 5_000_000;
    const cache = new NameCache(() => now);
    const cachedPins = new PinTable(() => now);
    const o = { ...opts, pins: cachedPins, cache };
    upstreamQueries = [];
    const first = parseResponse((await answerQuery(o, buildQuery(31, 'ok.test', 1), 512))!);
    expect(first.answers).toEqual([expect.objectContaining({ address: OK_IP, ttl: 120 })]);
    now += 100_000; // 20 s of the 120 left; the first pin (120 s) still lives
    const again = parseResponse((await answerQuery(o, buildQuery(32, 'ok.test', 1), 512))!);
    expect(again.id).toBe(32);
    expect(again.answers).toEqual([expect.objectContaining({ name: 'ok.test', address: OK_IP, ttl: 20 })]);
    expect(upstreamQueries).toEqual(['ok.test']);
    expect(decisions.at(-1)).toMatchObject({ allowed: true, via: 'dns', name: 'ok.test', reason: 'answered 1 address(es) from the cache, pinned' });
    now += 25_000; // past the first pin's 120 s: the cached answer pinned the address again for at least 30 s
    expect(cachedPins.namesFor(OK_IP)).toEqual(['ok.test']);
    // Expired: asked again. A name that resolves only to refused addresses is never kept.
    const third = parseResponse((await answerQuery(o, buildQuery(33, 'ok.test', 1), 512))!);
    expect(third.answers[0]).toMatchObject({ ttl: 120 });
    await answerQuery(o, buildQuery(34, 'rebind.test', 1), 512);
    await answerQuery(o, buildQuery(35, 'rebind.test', 1), 512);
    expect(upstreamQueries).toEqual(['ok.test', 'ok.test', 'rebind.test', 'rebind.test']);
  });

  it('refuses a name off the list without asking upstream', async () => {
    upstreamQueries = [];
    await expect(resolver.resolve4('evil.test')).rejects.toMatchObject({ code: 'EREFUSED' });
    await expect(resolver.resolveMx('evil.test')).rejects.toMatchObject({ code: 'EREFUSED' });
    expect(upstreamQueries).toEqual([]);
    expect(decisions.at(-1)).toMatchObject({ allowed: false, via: 'dns', name: 'evil.test', reason: 'name not on the allow-list' });
  });

  it('gives AAAA and other types of an allowed name an empty NOERROR (IPv6 off)', async () => {
    await expect(resolver.resolve6('ok.test')).rejects.toMatchObject({ code: 'ENODATA' });
  });

  it('drops non-global answers (rebinding, benchmarking and documentation addresses included) and pins nothing for them', async () => {
    await expect(resolver.resolve4('rebind.test')).rejects.toMatchObject({ code: 'ENODATA' });
    for (const ip of REBIND_IPS) expect(pins.namesFor(ip), ip).toEqual([]);
  });

  it('sets TC over UDP when the answer exceeds 512 bytes, and answers in full over TCP', async () => {
    const udp = parseResponse((await answerQuery(opts, buildQuery(9, 'many.test', 1), 512))!);
    expect(udp.truncated).toBe(true);
    expect(udp.answers).toEqual([]);
    const r = parseResponse(await tcpExchange(Buffer.from(buildQuery(10, 'many.test', 1))));
    expect(r.rcode).toBe(RCODE.NOERROR);
    expect(r.answers.map((a) => ('address' in a ? a.address : ''))).toEqual(many);
  });

  it('answers a malformed query with FORMERR and ignores what is not even a header', async () => {
    const bad = Buffer.from(buildQuery(11, 'ok.test', 1));
    bad.writeUInt16BE(2, 4); // two questions announced, one present
    const res = (await answerQuery(opts, bad, 512))!;
    expect(res.readUInt16BE(0)).toBe(11);
    expect(res.readUInt16BE(2) & 0xf).toBe(RCODE.FORMERR);
    expect(await answerQuery(opts, Buffer.from([1, 2, 3]), 512)).toBeNull();
  });

  it('sends a header-only answer (FORMERR, SERVFAIL) that announces no question: a well-formed message', async () => {
    const bad = Buffer.from(buildQuery(13, 'ok.test', 1));
    bad.writeUInt16BE(2, 4);
    const formerr = (await answerQuery(opts, bad, 512))!;
    expect(formerr.length).toBe(12);
    expect(parseResponse(formerr)).toMatchObject({ id: 13, rcode: RCODE.FORMERR, question: null, answers: [] });
    const broken = { ...opts, log: { record: () => { throw new Error('decision log broken'); } } as unknown as DecisionLog };
    const servfail = (await answerQuery(broken, buildQuery(14, 'evil.test', 1), 512))!;
    expect(parseResponse(servfail)).toMatchObject({ id: 14, rcode: RCODE.SERVFAIL, question: null, answers: [] });
  });

  it('answers FORMERR over UDP and TCP to a wire label holding a "." byte, refused or allowed once normalised, and resolves nothing', async () => {
    const dotted = (labels: string[]): Buffer =>
      Buffer.concat([Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels.map((l) => Buffer.from([l.length, ...Buffer.from(l)])), Buffer.from([0, 0, 1, 0, 1])]);
    upstreamQueries = [];
    const pinned = pins.size;
    // "a."+"test" reads as a..test (refused); "ok"+"test." reads as ok.test. (allowed once normalised)
    for (const q of [dotted(['a.', 'test']), dotted(['ok', 'test.'])]) {
      const viaUdp = await new Promise<Buffer>((resolve, reject) => {
        const c = dgram.createSocket('udp4');
        const timer = setTimeout(() => {
          c.close();
          reject(new Error('no answer over UDP'));
        }, 3_000).unref();
        c.once('message', (m) => {
          clearTimeout(timer); // closing twice throws, uncaught, into whichever test runs then
          c.close();
          resolve(m);
        });
        c.once('error', reject);
        c.send(q, stub.port, '127.0.0.1');
      });
      const viaTcp = await tcpExchange(q);
      for (const res of [viaUdp, viaTcp]) {
        expect(res.readUInt16BE(0)).toBe(0x1234);
        expect(res.readUInt16BE(2) & 0xf).toBe(RCODE.FORMERR);
      }
    }
    expect(upstreamQueries).toEqual([]);
    expect(pins.size).toBe(pinned);
  });

  it('answers SERVFAIL, never rejects, when something inside the stub throws', async () => {
    const broken = { ...opts, log: { record: () => { throw new Error('decision log broken'); } } as unknown as DecisionLog };
    const res = (await answerQuery(broken, buildQuery(12, 'evil.test', 1), 512))!;
    expect(res.readUInt16BE(0)).toBe(12);
    expect(res.readUInt16BE(2) & 0x800f).toBe(0x8000 | RCODE.SERVFAIL);
    expect(res.readUInt16BE(6)).toBe(0); // no answers
  });
});

describe('DNS stub: bounded whatever the app sends', () => {
  /** A host resolver that holds every query until released; counts how many it holds at once. */
  function heldUpstream(): { dns: DnsTransport; held: (() => void)[]; peak: () => number; asked: () => number } {
    const held: (() => void)[] = [];
    let now = 0;
    let peak = 0;
    let asked = 0;
    const dns: DnsTransport = (q) =>
      new Promise((resolve) => {
        asked++;
        peak = Math.max(peak, ++now);
        held.push(() => {
          now--;
          const head = Buffer.from(q.subarray(0, 12));
          head.writeUInt16BE(0x8180, 2);
          head.writeUInt16BE(1, 6);
          const end = q.indexOf(0, 12) + 5;
          resolve(Buffer.concat([head, q.subarray(12, end), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...publicIp(9).split('.').map(Number)])]));
        });
      });
    return { dns, held, peak: () => peak, asked: () => asked };
  }

  async function stubWith(dns: DnsTransport, log = new DecisionLog()): Promise<DnsStub> {
    return startDnsStub({ policy: new EgressPolicy(['*.flood.test']), dns, pins: new PinTable(), log, port: 0 });
  }

  const framed = (q: Buffer): Buffer => Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q]);

  /** Counts the framed answers arriving on `s`. */
  function countAnswers(s: net.Socket): { n: number } {
    const count = { n: 0 };
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        buf = buf.subarray(2 + buf.readUInt16BE(0));
        count.n++;
      }
    });
    return count;
  }

  it('keeps a TCP connection whose query the host is still answering past the idle timeout, then closes it once idle', async () => {
    // Failed before the fix: the idle timer (10 s, the enclave's whole DNS deadline) cut the connection before a slow answer.
    const up = heldUpstream();
    const s1 = await startDnsStub({ policy: new EgressPolicy(['*.flood.test']), dns: up.dns, pins: new PinTable(), log: new DecisionLog(), port: 0, tcpIdleMs: 100 });
    const c = net.connect({ host: '127.0.0.1', port: s1.port });
    try {
      await new Promise((r) => c.once('connect', r));
      const answers = countAnswers(c);
      const closed = new Promise((r) => c.once('close', r));
      c.write(framed(Buffer.from(buildQuery(77, 'slow.flood.test', 1))));
      await waitUntil(() => up.held.length === 1);
      await new Promise((r) => setTimeout(r, 400)); // four idle periods with the answer owed
      expect(c.destroyed).toBe(false);
      up.held.shift()!();
      await waitUntil(() => answers.n === 1);
      await closed; // idle again, nothing owed: closed
    } finally {
      for (const r of up.held.splice(0)) r(); // nothing left in flight for the process-wide gate
      c.destroy();
      await s1.close();
    }
  });

  it(`answers at most ${TCP_MAX_OUTSTANDING} queries of one TCP connection at once, and all of them in the end`, async () => {
    // Failed before the fix: 100 queries in one write became 100 host exchanges at once.
    const up = heldUpstream();
    const s1 = await stubWith(up.dns);
    const c = net.connect({ host: '127.0.0.1', port: s1.port });
    c.on('error', () => {});
    const got = countAnswers(c);
    try {
      c.write(Buffer.concat(Array.from({ length: 100 }, (_, i) => framed(buildQuery(i, `q${i}.flood.test`, 1)))));
      await waitUntil(() => up.held.length === TCP_MAX_OUTSTANDING);
      while (got.n < 100) {
        up.held.shift()?.();
        await new Promise((r) => setImmediate(r));
      }
      expect(up.peak()).toBe(TCP_MAX_OUTSTANDING);
      expect(up.asked()).toBe(100);
    } finally {
      c.destroy();
      await s1.close();
    }
  });

  it('stops reading a TCP client that does not read its answers, then serves it in full once it does', async () => {
    // Failed before the fix: every query was read and answered into the agent's heap (all 80,000 here; the
    // answers queued in memory). Refused names: answered at once, no host query.
    const decisions: EgressDecision[] = [];
    const s1 = await stubWith(() => Promise.reject(new Error('never asked')), new DecisionLog({ onDecision: (d) => decisions.push(d) }));
    const N = 80_000; // the kernel buffers take ~20,000 answers (4 MiB send buffer) before the stub must stop
    const q = framed(buildQuery(1, `${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.evil.test`, 1));
    const c = net.connect({ host: '127.0.0.1', port: s1.port });
    c.on('error', () => {});
    c.pause();
    try {
      await new Promise((r) => c.once('connect', r));
      c.write(Buffer.concat(Array.from({ length: N }, () => q)));
      // Wait until the stub has stopped (nothing new for 300 ms): kernel buffers hold what it wrote before.
      let last = -1;
      while (decisions.length !== last) {
        last = decisions.length;
        await new Promise((r) => setTimeout(r, 300));
      }
      expect(decisions.length).toBeLessThan(N / 2);
      const got = countAnswers(c);
      c.resume();
      await waitUntil(() => got.n === N, 20_000);
      expect(decisions.length).toBe(N);
    } finally {
      c.destroy();
      await s1.close();
    }
  });

  it(`refuses host queries past ${MAX_DNS_IN_FLIGHT} in flight with SERVFAIL, recorded as busy`, async () => {
    // Failed before the fix: 100 UDP queries became 100 host exchanges at once, none refused.
    const up = heldUpstream();
    const decisions: EgressDecision[] = [];
    const s1 = await stubWith(up.dns, new DecisionLog({ onDecision: (d) => decisions.push(d) }));
    const c = dgram.createSocket('udp4');
    const rcodes: number[] = [];
    c.on('message', (m) => rcodes.push(m.readUInt16BE(2) & 0xf));
    try {
      for (let i = 0; i < 100; i++) c.send(buildQuery(i, `u${i}.flood.test`, 1), s1.port, '127.0.0.1');
      await waitUntil(() => rcodes.length === 100 - MAX_DNS_IN_FLIGHT);
      expect(rcodes.every((r) => r === RCODE.SERVFAIL)).toBe(true);
      expect(up.held.length).toBe(MAX_DNS_IN_FLIGHT);
      for (const release of up.held.splice(0)) release();
      await waitUntil(() => rcodes.length === 100);
      expect(rcodes.filter((r) => r === RCODE.NOERROR)).toHaveLength(MAX_DNS_IN_FLIGHT);
      expect(up.peak()).toBe(MAX_DNS_IN_FLIGHT);
      expect(decisions.filter((d) => d.busy === true)).toHaveLength(100 - MAX_DNS_IN_FLIGHT);
    } finally {
      c.close();
      await s1.close();
    }
  });

  it('asks the host once for concurrent queries of one name, and pins what it answers', async () => {
    const up = heldUpstream();
    const pinsHere = new PinTable();
    const s1 = await startDnsStub({ policy: new EgressPolicy(['*.flood.test']), dns: up.dns, pins: pinsHere, log: new DecisionLog(), port: 0 });
    const c = dgram.createSocket('udp4');
    const answers: Buffer[] = [];
    c.on('message', (m) => answers.push(m));
    try {
      for (let i = 0; i < 20; i++) c.send(buildQuery(i, 'same.flood.test', 1), s1.port, '127.0.0.1');
      await waitUntil(() => up.held.length === 1);
      up.held.shift()!();
      await waitUntil(() => answers.length === 20);
      expect(up.asked()).toBe(1);
      expect(new Set(answers.map((a) => a.readUInt16BE(0))).size).toBe(20); // each answer carries its own id
      expect(answers.every((a) => parseResponse(a).answers.length === 1)).toBe(true);
      expect(pinsHere.namesFor(publicIp(9))).toEqual(['same.flood.test']);
    } finally {
      c.close();
      await s1.close();
    }
  });

  it(`holds at most ${UDP_MAX_OUTSTANDING} UDP queries waiting (more get SERVFAIL at once) and refuses oversized ones`, async () => {
    const up = heldUpstream();
    const s1 = await startDnsStub({ policy: new EgressPolicy(['*.flood.test']), dns: up.dns, pins: new PinTable(), log: new DecisionLog(), port: 0 });
    const c = dgram.createSocket('udp4');
    const answers: Buffer[] = [];
    c.on('message', (m) => answers.push(m));
    try {
      const n = UDP_MAX_OUTSTANDING + 40;
      // In groups, so that the socket buffers on loopback never drop a datagram.
      for (let i = 0; i < n; i++) {
        await new Promise<void>((r) => c.send(buildQuery(i, 'same.flood.test', 1), s1.port, '127.0.0.1', () => r()));
        if (i % 16 === 15) await new Promise((r) => setTimeout(r, 5));
      }
      // A query padded past 512 bytes (trailing bytes a parser would ignore) is not kept: FORMERR.
      c.send(Buffer.concat([buildQuery(0xbeef, 'same.flood.test', 1), Buffer.alloc(30_000)]), s1.port, '127.0.0.1');
      await waitUntil(() => answers.length === 41);
      expect(answers.filter((a) => a.readUInt16BE(0) === 0xbeef).map((a) => a[3]! & 0x0f)).toEqual([RCODE.FORMERR]);
      expect(answers.filter((a) => a.readUInt16BE(0) !== 0xbeef).every((a) => (a[3]! & 0x0f) === RCODE.SERVFAIL)).toBe(true);
      up.held.shift()!();
      await waitUntil(() => answers.length === n + 1);
      expect(answers.filter((a) => (a[3]! & 0x0f) === RCODE.NOERROR)).toHaveLength(UDP_MAX_OUTSTANDING);
      // Back under the cap: a new query waits for its answer again.
      c.send(buildQuery(7, 'other.flood.test', 1), s1.port, '127.0.0.1');
      await waitUntil(() => up.held.length === 1);
      up.held.shift()!();
      await waitUntil(() => answers.length === n + 2);
      expect(answers.at(-1)![3]! & 0x0f).toBe(RCODE.NOERROR);
    } finally {
      c.close();
      await s1.close();
    }
  });

  it(`accepts at most ${MAX_TCP_CONNECTIONS} TCP connections at once`, async () => {
    const s1 = await stubWith(() => Promise.reject(new Error('never asked')));
    const open: net.Socket[] = [];
    /** Connects, asks a refused name, and says whether an answer came before the connection closed. */
    const ask = (): Promise<boolean> =>
      new Promise((resolve) => {
        const c = net.connect({ host: '127.0.0.1', port: s1.port });
        open.push(c);
        c.on('error', () => {});
        c.once('data', () => resolve(true));
        c.once('close', () => resolve(false));
        c.write(framed(buildQuery(1, 'evil.test', 1)));
      });
    try {
      for (let i = 0; i < MAX_TCP_CONNECTIONS; i++) expect(await ask()).toBe(true);
      expect(await ask()).toBe(false);
      open[0]!.destroy();
      await waitUntil(() => open[0]!.destroyed);
      await new Promise((r) => setTimeout(r, 50)); // the stub sees the close
      expect(await ask()).toBe(true);
    } finally {
      for (const c of open) c.destroy();
      await s1.close();
    }
  });
});

async function waitUntil(cond: () => boolean, ms = 5_000): Promise<void> {
  for (let t = 0; t < ms; t += 10) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('timed out waiting for a condition');
}

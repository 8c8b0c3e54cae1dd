// SharedAdmission (src/responder/shared-*.ts): the process-wide admission state shared by the main thread and
// session worker threads. First the same cases on the single-thread pieces (OutputBudget, ClientSessions) and
// on the shared ones, then real worker threads hammering each shared count at once: afterwards every count is
// exact, and no limit was passed at any instant.
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecryptScheduler } from '../../src/crypto/decrypt-scheduler.ts';
import { EvBusyError } from '../../src/crypto/errors.ts';
import type { Keyring } from '../../src/crypto/keyring.ts';
import { ClientSessions, createCounters, HandshakeAdmission, type ClientSessionsLike } from '../../src/responder/admission.ts';
import { DEFAULT_LIMITS, resolveLimits, type Limits } from '../../src/responder/limits.ts';
import { OutputBudget, type OutputBudgetLike } from '../../src/responder/output-budget.ts';
import { SharedAdmission, type SharedAdmissionInit } from '../../src/responder/shared-admission.ts';
import { MAX_FRAME_LEN } from '../../src/wire/frames.ts';
import { hammer, prng, type Task } from './fixtures/shared-admission-hammer.ts';

const limits = (over: Partial<Limits> = {}): Limits => resolveLimits({ maxSessions: 64, maxSessionsPerClient: 3, maxQueuedBytes: 1 << 20, maxQueuedHandshakes: 4, ...over });
const shared = (over: Partial<Limits> = {}, workers = 1, maxConcurrentDecrypts = 4): SharedAdmission => SharedAdmission.create({ limits: limits(over), workers, maxConcurrentDecrypts });
/** With the TLS ingress's limits (its per-client table is sized by them). */
const withTls = (over: Partial<Limits> = {}): SharedAdmission => SharedAdmission.create({ limits: limits(over), workers: 1, maxConcurrentDecrypts: 4, tls: { maxConnections: 64, maxPendingHandshakes: 8 } });

/** Resolves after `n` turns of the event loop. */
const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
};

describe.each([
  ['OutputBudget', (limit: number): OutputBudgetLike => new OutputBudget(limit)],
  ['SharedAdmission.budget', (limit: number): OutputBudgetLike => shared({ maxQueuedBytes: limit }).budget],
])('%s (one thread)', (_name, make) => {
  it('counts queued bytes, their peak, fits and over', () => {
    const b = make(200_000);
    expect(b.limit).toBe(200_000);
    expect([b.queuedBytes, b.peakQueuedBytes, b.over]).toEqual([0, 0, false]);
    b.adjust(150_000);
    expect(b.fits(50_000)).toBe(true);
    expect(b.fits(50_001)).toBe(false);
    expect(b.over).toBe(150_000 + MAX_FRAME_LEN > 200_000);
    b.adjust(-100_000);
    b.adjust(20_000);
    expect([b.queuedBytes, b.peakQueuedBytes, b.over]).toEqual([70_000, 150_000, false]);
    b.adjust(-70_000);
    expect(b.queuedBytes).toBe(0);
  });

  it('tryReserve adds only within the limit, in one step; the peak follows the settled bytes, not the estimate', () => {
    const b = make(100_000);
    expect(b.tryReserve(60_000)).toBe(true);
    expect(b.tryReserve(40_001)).toBe(false);
    expect([b.queuedBytes, b.peakQueuedBytes]).toEqual([60_000, 0]);
    b.adjust(-20_000); // settled: 40,000 really queued
    expect([b.queuedBytes, b.peakQueuedBytes]).toEqual([40_000, 40_000]);
    expect(b.tryReserve(60_000)).toBe(true);
    b.adjust(0); // settled at the estimate
    expect([b.queuedBytes, b.peakQueuedBytes]).toEqual([100_000, 100_000]);
    b.adjust(-100_000);
  });

  it('calls a waiter once, on a later tick, after bytes drain; never without a drain; not after cancelWait', async () => {
    const b = make(100_000);
    b.adjust(100_000);
    expect(b.fits(1)).toBe(false);
    const calls: string[] = [];
    const a = (): void => void calls.push('a');
    const c = (): void => void calls.push('c');
    b.waitForRoom(a);
    b.waitForRoom(c);
    await turns(5);
    expect(calls).toEqual([]); // nothing drained
    b.cancelWait(c);
    b.adjust(-10);
    expect(calls).toEqual([]); // not synchronously
    for (let i = 0; i < 50 && calls.length === 0; i++) await turns(1);
    expect(calls).toEqual(['a']);
    b.adjust(-10);
    await turns(5);
    expect(calls).toEqual(['a']); // once
    b.adjust(-(b.queuedBytes));
  });
});

describe.each([
  ['ClientSessions', (max: number): ClientSessionsLike => new ClientSessions(max)],
  ['SharedAdmission.clients', (max: number): ClientSessionsLike => shared({ maxSessionsPerClient: max }).clients],
  ['SharedAdmission.tlsClients', (max: number): ClientSessionsLike => withTls({ maxSessionsPerClient: max }).tlsClients],
])('%s (one thread)', (_name, make) => {
  it('holds at most max per address, independently per address, and frees on release', () => {
    const c = make(2);
    expect([c.claim('10.0.0.1'), c.claim('10.0.0.1'), c.claim('10.0.0.1')]).toEqual([true, true, false]);
    expect(c.claim('10.0.0.2')).toBe(true);
    expect(c.claim('2001:db8::1')).toBe(true);
    c.release('10.0.0.1');
    expect([c.claim('10.0.0.1'), c.claim('10.0.0.1')]).toEqual([true, false]);
    c.release('192.0.2.9'); // never claimed: nothing happens
    expect(c.claim('192.0.2.9')).toBe(true);
  });

  it('matches a plain model under random claims and releases on many addresses', () => {
    const c = make(3);
    const model = new Map<string, number>();
    const rand = prng(7);
    const addrs = Array.from({ length: 40 }, (_, i) => `198.51.100.${i}`);
    for (let i = 0; i < 20_000; i++) {
      const a = addrs[rand() % addrs.length]!;
      const n = model.get(a) ?? 0;
      if (rand() % 2 === 0) {
        expect(c.claim(a)).toBe(n < 3);
        if (n < 3) model.set(a, n + 1);
      } else {
        c.release(a);
        if (n > 0) model.set(a, n - 1);
      }
    }
    for (const [a, n] of model) {
      for (let k = 0; k < n; k++) c.release(a);
    }
    for (const a of addrs) expect([c.claim(a), c.claim(a), c.claim(a), c.claim(a)]).toEqual([true, true, true, false]);
  });
});

describe('SharedAdmission (one thread)', () => {
  it('keeps every address of a full table reachable through removals (probe runs shift back)', () => {
    // maxSessions 4: 8 slots, at most 4 addresses — collisions in 8 slots are the rule.
    const s = shared({ maxSessions: 4, maxSessionsPerClient: 1 });
    const c = s.clients;
    const rand = prng(11);
    const addrs = Array.from({ length: 12 }, (_, i) => `203.0.113.${i}`);
    const held = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      const a = addrs[rand() % addrs.length]!;
      if (held.has(a)) {
        expect(c.count(a)).toBe(1);
        c.release(a);
        held.delete(a);
      } else if (c.claim(a)) held.add(a);
      else expect(held.size).toBe(4); // refused only as a 5th address: one slot each
      expect(c.addresses).toBe(held.size);
    }
    for (const a of held) c.release(a);
    expect(c.addresses).toBe(0);
    for (const a of addrs) expect(c.count(a)).toBe(0);
  });

  it('budget: a drain between a failed fits() and waitForRoom() (another thread) still wakes the waiter', async () => {
    const s = shared({ maxQueuedBytes: 100_000 });
    s.budget.adjust(100_000);
    expect(s.budget.fits(10)).toBe(false);
    SharedAdmission.attach(s.init).budget.adjust(-50); // another thread's view of the same budget
    let called = false;
    s.budget.waitForRoom(() => void (called = true));
    for (let i = 0; i < 50 && !called; i++) await turns(1);
    expect(called).toBe(true);
    s.budget.adjust(-(s.budget.queuedBytes));
  });

  it('tryOpen stops at maxSessions; closed gives back; one closed too many throws', () => {
    const s = shared({ maxSessions: 3 });
    expect([s.sessions.tryOpen(), s.sessions.tryOpen(), s.sessions.tryOpen(), s.sessions.tryOpen()]).toEqual([true, true, true, false]);
    expect(s.sessions.count).toBe(3);
    s.sessions.closed();
    expect(s.sessions.tryOpen()).toBe(true);
    for (let i = 0; i < 3; i++) s.sessions.closed();
    expect(s.sessions.count).toBe(0);
    expect(() => s.sessions.closed()).toThrow(RangeError);
    expect(s.sessions.count).toBe(0);
  });

  it('two HandshakeAdmissions share maxQueuedHandshakes; each keeps its own per-turn budget and waiting count', async () => {
    const s = shared({ maxQueuedHandshakes: 2 });
    const lim = { maxConcurrentHandshakes: 1, maxQueuedHandshakes: 2 };
    const ca = createCounters(s.budget);
    const cb = createCounters(s.budget);
    const a = new HandshakeAdmission(lim, ca, s.handshakeQueue);
    const b = new HandshakeAdmission(lim, cb, s.handshakeQueue);
    const ran: string[] = [];
    const run = (n: string) => () => void ran.push(n);
    expect(a.request(run('a1'))).toBe('ran');
    expect(b.request(run('b1'))).toBe('ran'); // its own turn budget
    expect(a.request(run('a2'))).toBe('queued');
    const b2 = run('b2');
    expect(b.request(b2)).toBe('queued');
    expect(s.handshakeQueue.waiting).toBe(2);
    expect(a.request(run('a3'))).toBe('refused'); // a's own queue has room, the process's has not
    expect([ca.handshakesWaiting, cb.handshakesWaiting, ca.refusedHandshakes]).toEqual([1, 1, 1]);
    b.cancel(b2);
    expect(s.handshakeQueue.waiting).toBe(1);
    for (let i = 0; i < 20 && ran.length < 3; i++) await turns(1);
    expect(ran).toEqual(['a1', 'b1', 'a2']);
    expect([s.handshakeQueue.waiting, ca.handshakesWaiting, cb.handshakesWaiting]).toEqual([0, 0, 0]);
  });

  it('two DecryptSchedulers share max_concurrent_decrypts', async () => {
    const s = shared({}, 1, 2);
    const a = new DecryptScheduler({ slots: s.decryptSlots });
    const b = new DecryptScheduler({ slots: s.decryptSlots, maxConcurrent: 2 });
    expect(a.maxConcurrent).toBe(2);
    let release = false;
    function* held(): Generator<void, string, void> {
      while (!release) yield;
      return 'done';
    }
    const ja = a.run(held());
    const jb = b.run(held());
    expect(s.decryptSlots.active).toBe(2);
    await expect(a.run(held())).rejects.toBeInstanceOf(EvBusyError);
    await expect(b.run(held())).rejects.toBeInstanceOf(EvBusyError);
    release = true;
    expect(await Promise.all([ja, jb])).toEqual(['done', 'done']);
    expect(s.decryptSlots.active).toBe(0);
    function* failing(): Generator<void, string, void> {
      yield;
      throw new Error('boom');
    }
    await expect(a.run(failing())).rejects.toThrow('boom');
    expect(s.decryptSlots.active).toBe(0);
    expect(() => new DecryptScheduler({ slots: s.decryptSlots, maxConcurrent: 3 })).toThrow(RangeError);
  });

  it('a DecryptScheduler with a pool takes a shared slot per pooled body and gives it back however the pool answers', async () => {
    const s = shared({}, 1, 1);
    const keyring = {} as Keyring;
    let answer: ((v: { json: string; count: number }) => void) | undefined;
    const pool = {
      keyring,
      decryptJson: (text: string) => {
        if (text === 'throw') throw new Error('pool closed');
        return new Promise<{ json: string; count: number }>((resolve) => (answer = resolve));
      },
      isJsonText: () => Promise.resolve(true),
    };
    const a = new DecryptScheduler({ slots: s.decryptSlots, pool });
    const b = new DecryptScheduler({ slots: s.decryptSlots });
    const job = a.decryptJson('{}', keyring);
    expect(s.decryptSlots.active).toBe(1);
    await expect(b.run([].values())).rejects.toBeInstanceOf(EvBusyError);
    answer!({ json: '{}', count: 0 });
    expect(await job).toEqual({ json: '{}', count: 0 });
    expect(s.decryptSlots.active).toBe(0);
    await expect(a.decryptJson('throw', keyring)).rejects.toThrow('pool closed');
    expect([s.decryptSlots.active, a.active]).toEqual([0, 0]);
  });

  it('counts per thread region, sums them, and reads queued bytes from the budget', () => {
    const s = shared({}, 2);
    const main = s.counters(0);
    const w2 = s.counters(2);
    expect(s.counters(0)).toBe(main);
    main.writeStalls++;
    main.refused += 2;
    w2.writeStalls += 5;
    w2.handshakesWaiting = 3;
    s.budget.adjust(1234);
    expect([main.queuedBytes, w2.peakQueuedBytes]).toEqual([1234, 1234]);
    const t = s.totals();
    expect(t.refused).toBe(2);
    expect(t.counters).toEqual({ ...Object.fromEntries(Object.keys(t.counters).map((k) => [k, 0])), writeStalls: 6, handshakesWaiting: 3 });
    expect(() => s.counters(3)).toThrow(/counters\(3\)/);
  });

  it('the control nonce: 32 bytes, current() is stable, consume() returns it and replaces it', () => {
    const s = shared();
    const n = s.controlNonce.current();
    expect(n).toHaveLength(32);
    expect(n.some((x) => x !== 0)).toBe(true);
    expect(s.controlNonce.current()).toEqual(n);
    expect(s.controlNonce.consume()).toEqual(n);
    expect(s.controlNonce.current()).not.toEqual(n);
  });

  it('TLS ingress connections count per client apart from Noise sessions, with the same maximum, seen alike from every thread', () => {
    const s = withTls({ maxSessionsPerClient: 2 });
    const t = SharedAdmission.attach(s.init);
    expect([s.clients.claim('10.2.2.2'), s.clients.claim('10.2.2.2'), s.clients.claim('10.2.2.2')]).toEqual([true, true, false]);
    expect([s.tlsClients.claim('10.2.2.2'), t.tlsClients.claim('10.2.2.2'), t.tlsClients.claim('10.2.2.2')]).toEqual([true, true, false]);
    expect(t.tlsClients.count('10.2.2.2')).toBe(2);
    t.tlsClients.release('10.2.2.2');
    expect(s.tlsClients.claim('10.2.2.2')).toBe(true);
    expect(s.clients.count('10.2.2.2')).toBe(2);
    // Without the TLS ingress its table is the smallest there is, and attach() checks its size too.
    expect(shared().init.tlsClientSlots).toBe(8);
    expect(() => SharedAdmission.attach({ ...s.init, tlsClientSlots: 6 })).toThrow(expect.objectContaining({ code: 'RESPONDER_BAD_OPTIONS' }));
  });

  it('attach() sees the same state, and refuses an init that does not fit', () => {
    const s = shared();
    const t = SharedAdmission.attach(s.init);
    expect(t.controlNonce.current()).toEqual(s.controlNonce.current());
    s.clients.claim('10.1.1.1');
    expect(t.clients.count('10.1.1.1')).toBe(1);
    expect(() => SharedAdmission.attach({ ...s.init, threads: 5 })).toThrow(expect.objectContaining({ code: 'RESPONDER_BAD_OPTIONS' }));
    expect(() => SharedAdmission.attach({ ...s.init, buffer: new ArrayBuffer(8) as unknown as SharedArrayBuffer })).toThrow(expect.objectContaining({ code: 'RESPONDER_BAD_OPTIONS' }));
    expect(() => SharedAdmission.create({ limits: DEFAULT_LIMITS, workers: -1, maxConcurrentDecrypts: 4 })).toThrow(expect.objectContaining({ code: 'RESPONDER_BAD_OPTIONS' }));
  });
});

// ---------------------------------------------------------------------------------------------------------
// Real worker threads

const WORKERS = 3;
const MAX_PER_CLIENT = 3;
const MAX_SESSIONS = 5;
const MAX_DECRYPTS = 4;

type Reply = { index: number; error?: string } & Record<string, unknown>;

function spawn(workerData: { init: SharedAdmissionInit; index: number; probe: Int32Array; gate: Int32Array }): Worker {
  const here = import.meta.url;
  const api = path.join(path.dirname(createRequire(here).resolve('tsx/esm/api')), 'index.mjs');
  const entry = new URL('./fixtures/shared-admission-worker.ts', here).href;
  const boot = `import(${JSON.stringify(pathToFileURL(api).href)}).then((t) => { t.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

describe('SharedAdmission across real worker threads', () => {
  const s = SharedAdmission.create({ limits: limits({ maxSessions: MAX_SESSIONS, maxSessionsPerClient: MAX_PER_CLIENT, maxQueuedBytes: 1 << 20 }), workers: WORKERS, maxConcurrentDecrypts: MAX_DECRYPTS });
  const probe = new Int32Array(new SharedArrayBuffer(64 * 4));
  const gate = new Int32Array(new SharedArrayBuffer(8));
  const workers: Worker[] = [];
  const inbox: Reply[][] = [];
  const waiting: ((r: Reply) => void)[][] = [];

  /** The next message from worker `i`. */
  const next = (i: number): Promise<Reply> => {
    const queued = inbox[i]!.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => waiting[i]!.push(resolve));
  };
  const ask = async (i: number, task: Task): Promise<Reply> => {
    workers[i]!.postMessage(task);
    const r = await next(i);
    if (r.error !== undefined) throw new Error(`worker ${i + 1}: ${r.error}`);
    return r;
  };

  /** Every worker runs `task(i)` and the main thread runs `mine` at the same instant (after the gate opens). */
  async function together<T>(task: (i: number) => Task, mine: () => T): Promise<{ mine: T; theirs: Reply[] }> {
    Atomics.store(gate, 0, 0);
    Atomics.store(gate, 1, 0);
    const theirs = workers.map((_, i) => ask(i, task(i)));
    while (Atomics.load(gate, 0) < WORKERS) await new Promise((r) => setTimeout(r, 1));
    Atomics.store(gate, 1, 1);
    const m = mine();
    return { mine: m, theirs: await Promise.all(theirs) };
  }

  beforeAll(async () => {
    for (let i = 0; i < WORKERS; i++) {
      const w = spawn({ init: s.init, index: i + 1, probe, gate });
      inbox.push([]);
      waiting.push([]);
      w.on('message', (m: Reply) => {
        const wake = waiting[i]!.shift();
        if (wake !== undefined) wake(m);
        else inbox[i]!.push(m);
      });
      w.on('error', (err) => {
        const wake = waiting[i]!.shift();
        wake?.({ index: i + 1, error: String(err) });
      });
      workers.push(w);
    }
    await Promise.all(workers.map((_, i) => next(i)));
  });

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.terminate()));
  });

  it('4 threads × 10,000 claims on 8 addresses: never more than 3 per address at any instant, all back to 0', async () => {
    const addresses = Array.from({ length: 8 }, (_, i) => `192.0.2.${i + 1}`);
    probe.fill(0);
    const ops = 10_000;
    const { mine, theirs } = await together(
      (i) => ({ task: 'clients', ops, addresses, hold: 4, seed: 100 + i }),
      () => hammer(probe, ops, 4, 99, addresses.length, MAX_PER_CLIENT, (k) => s.clients.claim(addresses[k]!), (k) => s.clients.release(addresses[k]!)),
    );
    const all = [mine, ...theirs] as unknown as { held: number; refused: number; maxSeen: number; violations: number }[];
    expect(all.map((r) => r.violations)).toEqual([0, 0, 0, 0]);
    expect(Math.max(...all.map((r) => r.maxSeen))).toBe(MAX_PER_CLIENT); // the limit was reached, never passed
    expect(all.reduce((n, r) => n + r.held + r.refused, 0)).toBe(4 * ops);
    expect(s.clients.addresses).toBe(0);
    for (const a of addresses) expect(s.clients.count(a)).toBe(0);
    expect([...probe.subarray(0, 8)]).toEqual(new Array(8).fill(0));
  });

  it('sessions and decrypt slots: never past their maximum from 4 threads, back to 0', async () => {
    for (const [task, max, take, give, count] of [
      ['sessions', MAX_SESSIONS, () => s.sessions.tryOpen(), () => s.sessions.closed(), () => s.sessions.count],
      ['decrypts', MAX_DECRYPTS, () => s.decryptSlots.tryAcquire(), () => s.decryptSlots.release(), () => s.decryptSlots.active],
    ] as const) {
      // The limit must be reached for the run to prove anything, which needs the threads to overlap; on a loaded
      // machine one round may run them one after another, so up to 10 rounds (each checked in full) until it is.
      let reached = 0;
      for (let round = 0; round < 10 && reached < max; round++) {
        probe.fill(0);
        const { mine, theirs } = await together(
          (i) => ({ task, ops: 10_000, hold: 3, seed: 200 + 10 * round + i }),
          () => hammer(probe, 10_000, 3, 199 + 10 * round, 1, max, take, give),
        );
        const all = [mine, ...theirs] as unknown as { maxSeen: number; violations: number }[];
        expect(all.map((r) => r.violations)).toEqual([0, 0, 0, 0]);
        reached = Math.max(reached, ...all.map((r) => r.maxSeen));
        expect(count()).toBe(0);
        expect(probe[0]).toBe(0);
      }
      expect(reached).toBe(max);
    }
  });

  it('budget adjustments from 4 threads add up exactly', async () => {
    const before = s.budget.peakQueuedBytes;
    const { theirs } = await together(
      (i) => ({ task: 'budget', ops: 20_000, seed: 300 + i }),
      () => {
        const rand = prng(299);
        for (let i = 0; i < 20_000; i++) {
          const n = 1 + (rand() % 70_000);
          s.budget.adjust(n);
          s.budget.adjust(-n);
        }
      },
    );
    expect(theirs.every((r) => r.ok === true)).toBe(true);
    expect(s.budget.queuedBytes).toBe(0);
    expect(s.budget.peakQueuedBytes).toBeGreaterThan(before);
  });

  it('budget reservations from 4 threads never pass the limit at any instant (tryReserve is one step)', async () => {
    probe.fill(0);
    const bytes = 200_000; // a 1 MiB budget holds 5 of them: each thread alone, holding up to 6, reaches the limit
    const max = Math.floor(s.budget.limit / bytes);
    const { mine, theirs } = await together(
      (i) => ({ task: 'reserve', ops: 10_000, hold: 6, seed: 400 + i, bytes }),
      () => hammer(probe, 10_000, 6, 399, 1, max, () => s.budget.tryReserve(bytes), () => s.budget.adjust(-bytes)),
    );
    const all = [mine, ...theirs] as unknown as { refused: number; violations: number }[];
    expect(all.map((r) => r.violations)).toEqual([0, 0, 0, 0]);
    expect(all.reduce((n, r) => n + r.refused, 0)).toBeGreaterThan(0); // the limit was reached
    expect(s.budget.queuedBytes).toBe(0);
  });

  it('a waiter in one thread is woken by a drain in another (main ← worker, worker ← main)', async () => {
    const limit = s.budget.limit;
    // The main thread waits; worker 1 drains.
    await ask(0, { task: 'fill', bytes: limit });
    expect(s.budget.fits(1)).toBe(false);
    const woken = new Promise<string>((resolve) => s.budget.waitForRoom(() => resolve('main woken')));
    await turns(5);
    await ask(0, { task: 'drain', bytes: 100 });
    expect(await woken).toBe('main woken');
    // Worker 2 waits; the main thread drains.
    workers[1]!.postMessage({ task: 'wait-for-room', bytes: 200 } satisfies Task);
    expect((await next(1)).waiting).toBe(true);
    s.budget.adjust(-(limit - 100));
    expect((await next(1)).woken).toBe(true);
    expect(s.budget.queuedBytes).toBe(0);
  });

  it('the control nonce a worker reads equals the main thread’s after consume(), and is never torn', async () => {
    for (let k = 0; k < 3; k++) {
      s.controlNonce.consume();
      expect((await ask(k % WORKERS, { task: 'nonce-read' })).nonce).toBe(Buffer.from(s.controlNonce.current()).toString('hex'));
    }
    // Workers read as fast as they can while the main thread replaces the nonce; every value read must be
    // one the main thread wrote whole.
    const written = new Set<string>([Buffer.from(s.controlNonce.current()).toString('hex')]);
    const { theirs } = await together(
      () => ({ task: 'nonce-hammer', reads: 100_000 }),
      () => {
        for (let i = 0; i < 20_000; i++) {
          s.controlNonce.consume();
          written.add(Buffer.from(s.controlNonce.current()).toString('hex'));
        }
      },
    );
    const seen = theirs.flatMap((r) => r.seen as string[]);
    expect(seen.length).toBeGreaterThan(WORKERS); // they did read while it changed
    expect(seen.filter((n) => !written.has(n))).toEqual([]);
  });

  it('each thread counts in its own region; totals() sums them', async () => {
    const before = s.totals();
    await Promise.all(workers.map((_, i) => ask(i, { task: 'counters', n: 1000 * (i + 1) })));
    s.counters(0).writeStalls++;
    const t = s.totals();
    expect(t.counters.writeStalls - before.counters.writeStalls).toBe(1000 + 2000 + 3000 + 1);
    expect(t.refused - before.refused).toBe(6000);
    expect(t.counters.handshakesWaiting).toBe(1 + 2 + 3);
  });
});

// The activity page's login sessions expire: after an idle spell with no API call (default 30 min), and at an
// absolute lifetime from login however used (default 12 h). An expired cookie is refused as an unknown one is
// (401), and a live tail opened with it is ended. Before, a session lived as long as the process: a cookie
// copied once opened the page for months. The clock is injected: no test waits for time to pass.
import { afterEach, describe, expect, it } from 'vitest';
import { createLiveTail } from '../../src/host/activity-live.ts';
import { startActivityServer, type ActivityServerOptions } from '../../src/host/activity-server.ts';
import { DEFAULT_SESSION_IDLE_MS, DEFAULT_SESSION_LIFETIME_MS, PageSessions } from '../../src/host/activity-sessions.ts';
import { activityFixture } from './activity-fixture.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const TOKEN = 'correct-horse-battery-staple';
const MINUTE = 60_000;

/** A page with a token on loopback whose sessions read `clock.now`. */
async function page(clock: { now: number }, extra: Partial<ActivityServerOptions> = {}) {
  const { store, reader } = await activityFixture('ea-activity-expiry-', cleanup);
  const srv = await startActivityServer({
    host: '127.0.0.1', port: 0, token: TOKEN, store, reader, live: createLiveTail(), now: () => clock.now,
    enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }),
    ...extra,
  });
  cleanup.push(() => srv.close());
  const login = async (): Promise<string> => {
    const r = await fetch(`${srv.url}api/login`, { method: 'POST', body: JSON.stringify({ token: TOKEN }), headers: { 'content-type': 'application/json' } });
    expect(r.status).toBe(200);
    return r.headers.get('set-cookie')!.split(';')[0]!;
  };
  const status = async (cookie: string): Promise<number> => (await fetch(`${srv.url}api/status`, { headers: { cookie } })).status;
  return { srv, login, status };
}

describe('activity page sessions', () => {
  it('end after the idle lifetime with no call; each call starts the idle time over', async () => {
    const clock = { now: 1_000_000 };
    const { login, status } = await page(clock);
    const cookie = await login();
    // Used every 29 minutes for two hours: never idle for 30.
    for (let i = 0; i < 4; i++) {
      clock.now += 29 * MINUTE;
      expect(await status(cookie)).toBe(200);
    }
    clock.now += 30 * MINUTE;
    expect(await status(cookie)).toBe(401);
    // Refused for good, as an unknown session is: going back in time does not revive it.
    clock.now -= 30 * MINUTE;
    expect(await status(cookie)).toBe(401);
    expect(await status(await login())).toBe(200);
  });

  it('end at the absolute lifetime however often they are used', async () => {
    const clock = { now: 5_000_000 };
    const { login, status } = await page(clock);
    const cookie = await login();
    const until = clock.now + DEFAULT_SESSION_LIFETIME_MS;
    while (clock.now + 20 * MINUTE < until) {
      clock.now += 20 * MINUTE;
      expect(await status(cookie)).toBe(200);
    }
    clock.now = until;
    expect(await status(cookie)).toBe(401);
  });

  it('end a live tail opened with a session once it expires (noticed on the next request to the page)', async () => {
    const clock = { now: 9_000_000 };
    const { srv, login, status } = await page(clock, { sessionIdleMs: 5 * MINUTE, sessionLifetimeMs: 60 * MINUTE });
    const cookie = await login();
    const other = await login();
    const tail = await fetch(`${srv.url}api/live`, { headers: { cookie } });
    expect(tail.status).toBe(200);
    const events = tail.body!.getReader();
    expect(new TextDecoder().decode((await events.read()).value)).toContain('retry:');
    // The other session is used; the live tail's is not (an open tail is no call): past its idle lifetime.
    clock.now += 4 * MINUTE;
    expect(await status(other)).toBe(200);
    clock.now += 2 * MINUTE;
    expect(await status(other)).toBe(200);
    // The tail's stream ends (the page's EventSource reconnects and is refused 401).
    for (;;) if ((await events.read()).done) break;
    const liveClients = async (): Promise<number> => ((await (await fetch(`${srv.url}api/status`, { headers: { cookie: other } })).json()) as { live: { clients: number } }).live.clients;
    await expect.poll(liveClients).toBe(0);
    expect((await fetch(`${srv.url}api/live`, { headers: { cookie } })).status).toBe(401);
  }, 15_000);

  it('refuses lifetimes that are not positive integers with a typed error', async () => {
    const clock = { now: 0 };
    await expect(page(clock, { sessionIdleMs: 0 })).rejects.toMatchObject({ code: 'ACTIVITY_SERVER_BAD_OPTIONS' });
    await expect(page(clock, { sessionLifetimeMs: 1.5 })).rejects.toMatchObject({ code: 'ACTIVITY_SERVER_BAD_OPTIONS' });
  });
});

describe('PageSessions', () => {
  it('defaults to 30 minutes idle and 12 hours in all', () => {
    const s = new PageSessions();
    expect([s.idleMs, s.lifetimeMs]).toEqual([30 * MINUTE, 12 * 60 * MINUTE]);
    expect([DEFAULT_SESSION_IDLE_MS, DEFAULT_SESSION_LIFETIME_MS]).toEqual([30 * MINUTE, 12 * 60 * MINUTE]);
  });

  it('at its bound forgets the expired first, then the oldest', () => {
    let now = 0;
    const s = new PageSessions({ idleMs: 10, lifetimeMs: 100, max: 3, now: () => now });
    const a = s.create();
    now = 5;
    const b = s.create();
    const c = s.create();
    now = 12; // a idled out; b and c were made at 5
    expect(s.use(b)).toBe(true);
    const d = s.create(); // the expired a goes, not b
    expect([s.alive(a), s.alive(b), s.alive(c), s.alive(d)]).toEqual([false, true, true, true]);
    const e = s.create(); // none expired: the oldest (b) goes
    expect([s.alive(b), s.alive(c), s.alive(d), s.alive(e)]).toEqual([false, true, true, true]);
    expect(s.size).toBe(3);
  });
});

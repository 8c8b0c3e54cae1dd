// --ui-token-file is followed: the page's server looks at the file again (one stat) on every sign-in and API call,
// so a rotated token works at once, the old one no longer signs in, and every session signed in before ends (its
// cookie refused 401, its live tail ended). A file that no longer holds a valid token lets nobody in (503
// TOKEN_UNAVAILABLE at sign-in, logged without its content) until it does again. Before, the file was read once
// at start: rotating the token needed a restart, and the old token and its sessions kept working until then.
import { chmod, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createLiveTail } from '../../src/host/activity-live.ts';
import { startActivityServer } from '../../src/host/activity-server.ts';
import { readTokenFile } from '../../src/host/activity-token.ts';
import { activityFixture } from './activity-fixture.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const OLD = 'the-first-token-of-this-page';
const NEW = 'the-rotated-token-0123456789abcdef';

async function page(sessionSweepMs?: number) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-activity-rotate-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'ui-token');
  await writeFile(file, `${OLD}\n`, { mode: 0o600 });
  const { store, reader, lines, out } = await activityFixture('ea-activity-rotate-', cleanup);
  const srv = await startActivityServer({
    host: '127.0.0.1', port: 0, tokenFile: file, store, reader, live: createLiveTail(), logger: pino({ level: 'info' }, out),
    ...(sessionSweepMs === undefined ? {} : { sessionSweepMs }),
    enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }),
  });
  cleanup.push(() => srv.close());
  const login = async (token: string): Promise<{ status: number; cookie: string }> => {
    const r = await fetch(`${srv.url}api/login`, { method: 'POST', body: JSON.stringify({ token }), headers: { 'content-type': 'application/json' } });
    return { status: r.status, cookie: (r.headers.get('set-cookie') ?? '').split(';')[0]! };
  };
  const status = async (cookie: string): Promise<number> => (await fetch(`${srv.url}api/status`, { headers: { cookie } })).status;
  /** Replaces the file as an operator should: a new file renamed over it. */
  const rotate = async (text: string): Promise<void> => {
    await writeFile(`${file}.new`, text, { mode: 0o600 });
    await rename(`${file}.new`, file);
  };
  return { srv, file, lines, login, status, rotate };
}

describe('activity page: a token file that changes', () => {
  it('is re-read: the new token signs in, the old one no longer does, and sessions signed in before end, live tails included', async () => {
    const { srv, lines, login, status, rotate } = await page();
    const before = await login(OLD);
    expect(before.status).toBe(200);
    expect(await status(before.cookie)).toBe(200);
    const tail = await fetch(`${srv.url}api/live`, { headers: { cookie: before.cookie } });
    expect(tail.status).toBe(200);
    const events = tail.body!.getReader();
    expect(new TextDecoder().decode((await events.read()).value)).toContain('retry:');

    await rotate(`${NEW}\n`);
    expect(await status(before.cookie)).toBe(401);
    // The tail opened with the old session is ended.
    for (;;) if ((await events.read()).done) break;
    expect((await login(OLD)).status).toBe(401);
    const after = await login(NEW);
    expect(after.status).toBe(200);
    expect(await status(after.cookie)).toBe(200);
    // Unchanged since: the new session lasts.
    expect(await status(after.cookie)).toBe(200);
    expect(lines.filter((l) => l.msg === 'activity page: the token file changed; every session ends')).toHaveLength(1);
  }, 15_000);

  // A live tail makes no further request: before, only a sign-in or an API call looked at the file, so a client
  // holding the old token's tail (the one the rotation meant to shut out) kept receiving records until someone
  // else called the API or its session idled out (30 minutes). The periodic sweep looks at the file too.
  it('ends a live tail signed in before even when no request follows the rotation', async () => {
    const { srv, login, rotate } = await page(50);
    const before = await login(OLD);
    const tail = await fetch(`${srv.url}api/live`, { headers: { cookie: before.cookie } });
    expect(tail.status).toBe(200);
    const events = tail.body!.getReader();
    await rotate(`${NEW}\n`);
    const ended = (async (): Promise<string> => {
      for (;;) if ((await events.read()).done) return 'ended';
    })();
    const bound = new Promise<string>((resolve) => setTimeout(() => resolve('still open 5 s after the rotation'), 5_000).unref());
    expect(await Promise.race([ended, bound])).toBe('ended');
    await events.cancel().catch(() => {});
  }, 15_000);

  it('rewritten in place (same inode) is noticed as well', async () => {
    const { file, login, status } = await page();
    const s = await login(OLD);
    await writeFile(file, `${NEW}-longer\n`);
    await chmod(file, 0o600);
    expect(await status(s.cookie)).toBe(401);
    expect((await login(`${NEW}-longer`)).status).toBe(200);
  });

  it('lets nobody in while it holds no valid token (503, logged without its content), and recovers when it does', async () => {
    const { file, lines, login, status, rotate } = await page();
    const s = await login(OLD);
    await rotate('short\n');
    expect(await status(s.cookie)).toBe(401);
    for (const token of [OLD, 'short']) expect((await login(token)).status).toBe(503);
    await rm(file);
    expect((await login(OLD)).status).toBe(503);
    await rotate(`${NEW}\n`);
    expect((await login(NEW)).status).toBe(200);
    const warned = lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('holds no valid token'));
    expect(warned.map((l) => l.err)).toEqual(['ACTIVITY_TOKEN_FILE_INVALID', 'ACTIVITY_TOKEN_FILE_UNREADABLE']);
    expect(JSON.stringify(lines)).not.toContain(NEW);
    expect(JSON.stringify(lines)).not.toContain(OLD);
  });

  it('must hold a valid token at start: the server does not start (typed error)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-activity-rotate-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(path.join(dir, 't'), 'short\n');
    expect(() => readTokenFile(path.join(dir, 't'))).toThrow(expect.objectContaining({ code: 'ACTIVITY_TOKEN_FILE_INVALID' }));
    const { store, reader } = await activityFixture('ea-activity-rotate-', cleanup);
    await expect(
      startActivityServer({ host: '0.0.0.0', port: 0, tokenFile: path.join(dir, 'missing'), store, reader, live: createLiveTail(), enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }) }),
    ).rejects.toMatchObject({ code: 'ACTIVITY_TOKEN_FILE_UNREADABLE' });
  });
});

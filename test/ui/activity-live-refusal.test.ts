// A refused live tail, in Debian's chromium: EventSource cannot read an answer's status, so the page used to say
// "live: reconnecting" for ever (and, refused, EventSource does not even reconnect). Now it asks the same URL with
// fetch and says why: with this address's one live place held by another client, "too many live views from this
// address — retrying in N s", and once the place is free it opens; with the token rotated (the file followed),
// the session has ended and the sign-in form says so. Real server (startActivityService), real browser; bounded;
// the browser, the held connection and the service are closed in afterAll whatever happened.
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startActivityService, type ActivityService } from '../../src/host/activity-service.ts';

const CHROMIUM = '/usr/bin/chromium';
const TOKEN = 'the-page-token-before-rotation';
const ROTATED = 'the-page-token-after-rotation-0123';

let dir: string;
let tokenFile: string;
let service: ActivityService;
let browser: Browser | undefined;
let page: Page;
const held: http.IncomingMessage[] = [];
const errors: string[] = [];

/** Signs in from Node (its own session) and opens a live tail from 127.0.0.1, the browser's address too. */
async function holdLiveTail(): Promise<void> {
  const login = await fetch(`${service.url!}api/login`, { method: 'POST', body: JSON.stringify({ token: TOKEN }), headers: { 'content-type': 'application/json' } });
  const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
  const url = new URL(`${service.url!}api/live`);
  const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get({ host: url.hostname, port: url.port, path: url.pathname, headers: { cookie }, agent: false }, resolve).on('error', reject);
  });
  expect(res.statusCode).toBe(200);
  held.push(res);
}

const liveState = (): Promise<string> => page.textContent('#live-state').then((t) => t ?? '');

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (.ci/run installs it)`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-ui-refusal-'));
  tokenFile = path.join(dir, 'ui-token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  service = await startActivityService({ file: path.join(dir, 'activity.db'), ui: { host: '127.0.0.1', port: 0, tokenFile, maxLive: 8, maxLivePerAddress: 1 } });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'], timeout: 60_000 });
  page = await browser.newPage();
  page.setDefaultTimeout(20_000);
  page.on('pageerror', (e) => errors.push(e.message));
}, 120_000);

afterAll(async () => {
  for (const r of held) r.destroy();
  await browser?.close().catch(() => {});
  await service?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('the activity page when its live tail is refused', () => {
  it('says this address has too many live views and when it retries, then opens once a place is free', async () => {
    await holdLiveTail();
    await page.goto(service.url!);
    await page.fill('#token', TOKEN);
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => /too many live views from this address — retrying in \d+ s/.test(document.getElementById('live-state')?.textContent ?? ''));
    expect(await liveState()).toMatch(/^live: too many live views from this address — retrying in ([1-9]|10) s$/);
    // The probe was refused as well: nothing of the page's is left open, only Node's tail.
    const status = (await page.evaluate(async () => (await (await fetch('/api/status')).json()) as { live: { clients: number; refused: number } })).live;
    expect(status.clients).toBe(1);
    expect(status.refused).toBeGreaterThanOrEqual(2);

    held.shift()!.destroy();
    // Retry-After is 10 s: the page tries again then, and the place is free.
    await page.waitForFunction(() => document.getElementById('live-state')?.textContent === 'live', undefined, { timeout: 25_000 });
  }, 40_000);

  it('says the session expired and asks for the token again once the token file is rotated', async () => {
    writeFileSync(`${tokenFile}.new`, `${ROTATED}\n`, { mode: 0o600 });
    renameSync(`${tokenFile}.new`, tokenFile);
    await page.waitForSelector('#login-msg', { timeout: 20_000 });
    expect(await page.textContent('#login-msg')).toBe('Session expired (or the token changed) — sign in again.');
    await page.fill('#token', ROTATED);
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => document.getElementById('live-state')?.textContent === 'live');
    expect(errors).toEqual([]);
  }, 40_000);
});

// The activity page in a real browser: Debian's chromium (/usr/bin/chromium, installed by .ci/run) driven by
// playwright-core loads the dashboard of a running `enclave-agent start` (a real process, ports 0, its own
// app), while the test sends requests through the SDK: they appear live, one is found by its request id and
// opened, the app dies and the 5xx filter shows the failures, the live tail pauses and resumes, the Traffic
// charts are drawn (canvas pixels of the series colour), the Enclave view shows the stack's PCRs. Screenshots
// of each view go to test-artifacts/activity/. Bounded; the browser, the stack and the app are stopped in
// afterAll whatever happened.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Client } from '../../src/client/node.ts';
import { startActivityService } from '../../src/host/activity-service.ts';
import { startBin, type Running } from '../cli/spawn.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.resolve('test-artifacts/activity');

interface StartLine {
  bridgeUrl: string;
  rootPem: string;
  pcrs: { PCR0: string; PCR1: string; PCR2: string; PCR8: string };
  dashboardUrl: string;
}

let dir: string;
let app: http.Server | null = null;
let appPort: number;
let start: Running | undefined;
let info: StartLine;
let client: Client | undefined;
let context: BrowserContext | undefined;
let page: Page;

async function startApp(port = 0): Promise<void> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ ok: true, path: req.url }));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  app = server;
  appPort = (server.address() as AddressInfo).port;
}

async function stopApp(): Promise<void> {
  const s = app;
  app = null;
  if (s === null) return;
  s.closeAllConnections();
  await new Promise<void>((resolve) => s.close(() => resolve()));
}

/** One request through the SDK; its request id (x-request-id, the record's txid) and status. */
async function send(pathname: string, init: { method?: string; body?: string } = {}): Promise<{ txid: string; status: number }> {
  const res = await client!.fetch(pathname, { method: init.method ?? 'GET', ...(init.body === undefined ? {} : { body: init.body, headers: { 'content-type': 'application/json', authorization: 'Bearer not-for-the-page' } }) });
  await res.arrayBuffer();
  return { txid: res.headers.get('x-request-id') ?? '', status: res.status };
}

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: false });
}

const rowsTxids = (): Promise<string[]> => page.$$eval('#rows tr', (trs) => trs.map((tr) => tr.getAttribute('data-txid') ?? ''));

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (.ci/run installs it)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-ui-'));
  const config = path.join(dir, 'enclave.toml');
  writeFileSync(config, 'name = "payments-demo"\n\n[app]\nport = 8008\n');
  await startApp();
  start = startBin(['start', '--json', '--config', config, '--state-dir', path.join(dir, 'state'), '--bridge-port', '0', '--agent-port', '0', '--app-port', String(appPort), '--api-port', '0']);
  info = JSON.parse(await start.firstLine(60_000)) as StartLine;
  client = await connect(info.bridgeUrl, { pcrs: { PCR0: info.pcrs.PCR0, PCR1: info.pcrs.PCR1, PCR2: info.pcrs.PCR2 }, roots: [readFileSync(info.rootPem, 'utf8')] });
  context = await chromium.launchPersistentContext(path.join(dir, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1400, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    timeout: 60_000,
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(20_000);
}, 120_000);

afterAll(async () => {
  await context?.close().catch(() => {});
  await client?.close();
  if (start && start.child.exitCode === null && start.child.signalCode === null) {
    start.child.kill('SIGINT');
    const quit = await Promise.race([start.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))]);
    if (!quit) {
      start.child.kill('SIGKILL');
      await start.exited;
    }
  }
  await stopApp();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('the activity page in chromium', () => {
  const errors: string[] = [];
  let sent: { txid: string; status: number }[] = [];

  it('loads with no console error or CSP violation and shows requests sent through the SDK live', async () => {
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(info.dashboardUrl);
    await page.waitForFunction(() => document.getElementById('live-state')?.textContent === 'live');
    sent = [
      await send('/'),
      await send('/pay/1234?card=4242424242424242', { method: 'POST', body: '{"amount":12}' }),
      await send('/users/42/profile'),
      await send('/pay/7', { method: 'POST', body: '{"amount":3}' }),
      await send('/health'),
    ];
    expect(sent.every((s) => s.status === 200 && /^[0-9a-f-]{16,}$/.test(s.txid))).toBe(true);
    // No reload: the rows arrive over the live tail (SSE), newest first.
    await page.waitForFunction((n) => document.querySelectorAll('#rows tr').length >= n, sent.length);
    expect((await rowsTxids()).slice(0, sent.length)).toEqual(sent.map((s) => s.txid).reverse());
    // The query value is masked by the agent; the page shows what the record holds.
    expect(await page.textContent(`#rows tr[data-txid="${sent[1]!.txid}"] td.path`)).toBe('/pay/1234?card=***');
    await shot('activity');
    expect(errors).toEqual([]);
  });

  it('finds one request by its id and opens its detail with the masked headers', async () => {
    const target = sent[1]!;
    await page.fill('#q-txid', target.txid);
    await page.click('#q-search');
    await page.waitForFunction((t) => {
      const rows = document.querySelectorAll('#rows tr');
      return rows.length === 1 && rows[0]!.getAttribute('data-txid') === t;
    }, target.txid);
    await page.click(`#rows tr[data-txid="${target.txid}"]`);
    await page.waitForSelector('#detail:not(.hidden) table.headers');
    const detail = (await page.textContent('#detail')) ?? '';
    expect(detail).toContain(target.txid);
    expect(detail).toContain('authorization***');
    expect(detail).not.toContain('not-for-the-page');
    await shot('detail');
    await page.click('#detail .close');
    await page.fill('#q-txid', '');
    await page.click('#q-search');
  });

  it('filters to 5xx after the app fails', async () => {
    await stopApp();
    try {
      const failed = [await send('/pay/9', { method: 'POST', body: '{"amount":1}' }), await send('/users/1')];
      expect(failed.map((f) => f.status)).toEqual([502, 502]);
      await page.selectOption('#q-status', '5xx');
      // The filtered listing replaces the table: wait for it (the old rows are there until it answers).
      await page
        .waitForFunction(() => {
          const statuses = Array.from(document.querySelectorAll('#rows tr td.status'), (td) => td.textContent);
          return statuses.length >= 2 && statuses.every((s) => s === '502');
        })
        .catch(async (err: unknown) => {
          const seen = await page.evaluate(() => ({ status: (document.getElementById('q-status') as HTMLSelectElement).value, rows: Array.from(document.querySelectorAll('#rows tr'), (tr) => tr.textContent), banner: document.getElementById('banner')?.textContent }));
          throw new Error(`5xx filter not applied: ${JSON.stringify(seen)}`, { cause: err });
        });
      const txids = await rowsTxids();
      expect(txids).toEqual(failed.map((f) => f.txid).reverse());
      await shot('activity-5xx');
    } finally {
      await startApp(appPort);
    }
    await page.selectOption('#q-status', '');
    await page.waitForFunction(() => Array.from(document.querySelectorAll('#rows tr td.status'), (td) => td.textContent).includes('200'));
  });

  it('pauses the live tail: a request made while paused shows only after resuming', async () => {
    await page.waitForFunction(() => !document.getElementById('empty')!.classList.contains('hidden') || document.querySelectorAll('#rows tr').length > 0);
    await page.click('#live-toggle');
    await page.waitForFunction(() => document.getElementById('live-state')?.textContent === 'live: paused');
    const late = await send('/while-paused');
    expect(late.status).toBe(200);
    // Stored (the API has it) yet not on the paused page.
    await expect.poll(async () => ((await (await fetch(`${info.dashboardUrl}api/records?txid=${late.txid}`)).json()) as { records: unknown[] }).records.length, { timeout: 10_000 }).toBe(1);
    expect(await rowsTxids()).not.toContain(late.txid);
    await page.click('#live-toggle');
    await page.waitForFunction((t) => document.querySelector(`#rows tr[data-txid="${t}"]`) !== null, late.txid);
  });

  it('draws the traffic charts from the SQL aggregates and shows the agent health', async () => {
    await page.click('#tab-traffic');
    await page.waitForSelector('#chart-rps canvas');
    await page.waitForSelector('#chart-latency canvas');
    await page.waitForSelector('#chart-errors canvas');
    await page.waitForFunction(() => document.getElementById('ops-state')?.textContent?.includes('reachable, /health → 200') === true);
    const points = await page.$$eval('.chart', (els) => els.map((e) => Number(e.getAttribute('data-points'))));
    expect(points.every((n) => n >= 1)).toBe(true);
    expect(Number((await page.textContent('#t-requests .v')) ?? '0')).toBeGreaterThanOrEqual(8);
    expect(await page.textContent('#t-errors .v')).not.toBe('0.00 %');
    // The series are drawn: pixels in each series' colour on its canvas (not just axes and grid).
    const coloured = await page.evaluate(() => {
      const count = (sel: string, rgb: [number, number, number]): number => {
        const c = document.querySelector<HTMLCanvasElement>(`${sel} canvas`)!;
        const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i]! - rgb[0]) < 12 && Math.abs(d[i + 1]! - rgb[1]) < 12 && Math.abs(d[i + 2]! - rgb[2]) < 12 && d[i + 3]! > 200) n++;
        return n;
      };
      return { rps: count('#chart-rps', [47, 111, 222]), p50: count('#chart-latency', [42, 157, 85]), errors: count('#chart-errors', [208, 64, 64]) };
    });
    expect(coloured.rps).toBeGreaterThan(4);
    expect(coloured.p50).toBeGreaterThan(4);
    expect(coloured.errors).toBeGreaterThan(4);
    await shot('traffic');
  });

  it('shows the enclave: name, mode, the PCRs the stack printed, and the store counters', async () => {
    await page.click('#tab-enclave');
    await page.waitForSelector('#e-pcrs');
    expect(await page.textContent('#e-name .v')).toBe('payments-demo');
    expect(await page.textContent('#e-mode .v')).toBe('http');
    const pcrs = await page.$$eval('#e-pcrs tr', (trs) => Object.fromEntries(trs.map((tr) => [tr.querySelector('th')!.textContent, tr.querySelector('td')!.textContent])));
    expect(pcrs).toEqual(info.pcrs);
    expect(await page.textContent('#s-dropped .v')).toBe('0');
    await shot('enclave');
    expect(errors).toEqual([]);
  });
});

describe('the activity page with a token, in chromium', () => {
  it('asks for the token, refuses a wrong one, and opens with the right one', async () => {
    const token = 'a-token-long-enough-for-the-rule';
    // The log sink's counters as `logs` hands them over (a stand-in: this page has no sink of its own).
    const sinkStats = (): object => ({ lines: 12, invalid: 1, oversized: 0, connections: 1, refused: 0, foreignPeers: 3, silent: 2 });
    const service = await startActivityService({ file: path.join(dir, 'token.db'), ui: { host: '127.0.0.1', port: 0, token }, sinkStats });
    try {
      const tab = await context!.newPage();
      await tab.goto(service.url!);
      await tab.waitForSelector('#login');
      expect(await tab.$('#view-activity')).toBeNull();
      await tab.fill('#token', 'not-the-token-at-all-no');
      await tab.click('#login button');
      await tab.waitForFunction(() => document.getElementById('login-msg')?.textContent === 'Wrong token.');
      await tab.fill('#token', token);
      await tab.click('#login button');
      await tab.waitForSelector('#view-activity');
      await tab.waitForFunction(() => document.getElementById('live-state')?.textContent === 'live');
      await tab.screenshot({ path: path.join(ARTIFACTS, 'token-login-done.png') });
      await tab.click('#tab-enclave');
      await tab.waitForSelector('#s-sink');
      expect(await tab.textContent('#s-sink .v')).toBe('12 lines, 1 not JSON, 0 too long, 1 connections, 0 refused, 3 from other enclaves, 0 HTTP requests (both closed unread), 2 silent (closed to make room)');
      // This tab's live tail is the one connection; none refused.
      expect(await tab.textContent('#s-live .v')).toBe('1 page(s), 0 batch(es) skipped for slow pages, 0 connection(s) refused (too many)');
      await tab.close();
    } finally {
      await service.close();
    }
  });
});

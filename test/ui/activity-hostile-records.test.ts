// The activity page shows what the enclave's clients chose: paths, user agents, header names and values,
// error texts, request ids, the agent's mode. Each is markup aimed at the page here (an <img onerror>, a
// closing tag and <script>, an attribute break-out), stored through the same takeRecord the log sink uses,
// and shown by Debian's chromium in the listing, the live tail, a record's detail and the Enclave view. The
// page must show them as text: no element of theirs in the DOM, no script of theirs run, no console error
// (a CSP violation is one).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startActivityService, type ActivityService } from '../../src/host/activity-service.ts';

const CHROMIUM = '/usr/bin/chromium';
const MARK = 'pwned';
const PAYLOADS = [
  `<img src=x onerror="window.${MARK}=1">`,
  `</td></tr><script>window.${MARK}=2</script>`,
  `"><svg onload="window.${MARK}=3">`,
  `javascript:window.${MARK}=4`,
];

let dir: string;
let service: ActivityService;
let browser: Browser | undefined;
let page: Page;
const errors: string[] = [];
let n = 0;

function record(payload: string): Record<string, unknown> {
  n++;
  return {
    kind: 'trx',
    ts: new Date().toISOString(),
    txid: `tx-${n}-${payload}`,
    method: 'GET',
    path: `/p/${payload}`,
    status: 500,
    elapsed_ms: 1.5,
    bytes_in: 0,
    bytes_out: 2,
    remote_ip: payload.slice(0, 60),
    decrypted_fields: 0,
    type: payload.slice(0, 16),
    session_id: payload,
    user_agent: payload,
    error: payload,
    request_headers: { [payload]: payload, 'x-list': [payload, payload] },
    response_headers: { 'content-type': payload },
  };
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (.ci/run installs it)`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-ui-hostile-'));
  service = await startActivityService({ file: path.join(dir, 'activity.db'), ui: { host: '127.0.0.1', port: 0 }, enclave: { name: PAYLOADS[0]! } });
  service.takeRecord({ msg: 'runtime started', mode: PAYLOADS[1]!, time: Date.now() });
  for (const p of PAYLOADS) service.takeRecord(record(p));
  service.store.flush();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'], timeout: 60_000 });
  page = await browser.newPage();
  page.setDefaultTimeout(20_000);
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
}, 120_000);

afterAll(async () => {
  await browser?.close().catch(() => {});
  await service?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

/** Elements a payload would have made, and the mark its script would have set. */
const injected = (): Promise<{ mark: unknown; elements: number }> =>
  page.evaluate((mark) => ({ mark: (window as unknown as Record<string, unknown>)[mark], elements: document.querySelectorAll('body img, body script, body svg[onload], [onerror], [onload]').length }), MARK);

describe('the activity page with records that carry markup', () => {
  it('lists them, live and stored, as text', async () => {
    await page.goto(service.url!);
    await page.waitForFunction(() => document.getElementById('live-state')?.textContent === 'live');
    await page.waitForFunction((k) => document.querySelectorAll('#rows tr').length === k, PAYLOADS.length);
    // Through the live tail too.
    for (const p of PAYLOADS) service.takeRecord(record(p));
    service.store.flush();
    await page.waitForFunction((k) => document.querySelectorAll('#rows tr').length === k, 2 * PAYLOADS.length);
    const text = (await page.textContent('#rows')) ?? '';
    for (const p of PAYLOADS) expect(text).toContain(`/p/${p}`);
    expect(await injected()).toEqual({ mark: undefined, elements: 0 });
  });

  it('opens each one\'s detail (user agent, session, error, header names and values) as text', async () => {
    for (let i = 0; i < PAYLOADS.length; i++) {
      const expected = PAYLOADS[PAYLOADS.length - 1 - i]!;
      await page.click(`#rows tr:nth-child(${i + 1})`);
      // The previous row's pane stays open until this one renders: wait for this record's, not any.
      await page
        .waitForFunction((p) => document.querySelector('#detail:not(.hidden) table.headers') !== null && (document.getElementById('detail')?.textContent ?? '').includes(`/p/${p}`), expected)
        .catch(() => {});
      const detail = (await page.textContent('#detail')) ?? '';
      expect(detail).toContain(`/p/${expected}`);
      expect(detail).toContain(expected);
    }
    expect(await injected()).toEqual({ mark: undefined, elements: 0 });
  });

  it('shows the enclave name and mode as text', async () => {
    await page.click('#tab-enclave');
    await page.waitForSelector('#e-mode');
    expect(await page.textContent('#e-name')).toContain(PAYLOADS[0]);
    expect(await page.textContent('#e-mode')).toContain(PAYLOADS[1]!.slice(0, 32));
    expect(await injected()).toEqual({ mark: undefined, elements: 0 });
    expect(errors).toEqual([]);
  });
});

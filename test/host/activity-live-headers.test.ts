// The live tail's answer (GET /api/live, text/event-stream) is written by the live tail itself, not by the
// page server's send(): it went out without the headers every other answer carries (nosniff, a same-origin
// Cross-Origin-Resource-Policy, the CSP, no framing), so another site's page could pull the stream of
// records into its own renderer with a no-cors load (<script src>, <img src>) — the process a Spectre-class
// read works in — where the listing's JSON is refused by CORP. Every answer carries them.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CONTENT_SECURITY_POLICY } from '../../src/host/activity-server.ts';
import { startActivityService } from '../../src/host/activity-service.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** The head of a GET's answer; the body (a stream that does not end, for the live tail) is not waited for. */
function head(url: string): Promise<http.IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      resolve(res.headers);
      res.destroy();
    });
    req.on('error', reject);
  });
}

describe('activity page: the live tail\'s answer', () => {
  it('carries the headers every other answer does', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-activity-live-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const s = await startActivityService({ file: path.join(dir, 'a.db'), ui: { host: '127.0.0.1', port: 0 } });
    cleanup.push(() => s.close());
    const listing = await head(`${s.url!}api/records`);
    const live = await head(`${s.url!}api/live`);
    expect(live['content-type']).toMatch(/^text\/event-stream/);
    expect(listing['content-security-policy']).toBe(CONTENT_SECURITY_POLICY);
    for (const name of ['content-security-policy', 'x-content-type-options', 'cross-origin-resource-policy', 'cross-origin-opener-policy', 'x-frame-options', 'referrer-policy', 'cache-control']) {
      expect(live[name], name).toBe(listing[name]);
    }
  });
});

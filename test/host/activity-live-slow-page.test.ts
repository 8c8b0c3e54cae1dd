// A page that stops reading the live tail must not make the page server queue whole batches for it. A batch of
// 2,000 records whose paths a client chose (2,000 control characters each, six bytes apiece once escaped) is
// ~25 MB of events: it was written whole to every page whose connection had room when it came (measured: 20
// such pages held 570 MB more). Now at most about one event past the buffer limit is queued, the rest of the
// batch counts as missed, and the page, once it reads again, is told with a `gap` (it reloads its listing).
import http, { type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLiveTail } from '../../src/host/activity-live.ts';
import type { ActivitySummary } from '../../src/host/activity-store.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const until = async (pred: () => boolean): Promise<void> => {
  while (!pred()) await new Promise((r) => setTimeout(r, 10));
};

function row(id: number, path: string): ActivitySummary {
  return { id, ts: 1_700_000_000_000 + id, txid: `tx-${id}`, method: 'GET', path, status: 200, elapsedMs: 1, bytesIn: 0, bytesOut: 0, remoteIp: null, decryptedFields: 0, error: null };
}

/** The rows of the `records` events complete so far, and how many came before the first `gap` event. */
function events(text: string): { ids: number[]; gapAt: number | null } {
  const ids: number[] = [];
  let gapAt: number | null = null;
  for (const block of text.split('\n\n').slice(0, -1)) {
    if (block.startsWith('event: gap\n')) gapAt ??= ids.length;
    const m = /^event: records\ndata: (.*)$/s.exec(block);
    if (m !== null) for (const r of JSON.parse(m[1]!) as ActivitySummary[]) ids.push(r.id);
  }
  return { ids, gapAt };
}

describe('activity page: the live tail and a page that stops reading', () => {
  it('queues about one event past its buffer limit, not the whole batch, and tells the page of the gap', async () => {
    const live = createLiveTail();
    cleanup.push(() => live.close());
    const held: { res?: ServerResponse } = {};
    const server = http.createServer((_req, r) => {
      held.res = r;
      live.attach(r);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    cleanup.push(() => server.closeAllConnections());

    let text = '';
    const page = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.get({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', path: '/api/live' }, resolve);
      req.on('error', reject);
    });
    cleanup.push(() => void page.destroy());
    page.setEncoding('utf8');
    page.on('data', (d: string) => (text += d));
    await until(() => live.clients === 1 && text.includes('retry:'));
    page.pause(); // stops reading
    const hostile = '/' + '\u0001'.repeat(2000);
    const batch = Array.from({ length: 2000 }, (_, i) => row(i + 1, hostile));
    const batchBytes = Buffer.byteLength(JSON.stringify(batch));
    expect(batchBytes).toBeGreaterThan(20 * 1024 * 1024);
    live.publish(batch);
    // What the server holds for the page (the socket's buffer; the kernel took at most a few MB more).
    expect(held.res!.writableLength).toBeLessThan(1024 * 1024);
    expect(live.missedBatches).toBe(1);

    page.resume();
    await until(() => held.res!.writableLength === 0);
    live.publish([row(5000, '/after')]);
    await until(() => events(text).ids.includes(5000));
    const { ids, gapAt } = events(text);
    // Whole rows in order from the start of the batch, then the gap, then the next batch.
    expect(ids.length).toBeGreaterThan(1);
    expect(ids.slice(0, -1)).toEqual(Array.from({ length: ids.length - 1 }, (_, i) => i + 1));
    expect(ids.length - 1).toBeLessThan(batch.length);
    expect(gapAt).toBe(ids.length - 1);
  });
});

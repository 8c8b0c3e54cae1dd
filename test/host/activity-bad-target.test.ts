// A request target `new URL` refuses (`//x:99999/`, `http://x:99999/`, `//[`) once crashed the host process
// behind the activity page (the parse ran outside the handler's try; the rejection was unhandled). Now: 400
// BAD_REQUEST, and the same connection goes on to the next request.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startActivityService, type ActivityService } from '../../src/host/activity-service.ts';
import { rawExchange } from '../util/raw-exchange.ts';

let dir: string;
let svc: ActivityService;
let port: number;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'ea-activity-target-'));
  svc = await startActivityService({ file: path.join(dir, 'a.db'), ui: { host: '127.0.0.1', port: 0 } });
  port = Number(new URL(svc.url!).port);
});
afterAll(async () => {
  await svc?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('activity page: request targets URL cannot parse', () => {
  it.each(['//x:99999/', 'http://x:99999/', '//['])('%s → 400 BAD_REQUEST, then the next request on the connection is served', async (target) => {
    const host = `127.0.0.1:${port}`;
    const out = await rawExchange(port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /api/status HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    const statuses = [...out.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    expect(statuses).toEqual([400, 200]);
    expect(out).toContain('BAD_REQUEST');
    expect(out).toContain('"store"');
  });
});

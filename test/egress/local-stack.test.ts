// `enclave-agent start --json` as a real process: it prints egressProxy, the proxy enforces [egress]
// destinations, and the demo app's GET /fetch?url= goes through it (allowed, then refused). Also the transaction
// log line of each decision on stderr (type "egress").
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBin, type Running } from '../cli/spawn.ts';
import { rawRequest, startHttpServer } from './helpers.ts';

let dir: string;
let start: Running;
let web: { port: number; close(): Promise<void> };
let info: { egressProxy: string; appPort: number };

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-egress-'));
  web = await startHttpServer('127.0.0.2');
  const configFile = path.join(dir, 'enclave.toml');
  writeFileSync(configFile, `name = "egress-local"\n\n[egress]\nenabled = true\ndestinations = ["127.0.0.2:${web.port}"]\n`);
  start = startBin(['start', '--json', '--config', configFile, '--state-dir', path.join(dir, 'state'), '--bridge-port', '0', '--agent-port', '0', '--app-port', '0', '--api-port', '0']);
  info = JSON.parse(await start.firstLine(60_000)) as typeof info;
}, 90_000);

afterAll(async () => {
  if (start && start.child.exitCode === null && start.child.signalCode === null) {
    start.child.kill('SIGTERM');
    await start.exited;
  }
  await web?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function demoFetch(url: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${info.appPort}/fetch?url=${encodeURIComponent(url)}`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('start: egress in the local stack', () => {
  it('prints egressProxy, an http://127.0.0.1 URL that is a working proxy', async () => {
    expect(info.egressProxy).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await rawRequest(Number(new URL(info.egressProxy).port), `GET http://127.0.0.2:${web.port}/direct HTTP/1.1\r\nhost: x\r\n\r\n`);
    expect(res.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
  });

  it('demo app GET /fetch reaches an allowed destination through egress', async () => {
    const r = await demoFetch(`http://127.0.0.2:${web.port}/hello?from=demo`);
    expect(r.status).toBe(200);
    expect(r.body.status).toBe(200);
    expect(JSON.parse(r.body.body as string)).toMatchObject({ url: '/hello?from=demo' });
  });

  it('demo app GET /fetch is refused for a destination off the list, and the decision is a trx record', async () => {
    const r = await demoFetch(`http://127.0.0.2:${web.port + 1}/`);
    expect(r.status).toBe(502);
    expect(String(r.body.error)).toMatch(/refused|403/);
    await expect.poll(() => start.stderr(), { timeout: 10_000 }).toMatch(/"type":"egress".*"allowed":false/);
    expect(start.stderr()).toMatch(/"type":"egress".*"allowed":true/);
  });
});

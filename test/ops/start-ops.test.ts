// `enclave-agent start --json` (the local stack, real process): metricsUrl and healthUrl are the bridge's ops
// port, re-serving the agent's /metrics (promtool-clean) and /health; SIGTERM stops everything.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBin, type Running } from '../cli/spawn.ts';

let dir: string;
let start: Running;
let info: { metricsUrl: string; healthUrl: string; bridgeUrl: string };

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-ops-start-'));
  const config = path.join(dir, 'enclave.toml');
  writeFileSync(config, 'name = "ops-test"\n[app]\nport = 8008\n');
  start = startBin(['start', '--json', '--config', config, '--state-dir', path.join(dir, 'state'), '--bridge-port', '0', '--agent-port', '0', '--app-port', '0', '--api-port', '0']);
  info = JSON.parse(await start.firstLine(60_000)) as typeof info;
}, 90_000);

afterAll(async () => {
  await start?.kill();
  rmSync(dir, { recursive: true, force: true });
});

describe('start --json: the ops port', () => {
  it('prints metricsUrl and healthUrl on the bridge, a free port with --bridge-port 0', () => {
    expect(info.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(info.healthUrl).toBe(info.metricsUrl.replace(/metrics$/, 'health'));
    expect(info.metricsUrl).not.toContain(':8444/');
  });

  it('healthUrl answers 200 for the demo app; metricsUrl passes promtool', async () => {
    const health = await fetch(info.healthUrl);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', app: { status: 'up' } });
    const text = await (await fetch(info.metricsUrl)).text();
    expect(text).toMatch(/^enclave_agent_build_info\{version="[^"]+",mode="http"\} 1$/m);
    const r = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(r.stdout + r.stderr).toBe('');
  });

  it('stops cleanly on SIGTERM', async () => {
    start.child.kill('SIGTERM');
    expect((await start.exited).code).toBe(0);
  }, 20_000);
});

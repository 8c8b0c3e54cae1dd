// `enclave-agent logs --ui`: the page's bounds are flags, not constants — connections in all
// (--ui-max-connections), live tails in all and per address (--ui-max-live, --ui-max-live-per-address), and the
// sessions' idle and absolute lifetimes (--ui-session-idle-minutes, --ui-session-max-hours). Each is validated (a
// usage error naming the flag), needs --ui, is in --help, and reaches the server.
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { command, parseLogsArgs, serveLogs } from '../../src/cli/logs.ts';
import { CliUsageError, type CliIo } from '../../src/cli/types.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const base = ['--listen', 'tcp:127.0.0.1:0', '--db', 'x.db', '--ui', '127.0.0.1:8090'];

describe('enclave-agent logs: the page\'s bounds', () => {
  it('are flags: each reaches the page\'s options, minutes and hours as milliseconds', () => {
    const o = parseLogsArgs([...base, '--ui-max-connections', '40', '--ui-max-live', '8', '--ui-max-live-per-address', '2', '--ui-session-idle-minutes', '5', '--ui-session-max-hours', '2'], { ENCLAVE_AGENT_UI_TOKEN: 'a-token-long-enough-for-the-rule' });
    expect(o.ui).toMatchObject({ maxConnections: 40, maxLive: 8, maxLivePerAddress: 2, sessionIdleMs: 5 * 60_000, sessionLifetimeMs: 2 * 3_600_000 });
    expect(o.warnings ?? []).toEqual([]);
    // Absent: the server's defaults (nothing set here).
    expect(parseLogsArgs(base, {}).ui).toEqual({ host: '127.0.0.1', port: 8090 });
  });

  it('refuses bad values, a per-address bound above the total, and the flags without --ui, as usage errors', () => {
    const cases: [string[], RegExp][] = [
      [[...base, '--ui-max-connections', '0'], /--ui-max-connections expects 1\.\.100000, found 0/],
      [[...base, '--ui-max-connections', 'many'], /--ui-max-connections expects an integer, found "many"/],
      [[...base, '--ui-max-live=-1'], /--ui-max-live expects an integer, found "-1"/],
      [[...base, '--ui-max-live-per-address', '1.5'], /--ui-max-live-per-address expects an integer/],
      [[...base, '--ui-max-live-per-address', '65'], /--ui-max-live-per-address 65 is more than the live tails in all \(--ui-max-live 64\)/],
      [[...base, '--ui-max-live', '4', '--ui-max-live-per-address', '5'], /more than the live tails in all \(--ui-max-live 4\)/],
      [[...base, '--ui-session-idle-minutes', '0'], /--ui-session-idle-minutes expects 1\.\.10080/],
      [[...base, '--ui-session-max-hours', '9000'], /--ui-session-max-hours expects 1\.\.8760, found 9000/],
      [['--listen', 'tcp:127.0.0.1:0', '--db', 'x.db', '--ui-max-live', '4'], /--ui-max-live needs --ui/],
      [['--listen', 'tcp:127.0.0.1:0', '--ui-session-max-hours', '4'], /--ui-session-max-hours needs --db/],
    ];
    for (const [a, message] of cases) {
      expect(() => parseLogsArgs(a, {}), a.join(' ')).toThrow(CliUsageError);
      expect(() => parseLogsArgs(a, {}), a.join(' ')).toThrow(message);
    }
  });

  it('warns that the session flags do nothing on a page without a token', () => {
    expect(parseLogsArgs([...base, '--ui-session-idle-minutes', '5'], {}).warnings).toEqual([expect.stringMatching(/apply only with a token/)]);
  });

  it('are in --help', () => {
    for (const f of ['--ui-max-connections N', '--ui-max-live N', '--ui-max-live-per-address N', '--ui-session-idle-minutes N', '--ui-session-max-hours N']) expect(command.help).toContain(f);
  });

  it('reach the running page: --ui-max-live 1 refuses a second live tail, --ui-max-connections 2 a third connection', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-logs-ui-bounds-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const errLines: string[] = [];
    const io: CliIo = { out: () => {}, err: (l) => errLines.push(l), stdin: () => Promise.resolve(new Uint8Array()) };
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const done = serveLogs(['--listen', 'tcp:127.0.0.1:0', '--db', path.join(dir, 'a.db'), '--ui', '127.0.0.1:0', '--ui-max-live', '1', '--ui-max-connections', '2'], io, () => stopped, {
      output: new Writable({ write: (_c, _e, cb) => cb() }),
      logger: pino({ enabled: false }),
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const held: http.IncomingMessage[] = [];
    try {
      await expect.poll(() => errLines.some((l) => l.includes('activity page on')), { timeout: 10_000 }).toBe(true);
      const page = new URL(/activity page on (\S+)/.exec(errLines.find((l) => l.includes('activity page on'))!)![1]!);
      const get = (p: string, a: http.Agent | false = false): Promise<{ status: number; body: string; res: http.IncomingMessage }> =>
        new Promise((resolve, reject) => {
          http
            .get({ host: page.hostname, port: page.port, path: p, agent: a }, (res) => {
              if (p === '/api/live' && res.statusCode === 200) return resolve({ status: 200, body: '', res });
              let body = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => (body += c));
              res.on('end', () => resolve({ status: res.statusCode!, body, res }));
            })
            .on('error', reject);
        });
      const first = await get('/api/live');
      expect(first.status).toBe(200);
      held.push(first.res);
      const second = await get('/api/live');
      expect(second.status).toBe(503);
      expect(second.body).toContain('LIVE_TAIL_FULL');
      // The live tail holds one connection, a keep-alive agent the other: the third is refused.
      expect((await get('/api/status', agent)).status).toBe(200);
      const third = await get('/api/status');
      expect(third.status).toBe(503);
      expect(third.body).toContain('ACTIVITY_TOO_MANY_CONNECTIONS');
    } finally {
      for (const r of held) r.destroy();
      agent.destroy();
      stop();
      expect(await done).toBe(0);
    }
  }, 20_000);
});

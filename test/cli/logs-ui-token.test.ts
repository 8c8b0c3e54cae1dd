// `enclave-agent logs --ui`: the page's token without putting it on the command line, where every user of the
// machine reads it (ps, /proc/PID/cmdline). --ui-token-file PATH reads it from a file (one line, its line end
// dropped); a file others can read, and --ui-token itself, are warned about once the logger is up. Before, only
// --ui-token and $ENCLAVE_AGENT_UI_TOKEN existed, and --ui-token said nothing.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseLogsArgs, serveLogs } from '../../src/cli/logs.ts';
import { CliUsageError, type CliIo } from '../../src/cli/types.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

const TOKEN = 'a-token-long-enough-for-the-rule';

async function tokenFile(text: string, mode = 0o600): Promise<{ dir: string; file: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-logs-token-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'ui-token');
  await writeFile(file, text);
  await chmod(file, mode);
  return { dir, file };
}

const args = (...extra: string[]): string[] => ['--listen', 'tcp:127.0.0.1:0', '--db', 'x.db', '--ui', '0.0.0.0:8090', ...extra];

describe('enclave-agent logs: the page token', () => {
  it('--ui-token-file is read (its line end dropped), passed on to be followed, and wins over the environment; a private file warns of nothing', async () => {
    const { file } = await tokenFile(`${TOKEN}\n`);
    const o = parseLogsArgs(args('--ui-token-file', file), { ENCLAVE_AGENT_UI_TOKEN: 'the-environment-token' });
    expect(o.ui).toEqual({ host: '0.0.0.0', port: 8090, tokenFile: file });
    expect(o.warnings ?? []).toEqual([]);
    const crlf = await tokenFile(`${TOKEN}\r\n`);
    expect(parseLogsArgs(args('--ui-token-file', crlf.file), {}).ui?.tokenFile).toBe(crlf.file);
  });

  it('warns when the file can be read by others, and about --ui-token (visible in ps); the environment warns of nothing', async () => {
    const { file } = await tokenFile(TOKEN, 0o644);
    expect(parseLogsArgs(args('--ui-token-file', file), {}).warnings).toEqual([expect.stringMatching(/can be read by users other than its owner: chmod 600/)]);
    const flag = parseLogsArgs(args('--ui-token', TOKEN), {});
    expect(flag.ui?.token).toBe(TOKEN);
    expect(flag.warnings).toEqual([expect.stringMatching(/--ui-token is on the command line.*\(ps, \/proc\/PID\/cmdline\).*ENCLAVE_AGENT_UI_TOKEN or --ui-token-file/)]);
    expect(parseLogsArgs(args(), { ENCLAVE_AGENT_UI_TOKEN: TOKEN }).warnings ?? []).toEqual([]);
  });

  it('refuses, as usage errors: both flags, a short token, a missing file, a file of two lines, the file without --ui', async () => {
    const { dir, file } = await tokenFile(TOKEN);
    const short = await tokenFile('short\n');
    const two = await tokenFile(`${TOKEN}\n${TOKEN}\n`);
    const cases: [string[], RegExp][] = [
      [args('--ui-token', TOKEN, '--ui-token-file', file), /either --ui-token or --ui-token-file/],
      [args('--ui-token-file', short.file), /at least 16 characters/],
      [args('--ui-token-file', path.join(dir, 'missing')), /cannot read .*missing \(ENOENT\)/],
      [args('--ui-token-file', two.file), /more than one line/],
      [['--listen', 'tcp:127.0.0.1:0', '--db', 'x.db', '--ui-token-file', file], /--ui-token-file needs --ui/],
      [['--listen', 'tcp:127.0.0.1:0', '--ui-token-file', file], /--ui-token-file needs --db/],
    ];
    for (const [a, message] of cases) {
      expect(() => parseLogsArgs(a, {}), a.join(' ')).toThrow(CliUsageError);
      expect(() => parseLogsArgs(a, {}), a.join(' ')).toThrow(message);
    }
  });

  it('serves the page with the file\'s token, and logs the --ui-token warning without the token', async () => {
    const { dir, file } = await tokenFile(`${TOKEN}\n`);
    for (const [flag, value] of [['--ui-token-file', file], ['--ui-token', TOKEN]] as const) {
      const errLines: string[] = [];
      const io: CliIo = { out: () => {}, err: (l) => errLines.push(l), stdin: () => Promise.resolve(new Uint8Array()) };
      const logged: Record<string, unknown>[] = [];
      const logStream = new Writable({
        write(chunk: Buffer, _enc, cb) {
          for (const l of chunk.toString().split('\n').filter(Boolean)) logged.push(JSON.parse(l) as Record<string, unknown>);
          cb();
        },
      });
      let stop!: () => void;
      const stopped = new Promise<void>((r) => (stop = r));
      const output = new Writable({ write: (_c, _e, cb) => cb() });
      const done = serveLogs(['--listen', 'tcp:127.0.0.1:0', '--db', path.join(dir, `${flag}.db`), '--ui', '127.0.0.1:0', flag, value], io, () => stopped, { output, logger: pino({ level: 'info' }, logStream) });
      try {
        await expect.poll(() => errLines.some((l) => l.includes('activity page on')), { timeout: 10_000 }).toBe(true);
        const page = /activity page on (\S+)/.exec(errLines.find((l) => l.includes('activity page on'))!)![1]!;
        expect((await fetch(`${page}api/status`)).status).toBe(401);
        const login = await fetch(`${page}api/login`, { method: 'POST', body: JSON.stringify({ token: TOKEN }), headers: { 'content-type': 'application/json' } });
        expect(login.status, flag).toBe(200);
      } finally {
        stop();
        expect(await done).toBe(0);
      }
      const warned = logged.filter((l) => l.level === 40 && typeof l.msg === 'string' && l.msg.includes('--ui-token is on the command line'));
      expect(warned, flag).toHaveLength(flag === '--ui-token' ? 1 : 0);
      expect(JSON.stringify(logged)).not.toContain(TOKEN);
      expect(errLines.join('\n')).not.toContain(TOKEN);
    }
  });
});

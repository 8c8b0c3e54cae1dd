// A <url> that `attest` or `proxy` refuses is described, never quoted: it may carry user:pass@ (as `fetch`,
// test/cli/fetch-stream.test.ts). And `proxy --host` refuses a non-loopback address unless --allow-remote is given,
// by the same rule the rest of the agent uses (src/host/listen.ts isLoopbackHost).
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/run.ts';
import { startBin } from './spawn.ts';

async function cli(argv: string[]): Promise<{ code: number; err: string }> {
  const err: string[] = [];
  const code = await runCli(argv, { out: () => {}, err: (l) => err.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
  return { code, err: err.join('\n') };
}

describe('URLs and hosts in CLI refusals', () => {
  it.each(['attest', 'proxy'])('%s: a refused <url> is described, not quoted', async (command) => {
    const r = await cli([command, 'ftp://alice:hunter2@example.com/']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/must be ws:\/\/.*found \d+ characters/);
    expect(r.err).not.toMatch(/hunter2|alice/);
  });

  it('proxy: --host off loopback is refused without --allow-remote, by isLoopbackHost ([::1], localhost are loopback; 0.0.0.0, "" are not)', async () => {
    const pins = ['--pcr0', 'aa'.repeat(48), '--pcr1', 'aa'.repeat(48), '--pcr2', 'aa'.repeat(48)];
    // A bad --port stops it after the --host check: nothing listens, nothing connects.
    const refused = async (host: string, ...more: string[]): Promise<boolean> => {
      const r = await cli(['proxy', 'ws://127.0.0.1:1/', '--host', host, '--port', 'x', ...pins, ...more]);
      expect(r.code).toBe(2);
      if (r.err.includes('--allow-remote')) {
        expect(r.err).toContain(`--host "${host}" is not loopback`);
        expect(r.err).not.toContain('--port'); // refused before anything else is looked at
        return true;
      }
      expect(r.err).toContain('--port expects an integer');
      return false;
    };
    expect(await refused('0.0.0.0')).toBe(true);
    expect(await refused('192.0.2.7')).toBe(true);
    expect(await refused('')).toBe(true);
    expect(await refused('[::1]')).toBe(false);
    expect(await refused('::1')).toBe(false);
    expect(await refused('localhost')).toBe(false);
    expect(await refused('127.0.0.1')).toBe(false);
    // The explicit flag lets it through (with the warning), to the --port check.
    const allowed = await cli(['proxy', 'ws://127.0.0.1:1/', '--host', '0.0.0.0', '--allow-remote', '--port', 'x', ...pins]);
    expect([allowed.code, allowed.err]).toEqual([2, expect.stringContaining('--port expects an integer')]);
    expect(allowed.err).toContain('warning: --host "0.0.0.0" is not loopback');
  });

  it.each(['--max-unread-bytes', '--max-unread-bytes-per-connection'])('proxy: %s takes 65536..2^34 bytes', async (flag) => {
    const pins = ['--pcr0', 'aa'.repeat(48), '--pcr1', 'aa'.repeat(48), '--pcr2', 'aa'.repeat(48)];
    for (const value of ['1024', '1e9', 'x', String(2 ** 34 + 1)]) {
      const r = await cli(['proxy', 'ws://127.0.0.1:1/', flag, value, ...pins]);
      expect([value, r.code, r.err]).toEqual([value, 2, expect.stringContaining(`${flag} expects`)]);
    }
  });
});

describe('a <url> with credentials in what attest and proxy print', () => {
  it('attest: a bridge that never answers is CLIENT_TIMEOUT naming the URL without its user:pass@', async () => {
    // Accepts the TCP connection and says nothing: the WebSocket never opens, the attest budget runs out.
    const held: net.Socket[] = [];
    const server = net.createServer((s) => held.push(s));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as net.AddressInfo;
      const r = await cli(['attest', `ws://alice:hunter2@127.0.0.1:${port}/`, '--pcrs', `PCR0=${'aa'.repeat(48)},PCR1=${'aa'.repeat(48)},PCR2=${'aa'.repeat(48)}`, '--timeout', '300']);
      expect(r.code).toBe(1);
      expect(r.err).toContain(`CLIENT_TIMEOUT: no attestation from ws://***@127.0.0.1:${port}/ within 300 ms`);
      expect(r.err).not.toMatch(/hunter2|alice/);
    } finally {
      for (const s of held) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it.each([[[]], [['--json']]])('proxy %j: the first line names the upstream without its user:pass@', async (extra) => {
    // Nothing listens on port 1: the first line comes once the first connect failed.
    const p = startBin(['proxy', 'ws://alice:hunter2@127.0.0.1:1/', '--pcr0', 'aa'.repeat(48), '--pcr1', 'aa'.repeat(48), '--pcr2', 'aa'.repeat(48), '--log-level', 'silent', ...extra]);
    try {
      const line = await p.firstLine(30_000);
      expect(line).toContain('ws://***@127.0.0.1:1/');
      expect(line).not.toMatch(/hunter2|alice/);
    } finally {
      await p.kill();
    }
  });
});

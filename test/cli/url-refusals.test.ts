// A <url> that `attest` or `proxy` refuses is described, never quoted: it may carry user:pass@ (as `fetch`,
// test/cli/fetch-stream.test.ts). And `proxy --host` warns for a non-loopback address only, by the same rule
// the rest of the agent uses (src/host/listen.ts isLoopbackHost).
import { describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/run.ts';

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

  it('proxy: the loopback warning follows isLoopbackHost ([::1] and localhost are loopback; 0.0.0.0 and "" are not)', async () => {
    const warned = async (host: string): Promise<boolean> => {
      // A bad --port stops it after the --host check: nothing listens, nothing connects.
      const r = await cli(['proxy', 'ws://127.0.0.1:1/', '--host', host, '--port', 'x', '--pcr0', 'aa'.repeat(48), '--pcr1', 'aa'.repeat(48), '--pcr2', 'aa'.repeat(48)]);
      expect(r.code).toBe(2);
      return r.err.includes('is not loopback');
    };
    expect(await warned('0.0.0.0')).toBe(true);
    expect(await warned('')).toBe(true);
    expect(await warned('[::1]')).toBe(false);
    expect(await warned('::1')).toBe(false);
    expect(await warned('localhost')).toBe(false);
    expect(await warned('127.0.0.1')).toBe(false);
  });
});

import { describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli/run.ts';
import { COMMANDS } from '../../src/cli/commands.ts';

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

describe('enclave-agent dispatcher', () => {
  it('lists every command with its summary and exits 2 without arguments', async () => {
    const r = await cli([]);
    expect(r.code).toBe(2);
    for (const c of COMMANDS) expect(r.out).toContain(`${c.path.join(' ')}`);
    expect(r.out).toContain(COMMANDS[0]!.summary);
  });

  it('every registered command loads and has its own --help', async () => {
    for (const c of COMMANDS) {
      const r = await cli([...c.path, '--help']);
      expect(r.code, c.path.join(' ')).toBe(0);
      expect(r.out, c.path.join(' ')).toMatch(/Usage: enclave-agent /);
    }
  });

  it('an unknown command is one error line plus the usage, exit 2', async () => {
    const r = await cli(['nope']);
    expect(r.code).toBe(2);
    expect(r.err.split('\n')[0]).toBe('enclave-agent: unknown command "nope"');
  });

  it('leaves --help after `--` to the command (run -- app --help must start the app, not print help)', async () => {
    const r = await cli(['encrypt', '--', '--help']);
    expect(r.out).not.toContain('Usage:');
    expect(r.code).toBe(2);
    expect(r.err).toContain('enclave-agent encrypt:');
  });
});

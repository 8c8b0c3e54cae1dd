// `enclave-agent attest --pcrs` compares every pinned PCR, not only PCR0/1/2/8: a wrong PCR3 is a mismatch (exit 1).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePins } from '../../src/cli/attestation-inspect.ts';
import { runCli } from '../../src/cli/run.ts';
import { CliUsageError } from '../../src/cli/types.ts';
import { startStack, type Stack } from '../client/stack.ts';

let stack: Stack;
const dir = mkdtempSync(join(tmpdir(), 'attest-pins-'));

beforeAll(async () => {
  stack = await startStack();
});
afterAll(async () => {
  await stack?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function attest(pcrs: Record<string, unknown>): Promise<{ code: number; out: string }> {
  const file = join(dir, 'pins.json');
  writeFileSync(file, JSON.stringify(pcrs));
  const out: string[] = [];
  const code = await runCli(['attest', stack.url, '--pcrs', file, '--root', stack.sim.rootPath, '--json'], { out: (l) => out.push(l), err: (l) => out.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
  return { code, out: out.join('\n') };
}

describe('enclave-agent attest with PCR3/PCR4 pinned', () => {
  const hex = (i: number): string => Buffer.from(stack.sim.pcrs[i]!).toString('hex');

  it('reports a wrong PCR3 as a mismatch and exits 1', async () => {
    const r = await attest({ ...stack.pins, PCR3: 'ab'.repeat(48) });
    expect(r.code).toBe(1);
    const line = JSON.parse(r.out) as { match: boolean; mismatches: string[]; pcrs: Record<string, string>; expected: Record<string, string> };
    expect(line).toMatchObject({ match: false, mismatches: ['PCR3'] });
    expect(line.pcrs.PCR3).toBe(hex(3));
    expect(line.expected.PCR3).toBe('ab'.repeat(48));
  });

  it('matches with the right PCR3 and PCR4 and exits 0', async () => {
    const r = await attest({ ...stack.pins, PCR3: hex(3), PCR4: hex(4).toUpperCase() });
    expect(JSON.parse(r.out)).toMatchObject({ match: true, mismatches: [] });
    expect(r.code).toBe(0);
  });
});

/** `attest --pcrs A --pcrs B ... --json` with inline sets; the exit code and the JSON line. */
async function attestSets(sets: Record<string, string>[]): Promise<{ code: number; line: { match: boolean; mismatches: string[]; expected: Record<string, string> } }> {
  const out: string[] = [];
  const flags = sets.flatMap((s) => ['--pcrs', Object.entries(s).map(([k, v]) => `${k}=${v}`).join(',')]);
  const code = await runCli(['attest', stack.url, ...flags, '--root', stack.sim.rootPath, '--json'], { out: (l) => out.push(l), err: (l) => out.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
  return { code, line: JSON.parse(out.join('\n')) as { match: boolean; mismatches: string[]; expected: Record<string, string> } };
}

describe('enclave-agent attest with --pcrs repeated (like fetch: a document matching any set passes)', () => {
  const pins = (): Record<string, string> => ({ ...(stack.pins as unknown as Record<string, string>) });
  const wrong = (): Record<string, string> => ({ ...pins(), PCR0: 'ab'.repeat(48) });

  it('matches when the first set is right and the second wrong (the second used to replace the first)', async () => {
    const r = await attestSets([pins(), wrong()]);
    expect(r.line).toMatchObject({ match: true, mismatches: [], expected: stack.pins });
    expect(r.code).toBe(0);
  });

  it('matches when the second set is right', async () => {
    const r = await attestSets([wrong(), pins()]);
    expect(r.line).toMatchObject({ match: true, mismatches: [] });
    expect(r.code).toBe(0);
  });

  it('is a mismatch (exit 1) when no set matches', async () => {
    const r = await attestSets([wrong(), { ...wrong(), PCR1: 'cd'.repeat(48) }]);
    expect(r.line).toMatchObject({ match: false, mismatches: ['PCR0'], sets: 2 });
    expect(r.code).toBe(1);
    const out: string[] = [];
    const flags = [wrong(), wrong()].flatMap((p) => ['--pcrs', Object.entries(p).map(([k, v]) => `${k}=${v}`).join(',')]);
    expect(await runCli(['attest', stack.url, ...flags, '--root', stack.sim.rootPath], { out: (l) => out.push(l), err: (l) => out.push(l), stdin: () => Promise.resolve(new Uint8Array()) })).toBe(1);
    expect(out.at(-1)).toBe('MISMATCH: none of the 2 sets of --pcrs match; the closest (set 1, shown above) differs in PCR0.');
  });
});

describe('enclave-agent attest <url with user:pass@>', () => {
  it.each([[[]], [['--json']]])('%j: what it prints names the URL without its credentials', async (extra) => {
    const url = stack.url.replace('ws://', 'ws://alice:hunter2@');
    const out: string[] = [];
    const flags = ['--pcrs', Object.entries(stack.pins).map(([k, v]) => `${k}=${String(v)}`).join(',')];
    const code = await runCli(['attest', url, ...flags, '--root', stack.sim.rootPath, ...extra], { out: (l) => out.push(l), err: (l) => out.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
    expect([code, out.join('\n')]).toEqual([0, expect.stringContaining(stack.url.replace('ws://', 'ws://***@'))]);
    expect(out.join('\n')).not.toMatch(/hunter2|alice/);
  });
});

describe('--pcrs inline parsing', () => {
  it('a part with more than one "=" is a usage error naming it, not silently cut at the second "="', () => {
    const h = '00'.repeat(48);
    expect(() => parsePins(`PCR0=${h},PCR1=${h}=ff,PCR2=${h}`)).toThrow(CliUsageError);
    expect(() => parsePins(`PCR0=${h},PCR1=${h}=ff,PCR2=${h}`)).toThrow(`"PCR1=${h}=ff"`);
    expect(() => parsePins(`PCR0=${h},PCR1=${h},PCR2=${h}`)).not.toThrow();
  });
});

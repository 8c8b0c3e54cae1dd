// What a newcomer trips over first, in process: --version, a command group alone, typos in flags, commands and
// config keys ("did you mean"), node's unbalanced unknown-option message, malformed --pcrs/--root as usage
// errors (exit 2, not "attestation failed"), the parent CID `run --help` names, and the docs that must agree with
// the code (enclave.toml's accept_proxy_protocol comment, docker/README's bridge line vs the example configs).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AWS_NITRO_ROOT_G1_PEM } from '../../src/attestation/aws-root.ts';
import { runCli } from '../../src/cli/run.ts';
import { loadConfig } from '../../src/config.ts';
import { NITRO_PARENT_CID } from '../../src/transport/vsock.ts';
import { closest } from '../../src/util/suggest.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
let dir: string;

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(argv, { out: (l) => out.push(l), err: (l) => err.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** Every ' and " in a message comes in pairs. */
function balanced(line: string): boolean {
  return (line.match(/'/g) ?? []).length % 2 === 0 && (line.match(/"/g) ?? []).length % 2 === 0;
}

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-polish-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('enclave-agent --version and command groups', () => {
  it('--version (and -V) prints package.json\'s version, exit 0', async () => {
    const { version } = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    expect(await cli(['--version'])).toEqual({ code: 0, out: version, err: '' });
    expect(await cli(['-V'])).toEqual({ code: 0, out: version, err: '' });
  });

  it('`keys` and `attestation` alone list their subcommands (exit 2; --help exit 0)', async () => {
    const keys = await cli(['keys']);
    expect(keys.code).toBe(2);
    expect(keys.out).toContain('Usage: enclave-agent keys <subcommand>');
    expect(keys.out).toMatch(/^ {2}keys public {2}print the enclave's ev: public keys/m);
    const att = await cli(['attestation', '--help']);
    expect(att.code).toBe(0);
    expect(att.out).toMatch(/^ {2}attestation inspect {2}decode a Nitro attestation document/m);
  });

  it('an unknown subcommand or command suggests the near one', async () => {
    const sub = await cli(['keys', 'pubic']);
    expect(sub.code).toBe(2);
    expect(sub.err.split('\n')[0]).toBe('enclave-agent keys: unknown subcommand "pubic" (did you mean "public"?)');
    const cmd = await cli(['strat']);
    expect(cmd.code).toBe(2);
    expect(cmd.err.split('\n')[0]).toBe('enclave-agent: unknown command "strat" (did you mean "start"?)');
  });
});

describe('unknown flags', () => {
  it('name the flag with balanced quotes and suggest the near one, exit 2 (parseFlags commands and the others)', async () => {
    const cases: [string[], string][] = [
      [['fetch', 'ws://127.0.0.1:1/', '/', '--pcrz', 'x'], 'enclave-agent fetch: unknown option "--pcrz" (did you mean "--pcrs"?) (see --help)'],
      [['start', '--bridge-prot', '0'], 'enclave-agent start: unknown option "--bridge-prot" (did you mean "--bridge-port"?) (see --help)'],
      [['bridge', '--enclave-ci', '16'], 'enclave-agent bridge: unknown option "--enclave-ci" (did you mean "--enclave-cid"?) (see --help)'],
      [['attestation', 'inspect', '--roo', 'x', 'doc'], 'enclave-agent attestation inspect: unknown option "--roo" (did you mean "--root"?) (see --help)'],
      [['fetch', 'ws://127.0.0.1:1/', '/', '--zzzzzz'], 'enclave-agent fetch: unknown option "--zzzzzz" (see --help)'],
    ];
    for (const [argv, line] of cases) {
      const r = await cli(argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toBe(line);
      expect(balanced(r.err)).toBe(true);
    }
  });

  it('suggestions: a swapped pair counts as one typo, short names only by case, a unique prefix', () => {
    expect(closest('prot', ['port', 'path'])).toBe('port');
    expect(closest('-Z', ['-X', '-d'])).toBeUndefined();
    expect(closest('pub', ['public'])).toBe('public');
    expect(closest('banana', ['port', 'name'])).toBeUndefined();
  });
});

describe('config keys', () => {
  it('an unknown key names the key and the one meant', async () => {
    const file = path.join(dir, 'typo.toml');
    writeFileSync(file, 'name = "x"\n[app]\nprot = 8008\n');
    const r = await cli(['pcrs', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.err).toBe(`enclave-agent pcrs: CONFIG_UNKNOWN_KEY: ${file}: unknown key "app.prot" (did you mean "port"?)`);
  });
});

describe('usage errors are exit 2, not "attestation failed"', () => {
  it('a --pcrs value of the wrong length, and a --pcr0 likewise', async () => {
    const short = await cli(['fetch', 'ws://127.0.0.1:1/', '/', '--pcrs', 'PCR0=abab,PCR1=abab,PCR2=abab']);
    expect(short).toEqual({ code: 2, out: '', err: 'enclave-agent fetch: --pcrs: PCR0 must be 96 hex digits (48 bytes, SHA-384; 64 or 128 for other banks), found 4 (see --help)' });
    const flag = await cli(['attest', 'ws://127.0.0.1:1/', '--pcrs', 'PCR0=ab,PCR1=ab,PCR2=ab']);
    expect(flag.code).toBe(2);
    const single = await cli(['fetch', 'ws://127.0.0.1:1/', '/', '--pcr0', 'abcd', '--pcr1', 'ab'.repeat(48), '--pcr2', 'ab'.repeat(48)]);
    expect(single.code).toBe(2);
    expect(single.err).toContain('--pcr0 must be 96 hex digits');
  });

  it('a --root that is not a PEM certificate (fetch, attest, attestation inspect)', async () => {
    const notPem = path.join(dir, 'not.pem');
    writeFileSync(notPem, 'hello\n');
    const pins = ['--pcrs', `PCR0=${'ab'.repeat(48)},PCR1=${'ab'.repeat(48)},PCR2=${'ab'.repeat(48)}`];
    for (const argv of [['fetch', 'ws://127.0.0.1:1/', '/', ...pins], ['attest', 'ws://127.0.0.1:1/', ...pins], ['attestation', 'inspect', 'doc']]) {
      const r = await cli([...argv, '--root', notPem]);
      expect(r.code, argv[0]).toBe(2);
      expect(r.err).toBe(`enclave-agent ${argv[0] === 'attestation' ? 'attestation inspect' : argv[0]}: --root: ${notPem}: root is not a PEM certificate (no BEGIN/END CERTIFICATE block) (see --help)`);
    }
  });

  it('a --root holding two certificates is refused, not read as its first (fetch, attest, attestation inspect)', async () => {
    const bundle = path.join(dir, 'bundle.pem');
    writeFileSync(bundle, `${AWS_NITRO_ROOT_G1_PEM}\n${AWS_NITRO_ROOT_G1_PEM}\n`);
    const pins = ['--pcrs', `PCR0=${'ab'.repeat(48)},PCR1=${'ab'.repeat(48)},PCR2=${'ab'.repeat(48)}`];
    for (const argv of [['fetch', 'ws://127.0.0.1:1/', '/', ...pins], ['attest', 'ws://127.0.0.1:1/', ...pins], ['attestation', 'inspect', 'doc']]) {
      const r = await cli([...argv, '--root', bundle]);
      expect(r.code, argv[0]).toBe(2);
      expect(r.err).toContain(`--root: ${bundle}: root PEM holds 2 certificates; give each trusted root as its own entry`);
    }
  });
});

describe('help and docs agree with the code', () => {
  it('run --help names the parent CID the code dials (3), nowhere 2', async () => {
    const r = await cli(['run', '--help']);
    expect(NITRO_PARENT_CID).toBe(3);
    expect(r.out).toContain(`vsock:${NITRO_PARENT_CID}:<vsock_port>`);
    expect(r.out).not.toMatch(/vsock:2:/);
  });

  it('enclave.toml says accept_proxy_protocol defaults to false, which it does', () => {
    const text = readFileSync(path.join(REPO, 'enclave.toml'), 'utf8');
    const comment = text.slice(0, text.indexOf('\naccept_proxy_protocol')).split('\n').reverse();
    const block = comment.slice(0, comment.findIndex((l) => !l.startsWith('#'))).join(' ');
    expect(block).toMatch(/Default false/);
    const empty = path.join(dir, 'empty.toml');
    writeFileSync(empty, '');
    expect(loadConfig(empty).accept_proxy_protocol).toBe(false);
  });

  it("docker/README's bridge lines send PROXY v2 exactly when the example configs accept it", () => {
    const readme = readFileSync(path.join(REPO, 'docker/README.md'), 'utf8');
    const bridges = readme.split('\n').filter((l) => /^enclave-agent bridge /.test(l));
    expect(bridges.length).toBeGreaterThan(0);
    const examples = readdirSync(path.join(REPO, 'docker/examples'));
    for (const e of examples) {
      const accepts = loadConfig(path.join(REPO, 'docker/examples', e, 'enclave.toml')).accept_proxy_protocol;
      for (const line of bridges) expect(line.includes('--proxy-protocol'), `${e}: ${line}`).toBe(accepts);
    }
  });
});

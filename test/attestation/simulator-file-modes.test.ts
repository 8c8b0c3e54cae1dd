// The simulator's CA (stateDir/nsm-ca: two private keys and two certificates) is trusted only where nobody else can
// read the keys or swap the files (issue 14, item 5). Tests run as root: "another user" is chown to uid 65534, and
// the check compares with process.getuid().
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AttestationError } from '../../src/attestation/errors.ts';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';

const identity = { agentVersion: '0.1.0', app: 'node server.js', config: '' };
const OTHER_UID = 65534;
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** A stateDir with a CA already created in it. */
async function withCa(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'sim-modes-'));
  dirs.push(d);
  await createNsmSimulator({ stateDir: d, identity });
  return d;
}

async function refusal(stateDir: string): Promise<AttestationError> {
  const err = await createNsmSimulator({ stateDir, identity }).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AttestationError);
  expect((err as AttestationError).code).toBe('NSM_SIMULATOR_INSECURE');
  return err as AttestationError;
}

const uid = (): number => process.getuid!();

describe('NSM simulator refuses CA state others could read or swap', () => {
  it('a group- or world-writable stateDir, with a CA in it or before one is created', async () => {
    const dir = await withCa();
    await chmod(dir, 0o777);
    expect((await refusal(dir)).message).toBe(`NSM simulator state ${dir} is group- or world-writable (mode 0777); expected 0700 or 0755 at most; the simulated CA is refused`);
    const fresh = await mkdtemp(join(tmpdir(), 'sim-modes-'));
    dirs.push(fresh);
    await chmod(fresh, 0o770);
    await refusal(fresh);
  });

  it('a group-writable nsm-ca/ and a stateDir owned by another user', async () => {
    const a = await withCa();
    await chmod(join(a, 'nsm-ca'), 0o775);
    expect((await refusal(a)).message).toContain(`${join(a, 'nsm-ca')} is group- or world-writable (mode 0775)`);
    const b = await withCa();
    await chown(b, OTHER_UID, OTHER_UID);
    expect((await refusal(b)).message).toContain(`${b} is owned by uid ${OTHER_UID}, expected the agent's uid ${uid()}`);
  });

  it('a CA key readable by group or others, or owned by another user', async () => {
    const a = await withCa();
    await chmod(join(a, 'nsm-ca', 'root.key.pem'), 0o644);
    expect((await refusal(a)).message).toContain(`root.key.pem is readable or writable by group or others (mode 0644); expected 0600`);
    const b = await withCa();
    await chown(join(b, 'nsm-ca', 'intermediate.key.pem'), OTHER_UID, OTHER_UID);
    expect((await refusal(b)).message).toContain(`intermediate.key.pem is owned by uid ${OTHER_UID}`);
  });

  it('a CA certificate others can write; the 0644 it is written with loads', async () => {
    const a = await withCa();
    await chmod(join(a, 'nsm-ca', 'root.pem'), 0o666);
    expect((await refusal(a)).message).toContain(`root.pem is group- or world-writable (mode 0666); expected 0644 at most`);
    await chmod(join(a, 'nsm-ca', 'root.pem'), 0o644);
    await expect(createNsmSimulator({ stateDir: a, identity })).resolves.toBeTruthy();
  });
});

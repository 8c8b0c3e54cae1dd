// The NSM ioctl's success path, honestly: the addon's real open() + ioctl(0xC0200A00) syscalls are answered by
// a seccomp user-notification supervisor (test/native/fake-nsm/fake_nsm.c) that plays the driver's part on the
// caller's struct nsm_raw — no kernel module, no LD_PRELOAD, no test mode in the addon.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { encodeAttestationRequest, encodeGetRandomRequest, encodeNsmResponse } from '../../src/attestation/nsm-messages.ts';
import { toHex } from '../../src/util/bytes.ts';
import { available, tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

const here = path.dirname(fileURLToPath(import.meta.url));
const supported = process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64');

it.skipIf(!available || !supported)('returns the bytes the driver wrote into the 12 KiB response iovec, through createDeviceNsm', () => {
  const bin = path.join(tmp.dir, 'fake_nsm');
  const cc = spawnSync('cc', ['-O2', '-o', bin, path.join(here, 'fake-nsm/fake_nsm.c')], { encoding: 'utf8' });
  expect(cc.stderr).toBe('');
  expect(cc.status).toBe(0);

  const fixture = readFileSync(path.resolve(process.cwd(), '../shared/fixtures/nitro/hf-nitrite_nitrite_test.cbor'));
  const random = randomBytes(32);
  const device = path.join(tmp.dir, 'nsm');
  writeFileSync(device, '');
  const r1 = path.join(tmp.dir, 'attestation.cbor');
  const r2 = path.join(tmp.dir, 'random.cbor');
  writeFileSync(r1, encodeNsmResponse({ kind: 'Attestation', document: new Uint8Array(fixture) }));
  writeFileSync(r2, encodeNsmResponse({ kind: 'GetRandom', random: new Uint8Array(random) }));
  const log = path.join(tmp.dir, 'ioctl.log');
  const nonce = randomBytes(32);

  const run = spawnSync(
    bin,
    [device, log, `${r1},${r2}`, '--', process.execPath, '--import', 'tsx', path.join(here, 'nsm-fake-child.ts'), device, nonce.toString('hex')],
    { encoding: 'utf8', timeout: 30_000 },
  );
  expect(run.stderr).toBe('');
  expect(run.status).toBe(0);
  const out = JSON.parse(run.stdout.trim().split('\n').pop()!) as { doc: string; random: string };
  expect(out.doc).toBe(fixture.toString('hex'));
  expect(out.random).toBe(random.toString('hex'));

  // What the "driver" saw: our fd was the device, the request bytes are the device client's CBOR, and the
  // response buffer offered was exactly 12 KiB; the rewritten response.len carried the reply length back.
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  const expected = [encodeAttestationRequest({ nonce, userData: new Uint8Array(32).fill(7) }), encodeGetRandomRequest()];
  expect(lines).toHaveLength(2);
  lines.forEach((line, i) => {
    const fields = Object.fromEntries(line.replace(/^ioctl /, '').split(' ').map((kv) => kv.split('=') as [string, string]));
    expect(fields).toMatchObject({ fd_ok: '1', resp_cap: '12288', err: '0', req: toHex(expected[i]!), req_len: String(expected[i]!.length) });
  });
  expect(lines[0]).toContain(`resp_len=${readFileSync(r1).length}`);
});

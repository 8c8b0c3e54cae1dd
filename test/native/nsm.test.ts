// The /dev/nsm ioctl path, against what this machine can honestly provide: no device (ENOENT), a file that is
// not an NSM device (the kernel's own ENOTTY), and the size check that runs before any syscall.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { nativeNsmIoctl } from '../../src/attestation/nsm-native.ts';
import { loadNative, NativeError } from '../../src/transport/native.ts';
import { available, tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

it.skipIf(!available)('reports a missing device as NATIVE_NSM_OPEN_FAILED with errno ENOENT', async () => {
  const ioctl = nativeNsmIoctl(path.join(tmp.dir, 'no-such-nsm'));
  const err = await ioctl(new Uint8Array([0x69, 0x47, 0x65, 0x74])).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(NativeError);
  expect(err).toMatchObject({ code: 'NATIVE_NSM_OPEN_FAILED', errno: 'ENOENT', syscall: 'open' });
  expect((err as Error).message).toContain('only inside a Nitro Enclave');
});

it.skipIf(!available)('reports a regular file as NATIVE_NSM_IOCTL_FAILED with the kernel answer ENOTTY', async () => {
  const file = path.join(tmp.dir, 'not-a-device');
  writeFileSync(file, 'plain file');
  const err = await nativeNsmIoctl(file)(new Uint8Array([1, 2, 3])).catch((e: unknown) => e);
  expect(err).toMatchObject({ code: 'NATIVE_NSM_IOCTL_FAILED', errno: 'ENOTTY', syscall: 'ioctl' });
  expect((err as Error).message).toContain('is not an NSM device');
});

it.skipIf(!available)('refuses a request above 4 KiB (or empty) before any syscall, in TypeScript and in C', async () => {
  // A path whose open() would fail with ENOENT: getting the size error instead proves no syscall ran.
  const ioctl = nativeNsmIoctl(path.join(tmp.dir, 'never-opened'));
  await expect(ioctl(new Uint8Array(4097))).rejects.toMatchObject({ code: 'NATIVE_NSM_REQUEST_SIZE' });
  await expect(ioctl(new Uint8Array(0))).rejects.toMatchObject({ code: 'NATIVE_NSM_REQUEST_SIZE' });
  const native = loadNative();
  expect(native.NSM_REQUEST_MAX).toBe(4096);
  expect(native.NSM_RESPONSE_MAX).toBe(12288);
  expect(() => native.nsmRequest(new Uint8Array(4097), path.join(tmp.dir, 'never-opened'))).toThrow(/1\.\.4096 bytes, got 4097/);
  // 4096 exactly is allowed through to open() (which then fails with ENOENT here).
  await expect(ioctl(new Uint8Array(4096))).rejects.toMatchObject({ code: 'NATIVE_NSM_OPEN_FAILED', errno: 'ENOENT' });
});

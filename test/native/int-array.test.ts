// native/src/intarray.c: the int-array loops validate every argument in C — a wrong type is a TypeError
// (ERR_INVALID_ARG_TYPE), an offset or count outside the buffers a RangeError (ERR_OUT_OF_RANGE or
// ERR_INT_ARRAY_DST_TOO_SMALL) — and never touch memory outside the typed arrays they are given.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { loadNative } from '../../src/transport/native.ts';
import { getIntArrayCodec, setIntArrayCodec } from '../../src/wire/messages.ts';
import { installNativeIntArrayCodec, type NativeIntArrayBinding } from '../../src/wire/native-int-array.ts';
import { available, tempDir } from './helpers.ts';

const binding = (): NativeIntArrayBinding => loadNative() as unknown as NativeIntArrayBinding;

function thrown(fn: () => unknown): { name: string; code: unknown; message: string } {
  try {
    fn();
  } catch (err) {
    const e = err as Error & { code?: unknown };
    return { name: e.name, code: e.code, message: e.message };
  }
  throw new Error('expected a throw');
}

it.skipIf(!available)('refuses non-Uint8Array buffers with a TypeError (ERR_INVALID_ARG_TYPE)', () => {
  const b = binding();
  const notBytes: unknown[] = [undefined, null, 0, 'abc', [1, 2, 3], {}, new Uint16Array(4), new Int8Array(4), new Uint8ClampedArray(4), new Float64Array(2), new DataView(new ArrayBuffer(4)), new ArrayBuffer(4)];
  const ok = new Uint8Array(16);
  for (const v of notBytes) {
    const calls: (() => unknown)[] = [
      () => b.intArrayCount(v as Uint8Array),
      () => b.intArrayEncode(v as Uint8Array, ok, 0),
      () => b.intArrayEncode(ok, v as Uint8Array, 0),
      () => b.intArrayDecode(v as Uint8Array, 0, 0, ok, 0),
      () => b.intArrayDecode(ok, 0, 0, v as Uint8Array, 0),
    ];
    for (const call of calls) expect(thrown(call)).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: expect.stringMatching(/^(src|dst) must be a Uint8Array$/) });
  }
  // missing arguments
  const lax = b as unknown as Record<string, (...a: unknown[]) => unknown>;
  expect(thrown(() => lax.intArrayCount!())).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  expect(thrown(() => lax.intArrayEncode!(ok, ok))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  expect(thrown(() => lax.intArrayDecode!(ok, 0, 0, ok))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
});

it.skipIf(!available)('refuses offsets and counts that are not integers inside the buffers (RangeError ERR_OUT_OF_RANGE, TypeError for non-numbers)', () => {
  const b = binding();
  const src = new Uint8Array(10).fill(1);
  const dst = new Uint8Array(10);
  for (const bad of [-1, 0.5, 11, NaN, Infinity, -Infinity, 2 ** 64]) {
    expect(thrown(() => b.intArrayEncode(src.subarray(0, 0), dst, bad)), `dstOffset ${bad}`).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining('dstOffset must be an integer 0..10') });
    expect(thrown(() => b.intArrayDecode(src, bad, 0, dst, 0)), `srcOffset ${bad}`).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining('srcOffset must be an integer 0..10') });
    expect(thrown(() => b.intArrayDecode(src, 0, 0, dst, bad)), `dstOffset ${bad}`).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
  }
  for (const bad of ['1', null, undefined, {}, 1n]) {
    expect(thrown(() => b.intArrayEncode(src, dst, bad as number))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: 'dstOffset must be a number' });
    expect(thrown(() => b.intArrayDecode(src, 0, bad as number, dst, 0))).toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: 'n must be a number' });
  }
  // n must fit dst after dstOffset, and stay below 2^26 (the packed result)
  expect(thrown(() => b.intArrayDecode(src, 0, 8, dst, 3))).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: 'n must be an integer 0..7, got 8' });
  const huge = new Uint8Array(2 ** 26);
  expect(thrown(() => b.intArrayDecode(src, 0, 2 ** 26, huge, 0))).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: `n must be an integer 0..${2 ** 26 - 1}, got ${2 ** 26}` });
  // the boundaries themselves are fine
  expect(b.intArrayDecode(src, 10, 0, dst, 10)).toBe(0);
  expect(b.intArrayEncode(src.subarray(0, 0), dst, 10)).toBe(10);
});

it.skipIf(!available)('encode refuses a dst that is too small, without writing outside it', () => {
  const b = binding();
  const src = new Uint8Array([1, 200, 2, 250, 3]); // needs 7 bytes
  const backing = new Uint8Array(20).fill(0xa5);
  const dst = backing.subarray(4, 10); // 6 bytes
  expect(thrown(() => b.intArrayEncode(src, dst, 0))).toMatchObject({ name: 'RangeError', code: 'ERR_INT_ARRAY_DST_TOO_SMALL', message: 'the int array of 5 bytes (2 ≥ 24) needs 7 bytes at dstOffset 0, dst has 6' });
  expect(backing.subarray(0, 4).every((v) => v === 0xa5)).toBe(true);
  expect(backing.subarray(10).every((v) => v === 0xa5)).toBe(true);
  for (let room = 0; room < 7; room++) expect(thrown(() => b.intArrayEncode(src, dst.subarray(0, room), 0)).code).toBe('ERR_INT_ARRAY_DST_TOO_SMALL');
  const exact = new Uint8Array(7);
  expect(b.intArrayEncode(src, exact, 0)).toBe(7);
  expect([...exact]).toEqual([1, 0x18, 200, 2, 0x18, 250, 3]);
});

it.skipIf(!available)('honours byteOffset (pooled Buffers, subarrays) and reads nothing past the end of src', () => {
  const b = binding();
  const pool = Buffer.from([0x18, 0xff, 0x05, 0x18]); // pooled: byteOffset ≠ 0 in the shared slab
  const out = new Uint8Array(3);
  // three elements wanted, but the trailing 0x18 is cut by the end of src: two decoded, three bytes consumed
  expect(b.intArrayDecode(pool, 0, 3, out, 0)).toBe(2 + 3 * 2 ** 26);
  expect([...out]).toEqual([0xff, 0x05, 0]);
  const view = new Uint8Array([9, 9, 0x18, 0x20, 0x02, 9]).subarray(2, 5);
  expect(b.intArrayDecode(view, 0, 3, out, 0)).toBe(2 + 3 * 2 ** 26);
  expect(b.intArrayCount(view)).toBe(2); // 0x18 (24) and 0x20
  const dst = new Uint8Array(8);
  expect(b.intArrayEncode(view, dst.subarray(1), 2)).toBe(2 + 5); // an exact fit at the end of dst
  expect([...dst]).toEqual([0, 0, 0, 0x18, 0x18, 0x18, 0x20, 0x02]);
});

it.skipIf(!available)('treats detached buffers as empty and SharedArrayBuffer views like any other', () => {
  const b = binding();
  const src = new Uint8Array(64).fill(30);
  structuredClone(src.buffer, { transfer: [src.buffer] }); // detaches src
  expect(src.length).toBe(0);
  expect(b.intArrayCount(src)).toBe(0);
  expect(thrown(() => b.intArrayEncode(new Uint8Array([30]), src, 0)).code).toBe('ERR_INT_ARRAY_DST_TOO_SMALL');
  expect(thrown(() => b.intArrayDecode(src, 1, 0, new Uint8Array(1), 0)).code).toBe('ERR_OUT_OF_RANGE');
  const shared = new Uint8Array(new SharedArrayBuffer(4));
  shared.set([0x18, 40, 7, 8]);
  const out = new Uint8Array(3);
  expect(b.intArrayDecode(shared, 0, 3, out, 0)).toBe(3 + 4 * 2 ** 26);
  expect([...out]).toEqual([40, 7, 8]);
});

it.skipIf(!available)('installNativeIntArrayCodec installs the addon functions', () => {
  const before = getIntArrayCodec();
  try {
    expect(installNativeIntArrayCodec()).toBe(true);
    expect(getIntArrayCodec()?.encode).toBe(binding().intArrayEncode);
  } finally {
    setIntArrayCodec(before);
  }
});

it('without the addon, installNativeIntArrayCodec returns false and the wire codec works as before', () => {
  const tmp = tempDir();
  try {
    const script = `
      import { installNativeIntArrayCodec } from './src/wire/native-int-array.ts';
      import { decodeServerMessage, encodeServerMessage, getIntArrayCodec } from './src/wire/messages.ts';
      const payload = new Uint8Array(4096).map((_, i) => i * 7);
      const installed = installNativeIntArrayCodec();
      const back = decodeServerMessage(encodeServerMessage({ type: 'StreamData', id: 1, payload })).message.payload;
      console.log(JSON.stringify({ installed, codec: getIntArrayCodec(), same: Buffer.compare(back, payload) === 0 }));
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      cwd: process.cwd(),
      timeout: 30_000,
      env: { ...process.env, ENCLAVE_AGENT_NATIVE_ADDON: path.join(tmp.dir, 'missing.node') },
    });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout.trim())).toEqual({ installed: false, codec: null, same: true });
  } finally {
    tmp.cleanup();
  }
});

// The addon against hostile JavaScript (14.7): a NativeSocket method called on another wrapped object, vsock
// numbers outside their range, NUL bytes in paths. Each is a typed error before any syscall; nothing is read
// through a pointer of the wrong type, and the objects involved keep working.
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nativeNsmIoctl } from '../../src/attestation/nsm-native.ts';
import { nativeAead, type NativeAeadContext } from '../../src/noise/native-aead.ts';
import { loadNative, NativeError, type NativeAddress, type NativeSocket } from '../../src/transport/native.ts';
import { listenUnixNative } from '../../src/transport/unix-native.ts';
import { listenVsock } from '../../src/transport/vsock.ts';
import { available, tempDir } from './helpers.ts';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

type Binding = ReturnType<typeof loadNative> & { NativeSocket: { prototype: Record<string, unknown> } };
const binding = (): Binding => loadNative() as Binding;

describe.skipIf(!available)('NativeSocket methods check what `this` is', () => {
  it('refuses the fd accessor and every method on an AEAD context, a plain object and a primitive', () => {
    const aead = nativeAead()!;
    const ctx = aead.aeadNew('chacha20-poly1305', new Uint8Array(32).fill(7));
    const proto = binding().NativeSocket.prototype;
    const fdGetter = Object.getOwnPropertyDescriptor(proto, 'fd')!.get!;
    const strangers: unknown[] = [ctx, {}, Object.create(proto), 42];
    for (const stranger of strangers) {
      // before the tags: an AEAD context's EVP_CIPHER_CTX* was read as the socket's fd
      expect(() => fdGetter.call(stranger)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }));
    }
    // the methods: V8's receiver check ("Illegal invocation") or the tag check, a TypeError either way
    for (const name of ['close', 'read', 'write', 'accept', 'connectResult', 'shutdown', 'address', 'peer', 'poll', 'setCallback']) {
      const method = proto[name] as (...a: unknown[]) => unknown;
      for (const stranger of strangers) {
        expect(() => method.call(stranger, new Uint8Array(1), 0), name).toThrow(TypeError);
      }
    }
    // the context came through untouched: it still seals and opens
    const msg = new Uint8Array([1, 2, 3]);
    const tag = new Uint8Array(16);
    aead.aeadSeal(ctx, new Uint8Array(12), new Uint8Array(0), [msg], tag);
    expect(aead.aeadOpen(ctx, new Uint8Array(12), new Uint8Array(0), new Uint8Array([...msg, ...tag]))).toBe(true);
  });

  it('refuses a NativeSocket where an AEAD context is expected, and the socket keeps working', () => {
    const aead = nativeAead()!;
    const sock = binding().listen({ family: 'unix', path: tmp.sock() });
    try {
      const asCtx = sock as unknown as NativeAeadContext;
      expect(() => aead.aeadSeal(asCtx, new Uint8Array(12), new Uint8Array(0), [], new Uint8Array(16))).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
      );
      expect(() => aead.aeadFree(asCtx)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      expect(sock.fd).toBeGreaterThan(2);
      expect(sock.accept()).toBeNull(); // nobody is connecting: EAGAIN, as for any live listener
    } finally {
      sock.close();
    }
    expect(sock.fd).toBe(-1);
  });
});

describe.skipIf(!available)('vsock CIDs and ports are range-checked', () => {
  const refused: [string, NativeAddress][] = [
    ['cid −1 (was VMADDR_CID_ANY)', { family: 'vsock', cid: -1, port: 0 }],
    ['cid 2^32', { family: 'vsock', cid: 2 ** 32, port: 0 }],
    ['cid 3.5', { family: 'vsock', cid: 3.5, port: 0 }],
    ['cid NaN', { family: 'vsock', cid: Number.NaN, port: 0 }],
    ['port −1 (was VMADDR_PORT_ANY)', { family: 'vsock', port: -1 }],
    ['port 0xFFFFFFFF', { family: 'vsock', port: 0xffffffff }],
    ['port 2^32 + 5000 (was port 5000)', { family: 'vsock', port: 2 ** 32 + 5000 }],
    ['port 5000.5', { family: 'vsock', port: 5000.5 }],
    ['port −Infinity', { family: 'vsock', port: Number.NEGATIVE_INFINITY }],
  ];

  it.each(refused)('listen() refuses %s with RangeError ERR_OUT_OF_RANGE before any syscall', (_name, addr) => {
    const before = binding().stats().opened;
    let sock: NativeSocket | undefined;
    try {
      sock = binding().listen(addr);
    } catch (err) {
      expect(err).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
      expect((err as Error).message).toMatch(/^vsock (cid|port) must be an integer 0\.\.\d+, got /);
    } finally {
      sock?.close();
    }
    expect(sock).toBeUndefined();
    expect(binding().stats().opened).toBe(before);
  });

  it('listenVsock turns it into a NativeError with the same code', async () => {
    await expect(listenVsock({ port: -1 }, { onConnection() {} })).rejects.toSatisfy(
      (e: unknown) => e instanceof NativeError && e.code === 'ERR_OUT_OF_RANGE' && /vsock port must be an integer/.test(e.message),
    );
    await expect(listenVsock({ port: 0, cid: -1 }, { onConnection() {} })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
  });

  it('refuses a backlog or a write offset that is not a number in range', () => {
    expect(() => binding().listen({ family: 'unix', path: tmp.sock() }, -1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => binding().listen({ family: 'unix', path: tmp.sock() }, '5' as unknown as number)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
    );
    const sock = binding().listen({ family: 'unix', path: tmp.sock() });
    try {
      // the offset was ignored (0) when it was not a number
      expect(() => sock.write(new Uint8Array(4), 'x' as unknown as number)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      expect(() => sock.write(new Uint8Array(4), 1.5)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    } finally {
      sock.close();
    }
  });
});

describe.skipIf(!available)('NUL bytes in paths are refused', () => {
  it('a unix socket path with a NUL byte is refused, and nothing is bound at its prefix', async () => {
    const dir = path.join(tmp.dir, 'nul');
    mkdirSync(dir);
    const evil = `${path.join(dir, 'a')}\0/elsewhere`;
    for (const f of [() => binding().listen({ family: 'unix', path: evil }), () => binding().connect({ family: 'unix', path: evil })]) {
      expect(f).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: 'unix socket path must not contain NUL bytes' }));
    }
    await expect(listenUnixNative(evil, { onConnection() {} })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(readdirSync(dir)).toEqual([]); // before: a socket named "a" appeared here
  });

  it('an NSM device path with a NUL byte is refused before open()', async () => {
    const file = path.join(tmp.dir, 'plain-file');
    writeFileSync(file, 'not a device');
    // before: open() read the path up to the NUL and reached `file` (ENOTTY from its ioctl)
    expect(() => loadNative().nsmRequest(new Uint8Array([1]), `${file}\0x`)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: 'NSM device path must not contain NUL bytes' }),
    );
    await expect(nativeNsmIoctl(`${file}\0x`)(new Uint8Array([1]))).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(existsSync(file)).toBe(true);
  });
});

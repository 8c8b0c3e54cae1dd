// AF_VSOCK: bind + listen only (this VM has no vsock loopback; NEVER connect to CID 2 or any other CID).
import { existsSync } from 'node:fs';
import { expect, it } from 'vitest';
import { loadNative } from '../../src/transport/native.ts';
import { listenVsock, VMADDR_CID_ANY } from '../../src/transport/vsock.ts';
import { available, openFds } from './helpers.ts';

const haveVsock = existsSync('/dev/vsock');

it.skipIf(!available || !haveVsock)('binds and listens on AF_VSOCK (CID any, kernel-picked high port) and closes without leaking', async () => {
  const before = openFds();
  const listener = await listenVsock({ port: 0 }, { onConnection: () => {} });
  expect(listener.port).toBeGreaterThan(1023); // ephemeral vsock ports start above the reserved range
  expect(listener.address).toBe(`vsock:*:${listener.port}`);
  expect(openFds()).toBe(before + 1);
  // The same port twice is refused with the kernel's errno, as a typed error.
  await expect(listenVsock({ port: listener.port!, cid: VMADDR_CID_ANY }, { onConnection: () => {} })).rejects.toMatchObject({ code: 'EADDRINUSE' });
  await listener.close();
  expect(openFds()).toBe(before);
  // Closed means released: the port can be bound again.
  const again = await listenVsock({ port: listener.port! }, { onConnection: () => {} });
  expect(again.port).toBe(listener.port);
  await again.close();
});

it.skipIf(!available || !haveVsock)('binds a fixed high port on VMADDR_CID_ANY', () => {
  const native = loadNative();
  // A few candidates, in case something else on this VM holds one of them.
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = 40_000 + ((process.pid + attempt * 7919) % 20_000);
    let sock;
    try {
      sock = native.listen({ family: 'vsock', cid: VMADDR_CID_ANY, port });
    } catch (err) {
      if ((err as { code?: string }).code === 'EADDRINUSE') continue;
      throw err;
    }
    try {
      expect(sock.address()).toEqual({ family: 'vsock', cid: VMADDR_CID_ANY, port });
    } finally {
      sock.close();
    }
    return;
  }
  throw new Error('five high vsock ports in use');
});

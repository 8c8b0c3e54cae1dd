/**
 * AF_VSOCK transport (production: the enclave's only door). Node cannot wrap an AF_VSOCK fd in net.Socket
 * (ERR_INVALID_FD_TYPE), so the native addon owns the I/O; streams are plain Node Duplexes and every write
 * syscall is ≤ 32768 bytes (WIRE.md §2: larger vsock writes are silently lost on Nitro kernels).
 */
import type { Duplex } from 'node:stream';
import type { Listener } from './types.ts';
import { connectNative, listenNative } from './native-listener.ts';
import type { NativeListenOptions } from './native-listener.ts';

/** Any CID: listen on whatever this VM/enclave is. */
export const VMADDR_CID_ANY = 0xffffffff;
/**
 * The parent instance, as seen from a Nitro enclave: always CID 3 (AWS Nitro Enclaves docs; vsock-proxy dials it).
 * CID 2 (VMADDR_CID_HOST) is the hypervisor's host, which an enclave never talks to.
 */
export const NITRO_PARENT_CID = 3;

export interface VsockListenAddress {
  /** 0 lets the kernel pick (read it back from Listener.port). */
  port: number;
  /** Default VMADDR_CID_ANY. */
  cid?: number;
}

export function listenVsock(addr: VsockListenAddress, opts: NativeListenOptions): Promise<Listener> {
  return listenNative({ family: 'vsock', cid: addr.cid ?? VMADDR_CID_ANY, port: addr.port }, opts);
}

export function connectVsock(addr: { cid: number; port: number }): Promise<Duplex> {
  return connectNative({ family: 'vsock', cid: addr.cid, port: addr.port });
}

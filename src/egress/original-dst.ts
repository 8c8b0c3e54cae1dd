// The destination a redirected connection was headed for (SO_ORIGINAL_DST through the native addon,
// native/src/origdst.c). Node exposes no getsockopt for it; the fd is borrowed from the socket's handle.
import type net from 'node:net';
import { loadNative, type NativeBinding } from '../transport/native.ts';
import { EgressError } from './errors.ts';

export interface OriginalDst {
  address: string;
  port: number;
  family: 4 | 6;
}

type WithOriginalDst = NativeBinding & { originalDst?(fd: number): OriginalDst };

/** Throws EGRESS_ORIGINAL_DST_UNAVAILABLE when the addon is missing or too old to have originalDst. */
export function originalDstReader(): (socket: net.Socket) => OriginalDst {
  let native: WithOriginalDst;
  try {
    native = loadNative() as WithOriginalDst;
  } catch (err) {
    throw new EgressError('EGRESS_ORIGINAL_DST_UNAVAILABLE', `transparent egress needs the native addon: ${(err as Error).message}`, { cause: err });
  }
  const read = native.originalDst;
  if (typeof read !== 'function') throw new EgressError('EGRESS_ORIGINAL_DST_UNAVAILABLE', 'transparent egress: the native addon has no originalDst (rebuild it: node scripts/build-native.mjs)');
  return (socket) => {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) throw new EgressError('EGRESS_ORIGINAL_DST_UNAVAILABLE', 'the socket has no file descriptor');
    return read.call(native, fd);
  };
}

// How many of the bytes a stream wrote to its app connection the app has read, to the byte (the stall watch,
// session-streams.ts). Node knows what its handle gave the kernel (bytesWritten − writeQueueSize); the kernel holds
// the rest in our socket's send queue (SIOCOUTQ) and in the app's socket's receive queue (its peer on loopback, found
// through sock_diag): native/src/tcpqueue.c. What node itself reports moves only as the kernel takes more, in steps
// of the loopback buffers (~1.4 MB): an app reading under ~50 KB/s looked stalled for 30 s between two steps.
// Without the addon (not built, not Linux) or for an in-process Duplex: null, and the watch reads node's figures.
import type { Duplex } from 'node:stream';
import { loadNative } from '../transport/native.ts';

/** native/src/tcpqueue.c (see there for the exact contract and errors). */
export interface QueueBinding {
  /** ioctl(SIOCOUTQ): bytes in the socket's send queue not yet acknowledged (sent or not). */
  socketOutq(fd: number): number;
  /** The connected peer socket's receive queue (received, not read); throws ENOENT when it is not on this host. */
  tcpPeerUnread(fd: number): number;
}

interface StreamHandle {
  fd?: unknown;
  bytesWritten?: unknown;
  writeQueueSize?: unknown;
}

let binding: QueueBinding | null | undefined;

function queues(): QueueBinding | null {
  if (binding === undefined) {
    binding = null;
    try {
      const b = loadNative() as unknown as Partial<QueueBinding>;
      if (typeof b.socketOutq === 'function' && typeof b.tcpPeerUnread === 'function') {
        binding = { socketOutq: b.socketOutq, tcpPeerUnread: b.tcpPeerUnread };
      }
    } catch {
      // optional: without the addon (or with one too old to have these) the watch reads node's figures
    }
  }
  return binding;
}

/**
 * A look at how far the app read, in one of two measures that only compare with themselves (AppStream keeps a mark
 * for each): `exact`, the bytes the app read; else (the app's socket not found this time) the bytes its kernel
 * acknowledged, which is more by all the app left unread (up to MBs).
 */
export interface AppProgress {
  bytes: number;
  exact: boolean;
}

/**
 * How far the app read the bytes written to `app`, or null when that cannot be told (no addon, no socket handle, a
 * closed fd). Each measure only ever grows for one connection, except that the exact one may read low when the kernel
 * moves bytes from our send queue to the app's receive queue between the two reads (outq is read first, so never
 * high). When the app's socket cannot be found (not TCP, not on this host, no inet_diag in the kernel, or a lookup
 * that failed: EMFILE, EINTR) the send queue alone counts: a TCP peer acknowledges as its window opens (about one MSS
 * at a time), which is coarser but still moves.
 */
export function appBytesRead(app: Duplex): AppProgress | null {
  const q = queues();
  if (q === null) return null;
  const h = (app as { _handle?: StreamHandle | null })._handle;
  if (h === null || h === undefined) return null;
  const { fd, bytesWritten, writeQueueSize } = h;
  if (typeof fd !== 'number' || fd < 0 || typeof bytesWritten !== 'number' || typeof writeQueueSize !== 'number') return null;
  let acked: number;
  try {
    acked = bytesWritten - writeQueueSize - q.socketOutq(fd);
  } catch {
    return null;
  }
  try {
    return { bytes: acked - q.tcpPeerUnread(fd), exact: true };
  } catch {
    return { bytes: acked, exact: false };
  }
}

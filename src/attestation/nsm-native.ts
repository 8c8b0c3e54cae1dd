/**
 * The real /dev/nsm call for createDeviceNsm (nsm-device.ts): one ioctl NSM_IOCTL_RAW (0xC0200A00) with a
 * ≤ 4 KiB request and a 12 KiB response buffer, run by the native addon on the libuv thread pool.
 *
 *   const nsm = createDeviceNsm(nativeNsmIoctl());
 */
import { loadNative, NativeError, toNativeError } from '../transport/native.ts';

/** The driver's limits (drivers/misc/nsm.c): NSM_REQUEST_MAX_SIZE and NSM_RESPONSE_MAX_SIZE. */
export const NSM_IOCTL_REQUEST_MAX = 4096;
export const NSM_IOCTL_RESPONSE_MAX = 12288;

/**
 * Returns the ioctl function for `devicePath`. The addon is loaded on the first call (NativeUnavailableError
 * if it was not built). Failures are NativeError with a stable code and the errno name in `errno`:
 *  - NATIVE_NSM_REQUEST_SIZE: empty or > 4 KiB request, refused before any syscall;
 *  - NATIVE_NSM_OPEN_FAILED: open() failed (errno ENOENT: no such device, i.e. not inside an enclave);
 *  - NATIVE_NSM_IOCTL_FAILED: the ioctl failed (errno ENOTTY: the path is not an NSM device).
 */
export function nativeNsmIoctl(devicePath = '/dev/nsm'): (request: Uint8Array) => Promise<Uint8Array> {
  return async (request: Uint8Array): Promise<Uint8Array> => {
    if (!(request instanceof Uint8Array) || request.length === 0 || request.length > NSM_IOCTL_REQUEST_MAX) {
      const found = request instanceof Uint8Array ? `${request.length} bytes` : typeof request;
      throw new NativeError('NATIVE_NSM_REQUEST_SIZE', `NSM request must be 1..${NSM_IOCTL_REQUEST_MAX} bytes; found ${found}`);
    }
    const native = loadNative();
    try {
      const res = await native.nsmRequest(request, devicePath);
      return new Uint8Array(res.buffer, res.byteOffset, res.byteLength);
    } catch (err) {
      throw describe(toNativeError(err), devicePath);
    }
  };
}

function describe(e: NativeError, devicePath: string): NativeError {
  const opts = { cause: e, errno: e.errno, syscall: e.syscall };
  if (e.code === 'ERR_NSM_REQUEST_SIZE') return new NativeError('NATIVE_NSM_REQUEST_SIZE', e.message, opts);
  if (e.syscall === 'open') {
    const hint = e.errno === 'ENOENT' ? ' — the NSM device exists only inside a Nitro Enclave (use the simulator elsewhere)' : '';
    return new NativeError('NATIVE_NSM_OPEN_FAILED', `cannot open NSM device ${devicePath}: ${e.errno ?? e.code}${hint}`, opts);
  }
  if (e.syscall === 'ioctl') {
    const hint = e.errno === 'ENOTTY' ? ` — ${devicePath} is not an NSM device` : '';
    return new NativeError('NATIVE_NSM_IOCTL_FAILED', `NSM ioctl on ${devicePath} failed: ${e.errno ?? e.code}${hint}`, opts);
  }
  return e;
}

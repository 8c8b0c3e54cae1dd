/**
 * The NSM device client: encodes the device's CBOR request, hands it to an injected ioctl function (the native
 * helper does `ioctl(fd, 0xC0200A00, {request iovec, 12 KiB response iovec})` and returns the bytes the kernel
 * wrote), and decodes the reply. `{"Error": code}` replies become NsmError (code NSM_ERROR, `nsmCode` = the
 * device's ErrorCode name). The same client drives the simulator, so both paths share every byte of codec.
 * Requests reach the device one at a time (oneAtATime).
 */
import { concatBytes } from '../util/bytes.ts';
import { AttestationError, NsmError } from './errors.ts';
import type { AttestationRequest, Nsm } from './nsm.ts';
import { decodeNsmResponse, encodeAttestationRequest, encodeGetRandomRequest, NSM_MAX_REQUEST_BYTES, type NsmResponse } from './nsm-messages.ts';

export type NsmIoctl = (request: Uint8Array) => Uint8Array | Promise<Uint8Array>;

/** Upper bound for one random(n) call; callers wanting more should loop (the device gives ~256 bytes per call). */
export const NSM_MAX_RANDOM_BYTES = 64 * 1024;

async function call(ioctl: NsmIoctl, request: Uint8Array, want: NsmResponse['kind']): Promise<NsmResponse> {
  if (request.length > NSM_MAX_REQUEST_BYTES) {
    throw new NsmError('InputTooLarge', `NSM request is ${request.length} bytes; the device accepts at most ${NSM_MAX_REQUEST_BYTES}`);
  }
  let raw: Uint8Array;
  try {
    raw = await ioctl(request);
  } catch (err) {
    throw new AttestationError('NSM_ERROR', `NSM ioctl failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (!(raw instanceof Uint8Array)) throw new AttestationError('NSM_ERROR', `NSM ioctl returned ${typeof raw}; expected bytes`);
  const res = decodeNsmResponse(raw);
  const what = want === 'Attestation' ? 'an Attestation' : 'a GetRandom';
  if (res.kind === 'Error') throw new NsmError(res.code, `NSM replied Error "${res.code}" to ${what} request`);
  if (res.kind !== want) throw new AttestationError('NSM_ERROR', `NSM replied ${res.kind} to ${what} request`);
  return res;
}

/**
 * `ioctl` called one request at a time, in arrival order. The kernel driver (drivers/misc/nsm.c) has one message
 * buffer and one virtqueue behind a mutex: a second call in flight only holds a libuv pool thread (4 by
 * default, shared with fs, dns.lookup, crypto and zlib) blocked on that mutex, and many would hold them all.
 */
function oneAtATime(ioctl: NsmIoctl): NsmIoctl {
  let tail: Promise<unknown> = Promise.resolve();
  return (request) => {
    const done = tail.then(() => ioctl(request));
    tail = done.catch(() => {});
    return done;
  };
}

/** The device client. Calls reach `ioctl` one at a time (oneAtATime): open it once per process. */
export function createDeviceNsm(deviceIoctl: NsmIoctl): Nsm {
  const ioctl = oneAtATime(deviceIoctl);
  return {
    async attest(req: AttestationRequest): Promise<Uint8Array> {
      const res = await call(ioctl, encodeAttestationRequest(req ?? {}), 'Attestation');
      return (res as { document: Uint8Array }).document;
    },
    async random(n: number): Promise<Uint8Array> {
      if (!Number.isInteger(n) || n < 0 || n > NSM_MAX_RANDOM_BYTES) {
        throw new RangeError(`random(n): n must be an integer in [0, ${NSM_MAX_RANDOM_BYTES}]; found ${n}`);
      }
      const parts: Uint8Array[] = [];
      let have = 0;
      const request = encodeGetRandomRequest();
      while (have < n) {
        const { random } = (await call(ioctl, request, 'GetRandom')) as { random: Uint8Array };
        if (random.length === 0) throw new AttestationError('NSM_ERROR', 'NSM GetRandom returned no bytes');
        parts.push(random);
        have += random.length;
      }
      return concatBytes(...parts).slice(0, n);
    },
  };
}

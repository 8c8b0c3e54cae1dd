// Every error the NSM layer can throw (the device client, its ioctl through the addon, the simulator) reaches a
// session worker as the same class with the same code and typed fields — what the responder logs and the
// session summary records are then the same as with one thread (workers = 1).
import { MessageChannel } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { CborDecodeError } from '../../../src/attestation/cbor.ts';
import { DerError } from '../../../src/attestation/der.ts';
import { AttestationError, NsmError, type AttestationErrorCode } from '../../../src/attestation/errors.ts';
import type { Nsm } from '../../../src/attestation/nsm.ts';
import { errorCode } from '../../../src/responder/error-text.ts';
import { remoteNsm, serveNsm } from '../../../src/runtime/worker-services/nsm-proxy.ts';
import { NativeError, NativeUnavailableError } from '../../../src/transport/native.ts';

const closers: (() => void)[] = [];
afterAll(() => {
  for (const c of closers) c();
});

/** A worker-side Nsm whose main-side twin fails every call with `err`. */
function failingWith(err: unknown): Nsm {
  const { port1, port2 } = new MessageChannel();
  const served = serveNsm(port1, { attest: () => Promise.reject(err), random: () => Promise.reject(err) });
  const remote = remoteNsm(port2);
  closers.push(() => remote.close(), () => served.close());
  return remote;
}

const ATTESTATION_CODES = [
  'ATTESTATION_MALFORMED',
  'ATTESTATION_STRUCTURE',
  'ATTESTATION_CHAIN',
  'ATTESTATION_CERT_EXPIRED',
  'ATTESTATION_UNTRUSTED_ROOT',
  'ATTESTATION_SIGNATURE',
  'ATTESTATION_NONCE_MISMATCH',
  'ATTESTATION_USER_DATA_MISMATCH',
  'ATTESTATION_PCR_MISSING',
  'ATTESTATION_PCR_MISMATCH',
  'ATTESTATION_DEBUG_ENCLAVE',
  'ATTESTATION_TOO_OLD',
  'ATTESTATION_FROM_FUTURE',
  'ATTESTATION_BAD_EXPECTATIONS',
  'NSM_SIMULATOR_INSECURE',
  'NSM_ERROR',
] as const satisfies readonly AttestationErrorCode[];
/** Every code of the union is listed: a new AttestationErrorCode fails the type check until it is added above. */
const everyCode: [Exclude<AttestationErrorCode, (typeof ATTESTATION_CODES)[number]>] extends [never] ? true : never = true;
void everyCode;
/** The device's ErrorCode names (aws-nitro-enclaves-nsm-api) that come back as {"Error": name}. */
const NSM_CODES = ['InvalidArgument', 'InvalidIndex', 'InvalidResponse', 'ReadOnlyIndex', 'InvalidOperation', 'BufferTooSmall', 'InputTooLarge', 'InternalError'];

/** What the main thread's Nsm can throw, by name. */
const thrown: [string, () => Error][] = [
  ...ATTESTATION_CODES.map((c): [string, () => Error] => [`AttestationError ${c}`, () => new AttestationError(c, `the NSM failed (${c})`, { cause: new Error('not sent') })]),
  ...NSM_CODES.map((c): [string, () => Error] => [`NsmError ${c}`, () => new NsmError(c, `NSM replied Error "${c}" to an Attestation request`)]),
  // nsm-native.ts: the addon's ioctl path, with the errno name and the syscall.
  ['NativeError NATIVE_NSM_REQUEST_SIZE', () => new NativeError('NATIVE_NSM_REQUEST_SIZE', 'NSM request must be 1..4096 bytes; found 0 bytes')],
  ['NativeError NATIVE_NSM_OPEN_FAILED', () => new NativeError('NATIVE_NSM_OPEN_FAILED', 'cannot open NSM device /dev/nsm: ENOENT', { errno: 'ENOENT', syscall: 'open' })],
  ['NativeError NATIVE_NSM_IOCTL_FAILED', () => new NativeError('NATIVE_NSM_IOCTL_FAILED', 'NSM ioctl on /dev/nsm failed: ENOTTY', { errno: 'ENOTTY', syscall: 'ioctl' })],
  ['NativeError EIO', () => new NativeError('EIO', 'i/o error', { errno: 'EIO', syscall: 'ioctl' })],
  ['NativeUnavailableError', () => new NativeUnavailableError('/x/enclave_native.node does not exist')],
  // Parsing failures of the attestation layer's own readers.
  ['CborDecodeError', () => new CborDecodeError('truncated: need 4 byte(s) at offset 2, 1 left')],
  ['DerError', () => new DerError('empty RDN')],
  // nsm-device.ts / nsm-messages.ts argument checks.
  ['RangeError', () => new RangeError('random(n): n must be an integer in [0, 65536]; found -1')],
  ['TypeError', () => new TypeError('AttestationRequest.nonce must be a Uint8Array, null or undefined')],
];

/** The fields of `err` a caller (or the session's log and summary) can see. */
function shape(err: unknown): Record<string, unknown> {
  const e = err as Error & Record<string, unknown>;
  return {
    proto: Object.getPrototypeOf(e),
    name: e.name,
    message: e.message,
    code: e.code,
    nsmCode: e.nsmCode,
    errno: e.errno,
    syscall: e.syscall,
    errorCode: errorCode(e),
  };
}

describe('NSM errors across the thread boundary', () => {
  it.each(thrown)('%s arrives in the worker as the same class, code and typed fields (attest and random)', async (_, make) => {
    const original = make();
    const nsm = failingWith(original);
    const a = await nsm.attest({ nonce: new Uint8Array(32) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    const r = await nsm.random(8).then(
      () => undefined,
      (e: unknown) => e,
    );
    for (const got of [a, r]) {
      expect(got).toBeInstanceOf(original.constructor);
      expect(shape(got)).toEqual(shape(original));
      expect((got as Error).cause).toBeUndefined(); // nothing but the whitelisted fields crosses
    }
  });
});

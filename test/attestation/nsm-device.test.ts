import { describe, expect, it } from 'vitest';
import { AttestationError, NsmError } from '../../src/attestation/errors.ts';
import { createDeviceNsm } from '../../src/attestation/nsm-device.ts';
import { concatBytes, fromHex, toHex } from '../../src/util/bytes.ts';
import { fixtureBytes, nitroIndex } from './fixtures.ts';

// Recorded NSM bytes, written out by hand from WIRE.md §6 and the device's serde schema
// (aws-nitro-enclaves-nsm-api `Request`/`Response`, externally tagged, struct field order), not by our encoder.
const hex = (s: string) => s.replace(/\s+/g, '');
const REQ_ATTEST_NONCE_ONLY = hex(`
  a1 6b 4174746573746174696f6e            # {"Attestation":
  a3 69 757365725f64617461 f6             #   {"user_data": null,
     65 6e6f6e6365 42 0102                #    "nonce": h'0102',
     6a 7075626c69635f6b6579 f6           #    "public_key": null}}
`.replace(/#.*$/gm, ''));
const REQ_ATTEST_ALL = hex(`
  a1 6b 4174746573746174696f6e
  a3 69 757365725f64617461 43 616263      # "user_data": h'616263'
     65 6e6f6e6365 40                     # "nonce": h''
     6a 7075626c69635f6b6579 41 ff        # "public_key": h'ff'
`.replace(/#.*$/gm, ''));
const REQ_GET_RANDOM = '6947657452616e646f6d'; // "GetRandom"
const REPLY_INPUT_TOO_LARGE = hex('a1 65 4572726f72 6d 496e707574546f6f4c61726765'); // {"Error": "InputTooLarge"}
const replyAttestation = (doc: Uint8Array) =>
  concatBytes(fromHex(hex('a1 6b 4174746573746174696f6e a1 68 646f63756d656e74 59')), Uint8Array.of(doc.length >> 8, doc.length & 0xff), doc);
const replyRandom = (bytes: Uint8Array) =>
  concatBytes(fromHex(hex('a1 69 47657452616e646f6d a1 66 72616e646f6d 58')), Uint8Array.of(bytes.length), bytes);

/** A fake /dev/nsm: replays recorded replies for recorded requests, and remembers what it was sent. */
function fakeIoctl(script: [requestHex: string, reply: Uint8Array | string][]) {
  const sent: string[] = [];
  let i = 0;
  const ioctl = (request: Uint8Array): Uint8Array => {
    sent.push(toHex(request));
    const step = script[i++];
    if (!step) throw new Error('unexpected extra ioctl');
    expect(toHex(request)).toBe(step[0]);
    return typeof step[1] === 'string' ? fromHex(step[1]) : step[1];
  };
  return { ioctl, sent };
}

describe('NSM device client', () => {
  const doc = fixtureBytes(nitroIndex.documents[1]!);

  it('sends the recorded Attestation request and returns the document from the reply byte for byte', async () => {
    const fake = fakeIoctl([[REQ_ATTEST_NONCE_ONLY, replyAttestation(doc)]]);
    const out = await createDeviceNsm(fake.ioctl).attest({ nonce: Uint8Array.of(1, 2) });
    expect(toHex(out)).toBe(toHex(doc));
    expect(fake.sent).toEqual([REQ_ATTEST_NONCE_ONLY]);
  });

  it('encodes all three fields, an empty nonce as an empty byte string, and works with an async ioctl', async () => {
    const fake = fakeIoctl([[REQ_ATTEST_ALL, replyAttestation(doc)]]);
    const nsm = createDeviceNsm((r) => Promise.resolve(fake.ioctl(r)));
    await nsm.attest({ userData: Uint8Array.of(0x61, 0x62, 0x63), nonce: new Uint8Array(0), publicKey: Uint8Array.of(0xff) });
    expect(fake.sent).toEqual([REQ_ATTEST_ALL]);
  });

  it('turns an {"Error": "InputTooLarge"} reply into NsmError NSM_ERROR carrying the device code', async () => {
    const fake = fakeIoctl([[REQ_ATTEST_NONCE_ONLY, REPLY_INPUT_TOO_LARGE]]);
    const err = await createDeviceNsm(fake.ioctl).attest({ nonce: Uint8Array.of(1, 2) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NsmError);
    expect((err as NsmError).code).toBe('NSM_ERROR');
    expect((err as NsmError).nsmCode).toBe('InputTooLarge');
    expect((err as NsmError).message).toBe('NSM replied Error "InputTooLarge" to an Attestation request');
  });

  it('random(n) sends GetRandom until it has n bytes and returns exactly n', async () => {
    const a = new Uint8Array(200).fill(1);
    const b = new Uint8Array(200).fill(2);
    const fake = fakeIoctl([
      [REQ_GET_RANDOM, replyRandom(a)],
      [REQ_GET_RANDOM, replyRandom(b)],
    ]);
    const nsm = createDeviceNsm(fake.ioctl);
    const out = await nsm.random(300);
    expect(out.length).toBe(300);
    expect(toHex(out)).toBe(toHex(concatBytes(a, b.subarray(0, 100))));
    expect(fake.sent).toEqual([REQ_GET_RANDOM, REQ_GET_RANDOM]);
    expect((await nsm.random(0)).length).toBe(0);
    await expect(nsm.random(-1)).rejects.toThrow(RangeError);
    await expect(nsm.random(1.5)).rejects.toThrow(RangeError);
  });

  it.each([
    ['a reply that is not CBOR', '1c', /not valid CBOR/],
    ['a reply of the wrong kind', hex('a1 69 47657452616e646f6d a1 66 72616e646f6d 41 00'), /replied GetRandom to an Attestation request/],
    ['an Attestation reply without a document', hex('a1 6b 4174746573746174696f6e a0'), /must carry document as a byte string; found absent/],
    ['an unknown reply', hex('a1 63 466f6f f6'), /unexpected NSM reply "Foo"/],
    ['an Error reply without a text code', hex('a1 65 4572726f72 01'), /must carry a text code/],
  ])('rejects %s as NSM_ERROR', async (_, reply, message) => {
    const err = await createDeviceNsm(() => fromHex(reply)).attest({ nonce: Uint8Array.of(1, 2) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttestationError);
    expect((err as AttestationError).code).toBe('NSM_ERROR');
    expect((err as AttestationError).message).toMatch(message);
  });

  it('reports a failing ioctl as NSM_ERROR with the cause attached', async () => {
    const cause = new Error('ENOTTY');
    const err = (await createDeviceNsm(() => {
      throw cause;
    })
      .attest({})
      .catch((e: unknown) => e)) as AttestationError;
    expect(err.code).toBe('NSM_ERROR');
    expect(err.message).toBe('NSM ioctl failed: ENOTTY');
    expect(err.cause).toBe(cause);
  });

  it('refuses a request over the 4 KiB device limit without calling the ioctl', async () => {
    let calls = 0;
    const nsm = createDeviceNsm(() => {
      calls++;
      return new Uint8Array(0);
    });
    const err = (await nsm.attest({ publicKey: new Uint8Array(5000) }).catch((e: unknown) => e)) as NsmError;
    expect(err.nsmCode).toBe('InputTooLarge');
    expect(calls).toBe(0);
  });

  it('hands the device one request at a time, in arrival order, and goes on after one that failed', async () => {
    // Every caller (sessions on every thread, TLS ingress, the API, KMS) shares this one client.
    const pending: { request: string; settle: (reply: Uint8Array | Error) => void }[] = [];
    const nsm = createDeviceNsm(
      (request) =>
        new Promise<Uint8Array>((resolve, reject) => pending.push({ request: toHex(request), settle: (r) => (r instanceof Error ? reject(r) : resolve(r)) })),
    );
    const turn = () => new Promise<void>((r) => setImmediate(r));
    const first = nsm.attest({ nonce: Uint8Array.of(1, 2) }).catch((e: unknown) => e);
    const second = nsm.attest({ userData: Uint8Array.of(0x61, 0x62, 0x63), nonce: new Uint8Array(0), publicKey: Uint8Array.of(0xff) });
    const third = nsm.random(4);
    await turn();
    // Before the fix all three were in the device at once.
    expect(pending.map((p) => p.request)).toEqual([REQ_ATTEST_NONCE_ONLY]);
    pending[0]!.settle(new Error('EINTR'));
    expect(((await first) as AttestationError).code).toBe('NSM_ERROR');
    await turn();
    expect(pending.map((p) => p.request)).toEqual([REQ_ATTEST_NONCE_ONLY, REQ_ATTEST_ALL]);
    pending[1]!.settle(replyAttestation(doc));
    expect(toHex(await second)).toBe(toHex(doc));
    await turn();
    expect(pending.map((p) => p.request)).toEqual([REQ_ATTEST_NONCE_ONLY, REQ_ATTEST_ALL, REQ_GET_RANDOM]);
    pending[2]!.settle(replyRandom(Uint8Array.of(9, 8, 7, 6)));
    expect(await third).toEqual(Uint8Array.of(9, 8, 7, 6));
  });
});

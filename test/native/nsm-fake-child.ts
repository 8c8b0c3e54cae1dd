// Run by nsm-fake.test.ts under fake-nsm/fake_nsm (a seccomp supervisor answering the NSM ioctl): the full
// production stack, createDeviceNsm(nativeNsmIoctl(path)), issuing real open()/ioctl() syscalls.
import { createDeviceNsm } from '../../src/attestation/nsm-device.ts';
import { nativeNsmIoctl } from '../../src/attestation/nsm-native.ts';
import { toHex } from '../../src/util/bytes.ts';

const [device, nonceHex] = process.argv.slice(2) as [string, string];
const nsm = createDeviceNsm(nativeNsmIoctl(device));
const nonce = Uint8Array.from(Buffer.from(nonceHex, 'hex'));
const doc = await nsm.attest({ nonce, userData: new Uint8Array(32).fill(7) });
const random = await nsm.random(32);
console.log(JSON.stringify({ doc: toHex(doc), random: toHex(random) }));

// Interop against rweather/noise-c (compiled to wasm, npm `noise-c.wasm`): an independent C
// implementation on the other end of the handshake, for both of our suites and both roles.
import { createRequire } from 'node:module';
import { beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_PROTOCOL, createHandshake, type NoisePrimitives } from '../../src/noise/index.ts';
import { noblePrimitives } from '../../src/noise/suite-noble.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { toHex, utf8 } from '../../src/util/bytes.ts';

// The slice of the noise-c.wasm API used here (the package ships no types).
interface NcCipherState {
  EncryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  DecryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array;
  free(): void;
}
interface NcHandshakeState {
  Initialize(prologue?: Uint8Array | null): void;
  GetAction(): number;
  WriteMessage(payload?: Uint8Array | null): Uint8Array;
  ReadMessage(message: Uint8Array, payloadNeeded?: boolean): Uint8Array | null;
  GetHandshakeHash(): Uint8Array;
  Split(): [NcCipherState, NcCipherState];
}
interface NcLib {
  constants: Record<string, number>;
  HandshakeState(protocol: string, role: number): NcHandshakeState;
}
type CreateNoise = (options: object, callback: (lib: NcLib) => void) => void;

const createNoise = createRequire(import.meta.url)('noise-c.wasm') as CreateNoise;
let nc: NcLib;
beforeAll(async () => {
  // printErr: silence emscripten's note that streaming compilation falls back to ArrayBuffer in Node.
  nc = await new Promise<NcLib>((resolve) => createNoise({ printErr: () => {} }, resolve));
});

const EMPTY = new Uint8Array(0);
const protocols = [DEFAULT_PROTOCOL];
for (const cipher of ['ChaChaPoly', 'AESGCM'])
  for (const hash of ['BLAKE2s', 'BLAKE2b', 'SHA256', 'SHA512']) {
    const p = `Noise_NN_25519_${cipher}_${hash}`;
    if (p !== DEFAULT_PROTOCOL) protocols.push(p);
  }

function exchangeTransport(
  ours: { send: { encrypt(p: Uint8Array): Uint8Array }; recv: { decrypt(c: Uint8Array): Uint8Array } },
  theirs: { send: NcCipherState; recv: NcCipherState },
): void {
  for (let i = 0; i < 4; i++) {
    const up = utf8.encode(`ours→noise-c #${i}`);
    expect(utf8.decode(theirs.recv.DecryptWithAd(EMPTY, ours.send.encrypt(up)))).toBe(`ours→noise-c #${i}`);
    const down = i === 3 ? new Uint8Array(65519).fill(i) : utf8.encode(`noise-c→ours #${i}`);
    const pt = ours.recv.decrypt(theirs.send.EncryptWithAd(EMPTY, down));
    expect(toHex(pt)).toBe(toHex(down));
  }
  // equal nonces after the exchange: one more each way still lines up
  expect(ours.recv.decrypt(theirs.send.EncryptWithAd(EMPTY, EMPTY)).length).toBe(0);
  expect(theirs.recv.DecryptWithAd(EMPTY, ours.send.encrypt(EMPTY)).length).toBe(0);
}

const suites: NoisePrimitives[] = [nodePrimitives, noblePrimitives];

for (const suite of suites) {
  describe(`interop with noise-c (${suite.name} suite)`, () => {
    for (const protocol of protocols) {
      it(`our responder completes ${protocol} with noise-c's initiator: same hash, transport both ways`, () => {
        const theirs = nc.HandshakeState(protocol, nc.constants.NOISE_ROLE_INITIATOR!);
        theirs.Initialize(null);
        const ours = createHandshake({ role: 'responder', primitives: suite, protocol });
        expect(theirs.GetAction()).toBe(nc.constants.NOISE_ACTION_WRITE_MESSAGE);
        const hs1 = theirs.WriteMessage(null);
        expect(hs1.length).toBe(32);
        expect(ours.readMessage(hs1).length).toBe(0);
        const hs2 = ours.writeMessage();
        expect(hs2.length).toBe(48);
        theirs.ReadMessage(hs2, true);
        expect(theirs.GetAction()).toBe(nc.constants.NOISE_ACTION_SPLIT);
        const theirHash = theirs.GetHandshakeHash();
        const [send, recv] = theirs.Split();
        const t = ours.split();
        expect(toHex(t.handshakeHash)).toBe(toHex(theirHash));
        exchangeTransport(t, { send, recv });
        send.free();
        recv.free();
      });

      it(`our initiator completes ${protocol} with noise-c's responder, with payloads and a prologue`, () => {
        const prologue = utf8.encode('enclave-agent interop');
        const theirs = nc.HandshakeState(protocol, nc.constants.NOISE_ROLE_RESPONDER!);
        theirs.Initialize(prologue);
        const ours = createHandshake({ role: 'initiator', primitives: suite, protocol, prologue });
        const p1 = theirs.ReadMessage(ours.writeMessage(utf8.encode('hello')), true);
        expect(utf8.decode(p1!)).toBe('hello');
        expect(theirs.GetAction()).toBe(nc.constants.NOISE_ACTION_WRITE_MESSAGE);
        expect(utf8.decode(ours.readMessage(theirs.WriteMessage(utf8.encode('welcome'))))).toBe('welcome');
        expect(theirs.GetAction()).toBe(nc.constants.NOISE_ACTION_SPLIT);
        const theirHash = theirs.GetHandshakeHash();
        const [send, recv] = theirs.Split();
        const t = ours.split();
        expect(toHex(t.handshakeHash)).toBe(toHex(theirHash));
        exchangeTransport(t, { send, recv });
        send.free();
        recv.free();
      });
    }
  });
}

import { describe, expect, it } from 'vitest';
import {
  DEFAULT_PROTOCOL,
  type NoiseError,
  createHandshake,
  type Handshake,
  type HandshakeOptions,
  type NoisePrimitives,
  type Transport,
} from '../../src/noise/index.ts';
import { noblePrimitives } from '../../src/noise/suite-noble.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { fromHex, toHex, utf8 } from '../../src/util/bytes.ts';
import { code, suites } from './helpers.ts';

const psk = (b: number) => new Uint8Array(32).fill(b);

function handshakePair(
  initSuite: NoisePrimitives,
  respSuite: NoisePrimitives,
  extra: Partial<HandshakeOptions> = {},
): [Handshake, Handshake] {
  return [
    createHandshake({ role: 'initiator', primitives: initSuite, ...extra }),
    createHandshake({ role: 'responder', primitives: respSuite, ...extra }),
  ];
}

function run(init: Handshake, resp: Handshake): [Transport, Transport] {
  resp.readMessage(init.writeMessage());
  init.readMessage(resp.writeMessage());
  return [init.split(), resp.split()];
}

// Low-order and non-canonical low-order X25519 u-coordinates (the libsodium blocklist).
const LOW_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
].map(fromHex);

describe('Noise NN handshake', () => {
  for (const [a, b] of [
    [nodePrimitives, noblePrimitives],
    [noblePrimitives, nodePrimitives],
    [nodePrimitives, nodePrimitives],
  ] as const) {
    it(`interoperates: ${a.name} initiator ↔ ${b.name} responder, transport both ways`, () => {
      for (const protocol of [DEFAULT_PROTOCOL, 'Noise_NNpsk0+psk2_25519_AESGCM_SHA512', 'Noise_NNpsk2_25519_ChaChaPoly_BLAKE2b']) {
        const psks = protocol.includes('psk0+psk2') ? [psk(1), psk(2)] : protocol.includes('psk') ? [psk(3)] : [];
        const [init, resp] = handshakePair(a, b, { protocol, psks, prologue: utf8.encode('enclave-agent') });
        const hello = resp.readMessage(init.writeMessage(utf8.encode('hi')));
        expect(utf8.decode(hello)).toBe('hi');
        expect(utf8.decode(init.readMessage(resp.writeMessage(utf8.encode('there'))))).toBe('there');
        const [ti, tr] = [init.split(), resp.split()];
        expect(toHex(ti.handshakeHash)).toBe(toHex(tr.handshakeHash));
        expect(ti.handshakeHash.length).toBe(protocol.endsWith('512') || protocol.endsWith('2b') ? 64 : 32);
        for (let i = 0; i < 3; i++) {
          expect(utf8.decode(tr.recv.decrypt(ti.send.encrypt(utf8.encode(`up ${i}`))))).toBe(`up ${i}`);
          expect(utf8.decode(ti.recv.decrypt(tr.send.encrypt(utf8.encode(`down ${i}`))))).toBe(`down ${i}`);
        }
        expect(ti.send.nonce).toBe(3n);
        expect(tr.recv.nonce).toBe(3n);
      }
    });
  }

  for (const suite of suites) {
    describe(`${suite.name} suite`, () => {
      it('speaks the compat byte grammar: 32-byte hs1, 48-byte hs2, 32-byte handshake hash by default', () => {
        const [init, resp] = handshakePair(suite, suite);
        expect(init.protocol).toBe('Noise_NN_25519_ChaChaPoly_BLAKE2s');
        const hs1 = init.writeMessage();
        expect(hs1.length).toBe(32);
        expect(resp.readMessage(hs1).length).toBe(0);
        const hs2 = resp.writeMessage();
        expect(hs2.length).toBe(48);
        expect(init.readMessage(hs2).length).toBe(0);
        expect(init.complete && resp.complete).toBe(true);
        expect(init.split().handshakeHash.length).toBe(32);
      });

      it('reads messages that are views at an offset into a larger buffer (as stream chunks are)', () => {
        const [init, resp] = handshakePair(suite, suite);
        const inside = (msg: Uint8Array) => {
          const big = new Uint8Array(msg.length + 13).fill(0xee);
          big.set(msg, 7);
          return big.subarray(7, 7 + msg.length);
        };
        resp.readMessage(inside(init.writeMessage()));
        init.readMessage(inside(resp.writeMessage()));
        const [ti, tr] = [init.split(), resp.split()];
        expect(toHex(ti.handshakeHash)).toBe(toHex(tr.handshakeHash));
        expect(utf8.decode(tr.recv.decrypt(inside(ti.send.encrypt(utf8.encode('framed')))))).toBe('framed');
        expect(utf8.decode(ti.recv.decrypt(inside(tr.send.encrypt(utf8.encode('back')))))).toBe('back');
      });

      it('uses a fresh ephemeral key per handshake', () => {
        const a = createHandshake({ role: 'initiator', primitives: suite }).writeMessage();
        const b = createHandshake({ role: 'initiator', primitives: suite }).writeMessage();
        expect(toHex(a)).not.toBe(toHex(b));
      });

      it('orients the transport: initiator.send pairs with responder.recv and split() is stable', () => {
        const [init, resp] = handshakePair(suite, suite);
        const [ti, tr] = run(init, resp);
        expect(init.split()).toBe(ti);
        const ct = ti.send.encrypt(Uint8Array.of(1));
        expect(code(() => ti.recv.decrypt(ct))).toBe('NOISE_DECRYPT_FAILED');
        expect(Array.from(tr.recv.decrypt(ct))).toEqual([1]);
      });

      it('rejects hs messages of the wrong length as bad messages', () => {
        const [init, resp] = handshakePair(suite, suite);
        const hs1 = init.writeMessage();
        expect(code(() => resp.readMessage(hs1.subarray(0, 31)))).toBe('NOISE_BAD_MESSAGE');
        expect(code(() => resp.readMessage(new Uint8Array(0)))).toBe('NOISE_BAD_MESSAGE');
        resp.readMessage(hs1); // a length error is refused before the transcript is touched
        const hs2 = resp.writeMessage();
        expect(code(() => init.readMessage(hs2.subarray(0, 47)))).toBe('NOISE_BAD_MESSAGE');
        expect(code(() => init.readMessage(hs2.subarray(0, 32)))).toBe('NOISE_BAD_MESSAGE');
        init.readMessage(hs2);
        expect(init.complete).toBe(true);
        // under psk0 message 1 carries a tag too
        const [p0i, p0r] = handshakePair(suite, suite, { protocol: 'Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s', psks: [psk(1)] });
        expect(code(() => p0r.readMessage(p0i.writeMessage().subarray(0, 47)))).toBe('NOISE_BAD_MESSAGE');
      });

      it('refuses handshake messages over 65535 bytes, read or written', () => {
        const [init, resp] = handshakePair(suite, suite);
        expect(code(() => resp.readMessage(new Uint8Array(65536)))).toBe('NOISE_MESSAGE_TOO_LARGE');
        expect(code(() => init.writeMessage(new Uint8Array(65535 - 32 + 1)))).toBe('NOISE_MESSAGE_TOO_LARGE');
        const hs1 = init.writeMessage(new Uint8Array(65535 - 32)); // exactly the limit is fine
        expect(hs1.length).toBe(65535);
        expect(resp.readMessage(hs1).length).toBe(65503);
        expect(code(() => resp.writeMessage(new Uint8Array(65535 - 48 + 1)))).toBe('NOISE_MESSAGE_TOO_LARGE');
        expect(resp.writeMessage(new Uint8Array(65535 - 48)).length).toBe(65535);
      });

      it('refuses calls in the wrong order', () => {
        const [init, resp] = handshakePair(suite, suite);
        expect(code(() => init.readMessage(new Uint8Array(48)))).toBe('NOISE_BAD_STATE');
        expect(code(() => resp.writeMessage())).toBe('NOISE_BAD_STATE');
        expect(code(() => init.split())).toBe('NOISE_BAD_STATE');
        const hs1 = init.writeMessage();
        expect(code(() => init.writeMessage())).toBe('NOISE_BAD_STATE');
        resp.readMessage(hs1);
        expect(code(() => resp.readMessage(hs1))).toBe('NOISE_BAD_STATE');
        expect(code(() => resp.split())).toBe('NOISE_BAD_STATE');
        init.readMessage(resp.writeMessage());
        expect(code(() => init.writeMessage())).toBe('NOISE_BAD_STATE');
        expect(code(() => resp.writeMessage())).toBe('NOISE_BAD_STATE');
        expect(code(() => init.readMessage(new Uint8Array(48)))).toBe('NOISE_BAD_STATE');
      });

      it('fails the handshake for good on a tampered hs2', () => {
        const [init, resp] = handshakePair(suite, suite);
        resp.readMessage(init.writeMessage());
        const hs2 = resp.writeMessage();
        const bad = hs2.slice();
        bad[40]! ^= 0x80;
        expect(code(() => init.readMessage(bad))).toBe('NOISE_DECRYPT_FAILED');
        expect(init.complete).toBe(false);
        expect(code(() => init.readMessage(hs2))).toBe('NOISE_BAD_STATE');
        expect(code(() => init.split())).toBe('NOISE_BAD_STATE');
      });

      it('detects a prologue mismatch at message 2', () => {
        const init = createHandshake({ role: 'initiator', primitives: suite, prologue: utf8.encode('a') });
        const resp = createHandshake({ role: 'responder', primitives: suite, prologue: utf8.encode('b') });
        resp.readMessage(init.writeMessage());
        expect(code(() => init.readMessage(resp.writeMessage()))).toBe('NOISE_DECRYPT_FAILED');
      });

      it('detects a PSK mismatch at the first message that depends on it', () => {
        const p0 = 'Noise_NNpsk0_25519_AESGCM_SHA256';
        const i0 = createHandshake({ role: 'initiator', primitives: suite, protocol: p0, psks: [psk(1)] });
        const r0 = createHandshake({ role: 'responder', primitives: suite, protocol: p0, psks: [psk(2)] });
        let err: unknown;
        try {
          r0.readMessage(i0.writeMessage());
        } catch (e) {
          err = e;
        }
        expect((err as NoiseError).code).toBe('NOISE_DECRYPT_FAILED');
        expect((err as NoiseError).message).not.toContain(toHex(psk(1)).slice(0, 16));
        const p2 = 'Noise_NNpsk2_25519_ChaChaPoly_SHA512';
        const i2 = createHandshake({ role: 'initiator', primitives: suite, protocol: p2, psks: [psk(1)] });
        const r2 = createHandshake({ role: 'responder', primitives: suite, protocol: p2, psks: [psk(2)] });
        r2.readMessage(i2.writeMessage());
        expect(code(() => i2.readMessage(r2.writeMessage()))).toBe('NOISE_DECRYPT_FAILED');
      });

      it('rejects low-order ephemeral keys from either peer', () => {
        for (const point of LOW_ORDER) {
          expect(code(() => suite.x25519(suite.generatePrivateKey(), point))).toBe('NOISE_BAD_KEY');
          // responder: the DH happens when it writes message 2
          const resp = createHandshake({ role: 'responder', primitives: suite });
          resp.readMessage(point);
          expect(code(() => resp.writeMessage())).toBe('NOISE_BAD_KEY');
          expect(code(() => resp.split())).toBe('NOISE_BAD_STATE');
          // initiator: the DH happens when it reads message 2
          const init = createHandshake({ role: 'initiator', primitives: suite });
          init.writeMessage();
          const hs2 = new Uint8Array(48);
          hs2.set(point);
          expect(code(() => init.readMessage(hs2))).toBe('NOISE_BAD_KEY');
        }
      });
    });
  }

  describe('options', () => {
    it('refuses protocols other than NN / X25519 / the two ciphers / the four hashes', () => {
      for (const protocol of [
        'Noise_XX_25519_ChaChaPoly_BLAKE2s',
        'Noise_NN_448_ChaChaPoly_BLAKE2s',
        'Noise_NNpsk1_25519_ChaChaPoly_BLAKE2s',
        'Noise_NN_25519_ChaChaPoly_SHA3',
        'Noise_NN_25519_ChaChaPoly_BLAKE2s ',
        '',
      ]) {
        expect(code(() => createHandshake({ role: 'initiator', primitives: nodePrimitives, protocol }))).toBe('NOISE_UNSUPPORTED_PROTOCOL');
      }
    });

    it('requires exactly one 32-byte PSK per modifier', () => {
      const mk = (protocol: string, psks: Uint8Array[]) => () => createHandshake({ role: 'responder', primitives: nodePrimitives, protocol, psks });
      expect(code(mk('Noise_NNpsk0+psk2_25519_ChaChaPoly_BLAKE2s', [psk(1)]))).toBe('NOISE_BAD_KEY');
      expect(code(mk('Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s', [new Uint8Array(31)]))).toBe('NOISE_BAD_KEY');
      expect(code(mk(DEFAULT_PROTOCOL, [psk(1)]))).toBe('NOISE_BAD_KEY');
      expect(code(() => createHandshake({ role: 'initiator', primitives: nodePrimitives, ephemeralPrivateKey: new Uint8Array(16) }))).toBe('NOISE_BAD_KEY');
    });

    it('does not wipe or keep aliases of the caller’s fixed ephemeral key and PSKs', () => {
      const e = new Uint8Array(32).fill(7);
      const k = psk(9);
      const [init, resp] = [
        createHandshake({ role: 'initiator', primitives: nodePrimitives, protocol: 'Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s', psks: [k], ephemeralPrivateKey: e }),
        createHandshake({ role: 'responder', primitives: noblePrimitives, protocol: 'Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s', psks: [psk(9)] }),
      ];
      run(init, resp);
      expect(e.every((b) => b === 7)).toBe(true);
      expect(k.every((b) => b === 9)).toBe(true);
    });
  });
});

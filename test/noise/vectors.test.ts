// Upstream Noise vectors (cacophony + snow) for NN, NNpsk0, NNpsk2 and NNpsk0+psk2 in every
// cipher × hash combination, run through both primitive suites.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createHandshake, type Handshake, type NoisePrimitives, type Transport } from '../../src/noise/index.ts';
import { noblePrimitives } from '../../src/noise/suite-noble.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { fromHex, toHex } from '../../src/util/bytes.ts';

interface Vector {
  protocol_name: string;
  source: string;
  init_prologue: string;
  init_ephemeral: string;
  init_psks?: string[];
  resp_prologue: string;
  resp_ephemeral: string;
  resp_psks?: string[];
  handshake_hash?: string;
  messages: { payload: string; ciphertext: string }[];
}

const file = path.resolve(process.cwd(), '../shared/fixtures/noise/nn-vectors.json');
const vectors = (JSON.parse(readFileSync(file, 'utf8')) as { vectors: Vector[] }).vectors;
const suites: NoisePrimitives[] = [nodePrimitives, noblePrimitives];

describe('Noise NN vectors', () => {
  it('covers the 40 NN vectors across every modifier, cipher and hash', () => {
    expect(vectors).toHaveLength(40);
    const names = new Set(vectors.map((v) => v.protocol_name));
    for (const psk of ['', 'psk0', 'psk2', 'psk0+psk2'])
      for (const cipher of ['ChaChaPoly', 'AESGCM'])
        for (const hash of ['BLAKE2s', 'BLAKE2b', 'SHA256', 'SHA512']) expect(names).toContain(`Noise_NN${psk}_25519_${cipher}_${hash}`);
  });

  for (const suite of suites) {
    describe(`${suite.name} suite`, () => {
      vectors.forEach((v, index) => {
        it(`reproduces #${index} ${v.protocol_name} (${v.source.split(' ')[0]}) byte for byte in both directions`, () => {
          const init = createHandshake({
            role: 'initiator',
            primitives: suite,
            protocol: v.protocol_name,
            prologue: fromHex(v.init_prologue),
            ephemeralPrivateKey: fromHex(v.init_ephemeral),
            psks: (v.init_psks ?? []).map(fromHex),
          });
          const resp = createHandshake({
            role: 'responder',
            primitives: suite,
            protocol: v.protocol_name,
            prologue: fromHex(v.resp_prologue),
            ephemeralPrivateKey: fromHex(v.resp_ephemeral),
            psks: (v.resp_psks ?? []).map(fromHex),
          });
          let initT: Transport | undefined;
          let respT: Transport | undefined;
          v.messages.forEach((m, i) => {
            const payload = fromHex(m.payload);
            const fromInitiator = i % 2 === 0; // NN is interactive: messages alternate, initiator first
            if (!init.complete || !resp.complete) {
              const [w, r]: Handshake[] = fromInitiator ? [init, resp] : [resp, init];
              const msg = w!.writeMessage(payload);
              expect(toHex(msg), `message ${i}`).toBe(m.ciphertext);
              expect(toHex(r!.readMessage(msg)), `payload ${i}`).toBe(m.payload);
              return;
            }
            initT ??= init.split();
            respT ??= resp.split();
            const [w, r] = fromInitiator ? [initT, respT] : [respT, initT];
            const ct = w.send.encrypt(payload);
            expect(toHex(ct), `message ${i}`).toBe(m.ciphertext);
            expect(toHex(r.recv.decrypt(ct)), `payload ${i}`).toBe(m.payload);
          });
          initT ??= init.split();
          respT ??= resp.split();
          expect(v.messages.length).toBeGreaterThan(2);
          expect(toHex(initT.handshakeHash)).toBe(toHex(respT.handshakeHash));
          if (v.handshake_hash !== undefined) expect(toHex(initT.handshakeHash)).toBe(v.handshake_hash);
        });
      });
    });
  }
});

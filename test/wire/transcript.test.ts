// The full Enclavia transcript of wire-vectors.json (fixed ephemeral keys) reproduced byte for byte through
// our stack: Noise handshake → hs1/hs2 raw on the stream → CBOR message → AEAD → length-prefixed frame.
import { readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createHandshake } from '../../src/noise/handshake.ts';
import type { NoisePrimitives } from '../../src/noise/primitives.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { noblePrimitives } from '../../src/noise/suite-noble.ts';
import { fromHex, toBase64, toHex } from '../../src/util/bytes.ts';
import { FrameWriter } from '../../src/wire/frame-writer.ts';
import { FrameReader, encodeFrame } from '../../src/wire/frames.ts';
import { decodeClientMessage, decodeServerMessage, encodeClientMessage, encodeServerMessage } from '../../src/wire/messages.ts';

interface Transcript {
  protocol: string;
  prologue_hex: string;
  initiator_ephemeral_private_hex: string;
  responder_ephemeral_private_hex: string;
  handshake: { from: 'client' | 'server'; hex: string }[];
  handshake_hash_hex: string;
  handshake_hash_base64: string;
  frames: { from: 'client' | 'server'; nonce: number; plaintext_cbor_hex: string; frame_hex: string }[];
}
const { transcript } = JSON.parse(
  readFileSync(new URL('../../../shared/fixtures/enclavia/wire-vectors.json', import.meta.url), 'utf8'),
) as { transcript: Transcript };

const suites: [string, NoisePrimitives][] = [
  ['node', nodePrimitives],
  ['noble', noblePrimitives],
];

function handshakes(initiator: NoisePrimitives, responder: NoisePrimitives) {
  const prologue = fromHex(transcript.prologue_hex);
  return {
    client: createHandshake({ role: 'initiator', primitives: initiator, prologue, ephemeralPrivateKey: fromHex(transcript.initiator_ephemeral_private_hex) }),
    agent: createHandshake({ role: 'responder', primitives: responder, prologue, ephemeralPrivateKey: fromHex(transcript.responder_ephemeral_private_hex) }),
  };
}

class Collect extends Writable {
  readonly writes: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.writes.push(Buffer.from(chunk));
    cb();
  }
}

describe('Enclavia transcript', () => {
  it('is the protocol our noise module implements by default', () => {
    expect(transcript.protocol).toBe('Noise_NN_25519_ChaChaPoly_BLAKE2s');
    expect(transcript.handshake.map((m) => [m.from, m.hex.length / 2])).toEqual([['client', 32], ['server', 48]]);
  });

  for (const [name, primitives] of suites) {
    it(`is reproduced byte for byte on the agent's stream with the ${name} suite`, async () => {
      const { client, agent } = handshakes(primitives, primitives);

      // client → agent: hs1, then the client's frames, as one recorded stream read by the agent's FrameReader
      const hs1 = client.writeMessage();
      expect(toHex(hs1)).toBe(transcript.handshake[0]!.hex);

      const inbound = new FrameReader();
      inbound.push(hs1);
      agent.readMessage(inbound.readExact(32)!);

      // agent → client: hs2 as one raw write, through the capped writer
      const sink = new Collect();
      const out = new FrameWriter(sink);
      const hs2 = agent.writeMessage();
      expect(toHex(hs2)).toBe(transcript.handshake[1]!.hex);
      await out.writeRaw(hs2);
      expect(sink.writes.map((w) => w.length)).toEqual([48]);
      client.readMessage(Uint8Array.from(sink.writes[0]!));

      const agentT = agent.split();
      const clientT = client.split();
      expect(toHex(agentT.handshakeHash)).toBe(transcript.handshake_hash_hex);
      expect(toHex(clientT.handshakeHash)).toBe(transcript.handshake_hash_hex);
      expect(toBase64(agentT.handshakeHash)).toBe(transcript.handshake_hash_base64);

      for (const frame of transcript.frames) {
        const plaintext = fromHex(frame.plaintext_cbor_hex);
        if (frame.from === 'client') {
          // the client SDK side: message → CBOR → AEAD → frame
          const { message } = decodeClientMessage(plaintext);
          const cbor = encodeClientMessage(message);
          expect(toHex(cbor)).toBe(frame.plaintext_cbor_hex);
          expect(clientT.send.nonce).toBe(BigInt(frame.nonce));
          const bytes = encodeFrame(clientT.send.encrypt(cbor));
          expect(toHex(bytes)).toBe(frame.frame_hex);
          // the agent side: split the frame bytes awkwardly, reassemble, decrypt, decode
          inbound.push(bytes.subarray(0, 3));
          expect(inbound.nextFrame()).toBeNull();
          inbound.push(bytes.subarray(3));
          const ct = inbound.nextFrame()!;
          expect(agentT.recv.nonce).toBe(BigInt(frame.nonce));
          expect(decodeClientMessage(agentT.recv.decrypt(ct)).message).toEqual(message);
        } else {
          // the agent side: message → CBOR → AEAD → FrameWriter
          const { message } = decodeServerMessage(plaintext);
          const cbor = encodeServerMessage(message);
          expect(toHex(cbor)).toBe(frame.plaintext_cbor_hex);
          expect(agentT.send.nonce).toBe(BigInt(frame.nonce));
          const before = sink.writes.length;
          await out.writeFrame(agentT.send.encrypt(cbor));
          const written = Buffer.concat(sink.writes.slice(before));
          expect(written.toString('hex')).toBe(frame.frame_hex);
          // the client side reads it back
          const reader = new FrameReader();
          reader.push(written);
          expect(decodeServerMessage(clientT.recv.decrypt(reader.nextFrame()!)).message).toEqual(message);
        }
      }
      inbound.end();
    });
  }

  it('is reproduced when the two ends use different suites (noble client, node agent and back)', () => {
    for (const [ini, res] of [
      [noblePrimitives, nodePrimitives],
      [nodePrimitives, noblePrimitives],
    ] as const) {
      const { client, agent } = handshakes(ini, res);
      agent.readMessage(client.writeMessage());
      const hs2 = agent.writeMessage();
      expect(toHex(hs2)).toBe(transcript.handshake[1]!.hex);
      client.readMessage(hs2);
      const c = client.split();
      const a = agent.split();
      expect(toHex(a.handshakeHash)).toBe(transcript.handshake_hash_hex);
      for (const frame of transcript.frames) {
        const sender = frame.from === 'client' ? c.send : a.send;
        expect(toHex(encodeFrame(sender.encrypt(fromHex(frame.plaintext_cbor_hex))))).toBe(frame.frame_hex);
      }
    }
  });
});

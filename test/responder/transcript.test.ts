// Replays the byte-exact Enclavia transcript (fixtures/enclavia/wire-vectors.json) against a responder with the
// vector's fixed ephemeral key. The transcript records the client's RequestAttestation and Data{1,"hi"} and ONE
// server frame at nonce 0: Data{1,"ok"}. So the recorded server answered the Data first; we reproduce that by
// holding the attestation until the Data reply is out (replies go in completion order), then ignore the
// Attestation frame that follows at nonce 1.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Nsm } from '../../src/attestation/nsm.ts';
import { createHandshake } from '../../src/noise/handshake.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import type { ForwardContext, Forwarder } from '../../src/responder/forwarder.ts';
import { fromHex, toHex, utf8 } from '../../src/util/bytes.ts';
import { decodeServerMessage } from '../../src/wire/messages.ts';
import { connectTcp, startTestAgent, waitFor } from './helpers.ts';

interface Vectors {
  transcript: {
    initiator_ephemeral_private_hex: string;
    responder_ephemeral_private_hex: string;
    handshake: { from: string; hex: string }[];
    handshake_hash_hex: string;
    frames: { from: string; nonce: number; plaintext_cbor_hex: string; frame_hex: string }[];
  };
}

const vectors = JSON.parse(readFileSync(path.resolve(process.cwd(), '../shared/fixtures/enclavia/wire-vectors.json'), 'utf8')) as Vectors;
const t = vectors.transcript;

/** Answers "ok" to "hi" once the request is complete. */
function okForwarder(seen: ForwardContext[]): Forwarder {
  return {
    connect(ctx) {
      seen.push(ctx);
      const chunks: Buffer[] = [];
      const d: Duplex = new Duplex({
        read() {},
        write(chunk: Buffer, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
        final(cb) {
          d.push(Buffer.concat(chunks).toString() === 'hi' ? 'ok' : 'unexpected');
          d.push(null);
          cb();
        },
      });
      return Promise.resolve(d);
    },
  };
}

describe('Enclavia wire transcript', () => {
  it('answers the recorded client bytes with the recorded server bytes, byte for byte', async () => {
    let releaseAttestation!: () => void;
    const attestationHeld = new Promise<void>((r) => (releaseAttestation = r));
    const nsm: Nsm = {
      attest: async () => {
        await attestationHeld;
        return Uint8Array.of(0x84, 0x41, 0xa0, 0xa0, 0x40, 0xf6);
      },
      random: (n) => Promise.resolve(new Uint8Array(n)),
    };
    const seen: ForwardContext[] = [];
    const agent = await startTestAgent({
      nsm,
      channel: 'public',
      forwarder: okForwarder(seen),
      ephemeralKeyForTests: () => fromHex(t.responder_ephemeral_private_hex),
    });
    // Our initiator with the vector's key produces the recorded hs1.
    const initiator = createHandshake({ role: 'initiator', primitives: nodePrimitives, ephemeralPrivateKey: fromHex(t.initiator_ephemeral_private_hex) });
    expect(toHex(initiator.writeMessage())).toBe(t.handshake[0]!.hex);

    const socket = await connectTcp(agent.port);
    const received: Buffer[] = [];
    socket.on('data', (c: Buffer) => received.push(c));
    const total = (): number => received.reduce((n, c) => n + c.length, 0);

    socket.write(fromHex(t.handshake[0]!.hex));
    await waitFor(() => total() >= 48, 5000, 'hs2');
    expect(toHex(Buffer.concat(received).subarray(0, 48))).toBe(t.handshake[1]!.hex);

    const clientFrames = t.frames.filter((f) => f.from === 'client');
    const serverFrame = t.frames.find((f) => f.from === 'server')!;
    expect(clientFrames.map((f) => f.plaintext_cbor_hex)).toEqual([
      'a1647479706572526571756573744174746573746174696f6e', // RequestAttestation
      'a36474797065644461746162696401677061796c6f61648218681869', // Data{1, "hi"}
    ]);
    for (const f of clientFrames) socket.write(fromHex(f.frame_hex));

    const expected = fromHex(serverFrame.frame_hex);
    await waitFor(() => total() >= 48 + expected.length, 5000, 'the Data reply frame');
    expect(toHex(Buffer.concat(received).subarray(48, 48 + expected.length))).toBe(serverFrame.frame_hex);
    expect(toHex(seen[0]!.handshakeHash)).toBe(t.handshake_hash_hex);
    expect(decodeServerMessage(fromHex(serverFrame.plaintext_cbor_hex)).message).toEqual({ type: 'Data', id: 1, payload: utf8.encode('ok') });

    releaseAttestation(); // the Attestation frame (nonce 1) follows; not part of the recording
    await waitFor(() => total() > 48 + expected.length, 5000, 'the attestation frame');
    socket.destroy();
    await agent.close();
  });
});

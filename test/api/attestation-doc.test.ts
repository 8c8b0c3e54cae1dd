// Issue 14 item 1, replayed end to end on loopback: a host that answers a victim's Noise handshake itself and asks
// the real enclave's local API (relayed by the app, as ENCRYPTION.md describes) for a document whose nonce is the
// victim's handshake hash. Before the fix the genuine document verified and the SDK sent its requests to the host;
// now the document carries SHA-256(label ‖ hash), so the SDK — and an Enclavia-style client that only compares
// `nonce` with the handshake hash — refuses, having sent nothing but RequestAttestation.
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { appFieldDigest } from '../../src/api/app-fields.ts';
import { startApiServer, type ApiServer } from '../../src/api/server.ts';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { connect, type ClientError } from '../../src/client/node.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { createHandshake } from '../../src/noise/handshake.ts';
import type { CipherState } from '../../src/noise/cipher-state.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { toBase64, toHex } from '../../src/util/bytes.ts';
import { encodeFrame, FrameReader } from '../../src/wire/frames.ts';
import { decodeClientMessage, encodeServerMessage, type ClientMessage } from '../../src/wire/messages.ts';
import { IDENTITY } from '../client/stack.ts';

let stateDir: string;
let sim: NsmSimulator;
let api: ApiServer;
let host: WebSocketServer;
let hostUrl: string;
/** What the fake host decrypted from its victims, and the documents it obtained from the enclave. */
const captured: ClientMessage[] = [];
const obtained: { hash: Uint8Array; doc: Uint8Array }[] = [];

/** POST /attestation-doc with base64 fields, as an app (or its relay) does. */
async function attestationDoc(fields: { nonce?: Uint8Array; challenge?: Uint8Array; publicKey?: Uint8Array }): Promise<Uint8Array> {
  const body = Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, toBase64(v)]));
  const res = await fetch(`http://127.0.0.1:${api.port}/attestation-doc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(200);
  return new Uint8Array(await res.arrayBuffer());
}

function contains(haystack: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(haystack).indexOf(Buffer.from(needle)) !== -1;
}

beforeAll(async () => {
  stateDir = await mkdtemp(path.join(os.tmpdir(), 'api-mitm-'));
  sim = await createNsmSimulator({ stateDir, identity: IDENTITY });
  api = await startApiServer({ keyring: Keyring.generate(), nsm: sim, port: 0, logger: pino({ level: 'silent' }) });
  // The hostile host: a WebSocket endpoint that runs the responder side of the handshake itself.
  host = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  host.on('connection', (ws) => {
    ws.on('error', () => {});
    const hs = createHandshake({ role: 'responder', primitives: nodePrimitives });
    const reader = new FrameReader();
    let send: CipherState | null = null;
    let recv: CipherState | null = null;
    let hash: Uint8Array = new Uint8Array(0);
    ws.on('message', (data: Buffer) => {
      const bytes = new Uint8Array(data);
      if (recv === null) {
        hs.readMessage(bytes);
        ws.send(hs.writeMessage());
        const t = hs.split();
        ({ send, recv } = t);
        hash = t.handshakeHash;
        return;
      }
      reader.push(bytes);
      for (let ct = reader.nextFrame(); ct !== null; ct = reader.nextFrame()) {
        const { message } = decodeClientMessage(recv.decrypt(ct), { copy: true });
        captured.push(message);
        if (message.type === 'Data') ws.send(encodeFrame(send!.encrypt(encodeServerMessage({ type: 'Error', id: message.id, message: 'captured' }, 'array'))));
        if (message.type !== 'RequestAttestation') continue;
        void attestationDoc({ nonce: hash }).then((doc) => {
          obtained.push({ hash, doc });
          ws.send(encodeFrame(send!.encrypt(encodeServerMessage({ type: 'Attestation', data: doc, control_nonce: new Uint8Array(32) }, 'array'))));
        });
      }
    });
  });
  await new Promise<void>((resolve) => host.once('listening', resolve));
  hostUrl = `ws://127.0.0.1:${(host.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  for (const c of host.clients) c.terminate();
  await new Promise<void>((resolve) => host.close(() => resolve()));
  await api.close();
  await rm(stateDir, { recursive: true, force: true });
});

describe('a host relaying the local API cannot impersonate the enclave', () => {
  it('the SDK refuses the genuine document obtained for its handshake hash and sends nothing else', async () => {
    const pins = { PCR0: sim.pcrs[0]!, PCR1: sim.pcrs[1]!, PCR2: sim.pcrs[2]! };
    const err = (await connect(hostUrl, { pcrs: pins, roots: [sim.rootPem], reconnect: false, connectTimeoutMs: 10_000 }).then(
      async (client) => {
        // Only reached when the MITM works: the victim's request lands in the host's hands in plaintext.
        await client.fetch('/pay', { method: 'POST', body: JSON.stringify({ card: '4242424242424242' }) }).catch(() => {});
        await client.close();
        return null;
      },
      (e: unknown) => e,
    )) as ClientError | null;
    expect(captured.map((m) => m.type)).toEqual(['RequestAttestation']);
    expect(err?.code).toBe('CLIENT_ATTESTATION_FAILED');
    expect(err?.attestationCode).toBe('ATTESTATION_NONCE_MISMATCH');

    // The document was genuine (chain, signature, PCRs) — only the nonce binding failed — and an Enclavia-style
    // check (nonce == handshake hash) fails as well, while the labelled digest is what it carries.
    expect(obtained).toHaveLength(1);
    const { hash, doc } = obtained[0]!;
    await expect(verifyAttestation(doc, { roots: [sim.rootPem], pcrs: pins })).resolves.toBeTruthy();
    const nonce = parseAttestationDocument(doc).document.nonce!;
    expect(toHex(nonce)).not.toBe(toHex(hash));
    expect(toHex(nonce)).toBe(toHex(appFieldDigest('nonce', hash)));
    await expect(verifyAttestation(doc, { roots: [sim.rootPem], pcrs: pins, nonce: hash })).rejects.toMatchObject({ code: 'ATTESTATION_NONCE_MISMATCH' });
  });
});

describe('POST /attestation-doc never signs a caller-chosen value verbatim', () => {
  it('a 32-byte nonce, a challenge and a publicKey come back only as their labelled SHA-256 digests', async () => {
    const nonce = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 + i);
    const challenge = Uint8Array.from({ length: 48 }, (_, i) => 0x10 + i);
    const publicKey = Uint8Array.from({ length: 294 }, (_, i) => (i * 7 + 3) & 0xff); // the size of an RSA-2048 SPKI
    const doc = await attestationDoc({ nonce, challenge, publicKey });
    const { document, cose } = parseAttestationDocument(doc);
    expect(toHex(document.nonce!)).toBe(toHex(appFieldDigest('nonce', nonce)));
    expect(toHex(document.userData!)).toBe(toHex(appFieldDigest('user_data', challenge)));
    expect(toHex(document.publicKey!)).toBe(toHex(appFieldDigest('public_key', publicKey)));
    // Nowhere in the signed payload, not only not in its own field.
    for (const v of [nonce, challenge, publicKey]) expect(contains(cose.payload, v)).toBe(false);
    // The document is otherwise genuine.
    await expect(verifyAttestation(doc, { roots: [sim.rootPem], pcrs: { PCR0: sim.pcrs[0]!, PCR1: sim.pcrs[1]!, PCR2: sim.pcrs[2]! } })).resolves.toBeTruthy();
  });

  it('a caller publicKey equal to the keyring binding still does not land verbatim; only the agent chooses public_key', async () => {
    const fromAgent = parseAttestationDocument(await attestationDoc({})).document.publicKey!;
    expect(fromAgent.length).toBe(86); // CBOR {"p256": bstr33, "secp256k1": bstr33}
    const replayed = parseAttestationDocument(await attestationDoc({ publicKey: fromAgent })).document.publicKey!;
    expect(toHex(replayed)).toBe(toHex(appFieldDigest('public_key', fromAgent)));
  });

  it('the three labels give three different digests of the same value', () => {
    const v = new Uint8Array(32).fill(1);
    const d = (['nonce', 'user_data', 'public_key'] as const).map((f) => toHex(appFieldDigest(f, v)));
    expect(new Set(d).size).toBe(3);
  });
});

import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeCbor } from '../../src/attestation/nsm-messages.ts';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { createControlNonce, handleControl, parseControlPublicKey, type ControlCommand } from '../../src/responder/control.ts';
import { ResponderError } from '../../src/responder/errors.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { startAgent, type Agent } from '../../src/responder/server.ts';
import { equalBytes, utf8 } from '../../src/util/bytes.ts';
import { closedWithin, connectClient, handshake, startEchoApp, tcpPipe, testSimulator, type TestApp } from './helpers.ts';

let sim: NsmSimulator;
let app: TestApp;
let keys: { publicKey: KeyObject; privateKey: KeyObject };
let agent: Agent;
let controlPath: string;
const executed: ControlCommand[] = [];

/** The payload the operator signs: CBOR map {"command": name, "nonce": [32 uints], ...}. */
function commandPayload(name: string, nonce: Uint8Array, extra: Record<string, unknown> = {}): Uint8Array {
  return encodeCbor(new Map<string, unknown>([['command', name], ['nonce', Array.from(nonce)], ...Object.entries(extra)]));
}

const signRaw = (payload: Uint8Array, key: KeyObject = keys.privateKey): Uint8Array =>
  new Uint8Array(sign('sha256', payload, { key, dsaEncoding: 'ieee-p1363' }));

async function connectControl() {
  const net = await import('node:net');
  const socket = net.connect({ path: controlPath });
  socket.on('error', () => {});
  await new Promise<void>((r) => socket.once('connect', () => r()));
  return handshake(tcpPipe(socket));
}

beforeAll(async () => {
  sim = await testSimulator();
  app = await startEchoApp();
  keys = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  controlPath = path.join(await mkdtemp(path.join(os.tmpdir(), 'responder-ctl-')), 'control.sock');
  agent = await startAgent({
    nsm: sim,
    forwarder: createRawForwarder({ appPort: app.port, halfCloseData: true }),
    listen: { host: '127.0.0.1', port: 0 },
    controlListen: { path: controlPath },
    controlPublicKey: keys.publicKey.export({ type: 'spki', format: 'pem' }) as string,
    controlHandler: (cmd) => {
      executed.push(cmd);
      return { success: true, message: `did ${cmd.command}` };
    },
  });
});

afterAll(async () => {
  await agent.close();
  await app.close();
});

describe('control channel', () => {
  it('executes a signed command carrying the current nonce, then rotates it so a replay fails', async () => {
    const c = await connectControl();
    c.send({ type: 'GetControlNonce' });
    const { message } = await c.next();
    if (message.type !== 'ControlNonce') throw new Error(`expected ControlNonce, got ${message.type}`);
    // GetControlNonce does not consume it.
    c.send({ type: 'GetControlNonce' });
    const again = (await c.next()).message;
    expect(again.type === 'ControlNonce' && equalBytes(again.nonce, message.nonce)).toBe(true);

    const payload = commandPayload('Ping', message.nonce, { note: 'hello' });
    const signature = signRaw(payload);
    c.send({ type: 'Control', payload, signature });
    expect((await c.next()).message).toEqual({ type: 'ControlResult', success: true, message: 'did Ping' });
    expect(executed.at(-1)?.command).toBe('Ping');
    expect(executed.at(-1)?.fields.get('note')).toBe('hello');

    c.send({ type: 'Control', payload, signature });
    expect((await c.next()).message).toEqual({ type: 'ControlResult', success: false, message: 'stale nonce, fetch a fresh attestation' });
    expect(executed).toHaveLength(1);
    c.send({ type: 'GetControlNonce' });
    const rotated = (await c.next()).message;
    expect(rotated.type === 'ControlNonce' && !equalBytes(rotated.nonce, message.nonce)).toBe(true);
    c.close();
  });

  it('shares one nonce between the channels: the public attestation binds it as user_data', async () => {
    const pub = await connectClient(agent.public.listener.port!);
    pub.send({ type: 'RequestAttestation' });
    const att = (await pub.next()).message;
    if (att.type !== 'Attestation') throw new Error('expected Attestation');
    const doc = await verifyAttestation(att.data, { roots: [sim.rootPem], nonce: pub.handshakeHash });
    expect(equalBytes(doc.userData!, att.control_nonce)).toBe(true);
    expect(equalBytes(att.control_nonce, agent.controlNonce.current())).toBe(true);

    const c = await connectControl();
    const payload = commandPayload('Ping', att.control_nonce);
    c.send({ type: 'Control', payload, signature: signRaw(payload) });
    expect((await c.next()).message).toMatchObject({ type: 'ControlResult', success: true });
    c.close();

    pub.send({ type: 'RequestAttestation' });
    const att2 = (await pub.next()).message;
    expect(att2.type === 'Attestation' && !equalBytes(att2.control_nonce, att.control_nonce)).toBe(true);
    pub.close();
  });

  it('rejects a signature by another key, a wrong-length signature and a malformed payload — each consuming the nonce', async () => {
    const c = await connectControl();
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    let nonce = agent.controlNonce.current();
    let payload = commandPayload('Ping', nonce);
    c.send({ type: 'Control', payload, signature: signRaw(payload, other.privateKey) });
    expect((await c.next()).message).toEqual({ type: 'ControlResult', success: false, message: 'signature verification failed' });
    expect(equalBytes(agent.controlNonce.current(), nonce)).toBe(false);

    nonce = agent.controlNonce.current();
    payload = commandPayload('Ping', nonce);
    c.send({ type: 'Control', payload, signature: signRaw(payload).subarray(0, 63) });
    expect((await c.next()).message).toMatchObject({ success: false, message: expect.stringMatching(/^signature must be 64 bytes raw r\|\|s/) });

    const junk = utf8.encode('not cbor at all');
    c.send({ type: 'Control', payload: junk, signature: signRaw(junk) });
    expect((await c.next()).message).toMatchObject({ success: false, message: expect.stringMatching(/^malformed payload: /) });
    c.close();
  });

  it('still refuses Data on the control channel and control messages on the public one', async () => {
    const c = await connectControl();
    c.send({ type: 'Data', id: 1, payload: Uint8Array.of(1) });
    expect((await c.next()).message).toEqual({ type: 'ControlResult', success: false, message: 'message not accepted on the control channel' });
    await closedWithin(c);
  });
});

describe('handleControl', () => {
  it('refuses every command when no control key is configured, and still rotates the nonce', async () => {
    const nonce = createControlNonce();
    const before = nonce.current();
    const payload = commandPayload('Ping', before);
    const result = await handleControl(payload, signRaw(payload), { nonce });
    expect(result).toEqual({ success: false, message: 'control channel disabled (no control public key configured)' });
    expect(equalBytes(nonce.current(), before)).toBe(false);
  });

  it('accepts the nonce as a CBOR byte string too, and reports a command without a handler', async () => {
    const nonce = createControlNonce();
    const payload = encodeCbor(new Map<string, unknown>([['command', 'Reboot'], ['nonce', nonce.current()]]));
    const result = await handleControl(payload, signRaw(payload), { nonce, publicKey: keys.publicKey });
    expect(result).toEqual({ success: false, message: 'unsupported control command: Reboot' });
  });

  it('parses the control key as PEM, SPKI DER or a raw SEC1 point, and rejects other curves', () => {
    const pem = keys.publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const der = new Uint8Array(keys.publicKey.export({ type: 'spki', format: 'der' }));
    const jwk = keys.publicKey.export({ format: 'jwk' });
    const point = new Uint8Array(Buffer.concat([Buffer.of(4), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]));
    for (const input of [pem, der, point]) expect(parseControlPublicKey(input).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey;
    expect(() => parseControlPublicKey(p384)).toThrow(ResponderError);
    expect(() => parseControlPublicKey('not a key')).toThrow(/RESPONDER_CONTROL_KEY|control public key/);
  });
});

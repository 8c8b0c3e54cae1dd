// The SDK against a scripted agent behind an in-memory WebSocket (no network): hostile or broken replies end in
// typed errors, never in a hang or an untyped throw, and the client sends nothing but RequestAttestation before
// the document verified.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { connect, type ClientError, type WebSocketConstructor } from '../../src/client/index.ts';
import type { CipherState } from '../../src/noise/cipher-state.ts';
import { createHandshake } from '../../src/noise/handshake.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import { encodeFrame, FrameReader } from '../../src/wire/frames.ts';
import { decodeClientMessage, encodeServerMessage, type ClientMessage, type ServerMessage } from '../../src/wire/messages.ts';
import { IDENTITY } from './stack.ts';

interface Script {
  /** Called for each decoded client message; `reply` encrypts and delivers a server message; `raw` delivers bytes. */
  onMessage(msg: ClientMessage, io: { reply(m: ServerMessage): void; raw(b: Uint8Array | string): void; hash: Uint8Array; close(): void }): void | Promise<void>;
}

/** A WebSocket class whose peer is an in-memory Noise responder running `script`. Records what the client sent. */
function scriptedWebSocket(script: Script, log: ClientMessage[], ctorArgs: unknown[][] = [], encodings: string[] = []): WebSocketConstructor {
  return class FakeWebSocket extends EventTarget {
    binaryType = 'blob';
    readyState = 0;
    bufferedAmount = 0;
    #hs = createHandshake({ role: 'responder', primitives: nodePrimitives });
    #reader = new FrameReader();
    #send: CipherState | null = null;
    #recv: CipherState | null = null;
    #hash: Uint8Array = new Uint8Array(0);

    constructor(...args: unknown[]) {
      super();
      ctorArgs.push(args);
      setTimeout(() => {
        this.readyState = 1;
        this.dispatchEvent(new Event('open'));
      }, 0);
    }

    #deliver(data: unknown): void {
      if (this.readyState !== 1) return;
      const ev = new Event('message') as Event & { data: unknown };
      ev.data = data;
      this.dispatchEvent(ev);
    }

    send(data: Uint8Array): void {
      const bytes = new Uint8Array(data);
      if (this.#recv === null) {
        this.#hs.readMessage(bytes);
        const hs2 = this.#hs.writeMessage();
        const t = this.#hs.split();
        this.#send = t.send;
        this.#recv = t.recv;
        this.#hash = t.handshakeHash;
        setTimeout(() => this.#deliver(hs2.buffer.slice(hs2.byteOffset, hs2.byteOffset + hs2.byteLength)), 0);
        return;
      }
      this.#reader.push(bytes);
      for (let ct = this.#reader.nextFrame(); ct !== null; ct = this.#reader.nextFrame()) {
        const { message, encoding } = decodeClientMessage(this.#recv.decrypt(ct), { copy: true });
        log.push(message);
        encodings.push(encoding);
        const io = {
          hash: this.#hash,
          reply: (m: ServerMessage) => {
            const frame = encodeFrame(this.#send!.encrypt(encodeServerMessage(m, 'array')));
            setTimeout(() => this.#deliver(frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.byteLength)), 0);
          },
          raw: (b: Uint8Array | string) => setTimeout(() => this.#deliver(typeof b === 'string' ? b : b.slice().buffer), 0),
          close: () => this.close(),
        };
        void script.onMessage(message, io);
      }
    }

    close(): void {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => {
        const ev = new Event('close') as Event & { code: number };
        ev.code = 1006;
        this.dispatchEvent(ev);
      }, 0);
    }
  } as unknown as WebSocketConstructor;
}

let sim: NsmSimulator;
let stateDir: string;
let pins: { PCR0: Uint8Array; PCR1: Uint8Array; PCR2: Uint8Array };

beforeAll(async () => {
  stateDir = await mkdtemp(path.join(os.tmpdir(), 'client-hostile-'));
  sim = await createNsmSimulator({ stateDir, identity: IDENTITY });
  pins = { PCR0: sim.pcrs[0]!, PCR1: sim.pcrs[1]!, PCR2: sim.pcrs[2]! };
});

afterAll(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

const attest = async (io: { hash: Uint8Array; reply(m: ServerMessage): void }, features?: string[]): Promise<void> => {
  const data = await sim.attest({ nonce: io.hash, userData: new Uint8Array(32), publicKey: Uint8Array.of(1, 2, 3) });
  io.reply(features === undefined ? { type: 'Attestation', data, control_nonce: new Uint8Array(32) } : { type: 'Attestation', data, control_nonce: new Uint8Array(32), features });
};

async function failure(script: Script, opts: { connectTimeoutMs?: number } = {}): Promise<{ err: ClientError; log: ClientMessage[] }> {
  const log: ClientMessage[] = [];
  const err = (await connect('ws://fake.test/', { pcrs: pins, roots: [sim.rootPem], WebSocket: scriptedWebSocket(script, log), primitives: nodePrimitives, ...opts }).then(
    () => {
      throw new Error('connect resolved');
    },
    (e: unknown) => e,
  )) as ClientError;
  return { err, log };
}

describe('establishment against a hostile agent', () => {
  it('refuses a document bound to another session (nonce) and sends nothing else', async () => {
    const { err, log } = await failure({
      async onMessage(_m, io) {
        io.reply({ type: 'Attestation', data: await sim.attest({ nonce: new Uint8Array(32).fill(7), userData: null, publicKey: null }), control_nonce: new Uint8Array(32) });
      },
    });
    expect(err.code).toBe('CLIENT_ATTESTATION_FAILED');
    expect(err.attestationCode).toBe('ATTESTATION_NONCE_MISMATCH');
    expect(log).toEqual([{ type: 'RequestAttestation' }]);
  });

  it('refuses a genuine document for this session\'s hash made for something else (a TLS certificate\'s user_data)', async () => {
    // What a host in the middle of the handshake could relay if the enclave's TLS ingress signed any nonce it was
    // given (it refuses 32-byte ones, caller-nonce.ts): nonce = this handshake hash, user_data = a certificate key.
    const spki = new Uint8Array(120).fill(0x30);
    const { err, log } = await failure({
      async onMessage(_m, io) {
        io.reply({ type: 'Attestation', data: await sim.attest({ nonce: io.hash, userData: spki, publicKey: null }), control_nonce: new Uint8Array(32) });
      },
    });
    expect(err.code).toBe('CLIENT_ATTESTATION_FAILED');
    expect(err.attestationCode).toBe('ATTESTATION_USER_DATA_MISMATCH');
    expect(log).toEqual([{ type: 'RequestAttestation' }]);
  });

  it('refuses a first message that is not an Attestation', async () => {
    const { err, log } = await failure({ onMessage: (_m, io) => io.reply({ type: 'Data', id: 1, payload: new Uint8Array(1) }) });
    expect(err.code).toBe('CLIENT_PROTOCOL');
    expect(log).toHaveLength(1);
  });

  it('turns a text message, garbage bytes and a silent agent into typed errors', async () => {
    expect((await failure({ onMessage: (_m, io) => io.raw('hello') })).err.code).toBe('CLIENT_PROTOCOL');
    expect((await failure({ onMessage: (_m, io) => io.raw(Uint8Array.of(0, 0, 0, 20, ...new Uint8Array(20))) })).err.code).toBe('CLIENT_PROTOCOL');
    expect((await failure({ onMessage: (_m, io) => io.raw(Uint8Array.of(0xff, 0xff, 0xff, 0xff)) })).err.code).toBe('CLIENT_PROTOCOL');
    expect((await failure({ onMessage: () => {} }, { connectTimeoutMs: 200 })).err.code).toBe('CLIENT_TIMEOUT');
    expect((await failure({ onMessage: (_m, io) => io.close() })).err.code).toBe('CLIENT_CONNECT_FAILED');
  });
});

describe('a verified session with a scripted agent', () => {
  it('fails malformed replies without quoting their (decrypted) bytes in the error', async () => {
    const SECRET = '4111111111111111';
    const replies = [
      `HTTP/1.1 2OO card=${SECRET}\r\n\r\n`,
      `HTTP/1.1 200 OK\r\nX-Card ${SECRET}\r\n\r\n`,
      `HTTP/1.1 200 OK\r\nContent-Length: ${SECRET}0000\r\n\r\n`,
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${SECRET}z\r\n`,
    ];
    for (const reply of replies) {
      const ws = scriptedWebSocket(
        {
          async onMessage(m, io) {
            if (m.type === 'RequestAttestation') await attest(io);
            else if (m.type === 'Data') io.reply({ type: 'Data', id: m.id, payload: new TextEncoder().encode(reply) });
          },
        },
        [],
      );
      const client = await connect('ws://fake.test/', { pcrs: pins, roots: [sim.rootPem], WebSocket: ws, transport: 'data' });
      const err = (await client.fetch('/pay').then(
        () => new Error('fetch resolved'),
        (e: unknown) => e,
      )) as ClientError;
      expect(err.code).toBe('CLIENT_PROTOCOL');
      expect(err.message).not.toContain(SECRET.slice(0, 6));
      await client.close();
    }
  });

  it('exposes public_key, switches to bstr only when advertised, and passes WebSocket headers', async () => {
    for (const features of [undefined, ['bstr', 'future-thing']]) {
      const log: ClientMessage[] = [];
      const ctorArgs: unknown[][] = [];
      const encodings: string[] = [];
      const ws = scriptedWebSocket(
        {
          async onMessage(m, io) {
            if (m.type === 'RequestAttestation') await attest(io, features);
            else if (m.type === 'Data') io.reply({ type: 'Data', id: m.id, payload: new TextEncoder().encode('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok') });
          },
        },
        log,
        ctorArgs,
        encodings,
      );
      const client = await connect('ws://fake.test/', { pcrs: pins, roots: [sim.rootPem], WebSocket: ws, headers: { 'X-Enclave-Host': 'a.example' }, transport: 'data' });
      expect(client.enclavePublicKey).toEqual(Uint8Array.of(1, 2, 3));
      expect(client.features).toEqual(features ?? []);
      expect(await (await client.fetch('/x')).text()).toBe('ok');
      expect(ctorArgs[0]).toEqual(['ws://fake.test/', { headers: { 'X-Enclave-Host': 'a.example' } }]);
      expect(log[1]?.type).toBe('Data');
      expect(encodings[1]).toBe(features === undefined ? 'array' : 'bstr');
      await client.close();
    }
  });

  it('matches replies by id whatever their order, and fails requests the agent answers with Error', async () => {
    const log: ClientMessage[] = [];
    const held: { id: number; io: { reply(m: ServerMessage): void } }[] = [];
    const ws = scriptedWebSocket(
      {
        async onMessage(m, io) {
          if (m.type === 'RequestAttestation') await attest(io);
          else if (m.type === 'Data') {
            held.push({ id: m.id, io });
            if (held.length === 3) {
              // Reverse order; the middle one fails.
              for (const h of held.reverse()) {
                if (h.id === 2) h.io.reply({ type: 'Error', id: 2, message: 'app connection failed (ECONNREFUSED)' });
                else h.io.reply({ type: 'Data', id: h.id, payload: new TextEncoder().encode(`HTTP/1.1 200 OK\r\n\r\nreply ${h.id}`) });
              }
            }
          }
        },
      },
      log,
    );
    const client = await connect('ws://fake.test/', { pcrs: pins, roots: [sim.rootPem], WebSocket: ws });
    const results = await Promise.allSettled([client.fetch('/a'), client.fetch('/b'), client.fetch('/c')]);
    expect(await (results[0] as PromiseFulfilledResult<Response>).value.text()).toBe('reply 1');
    expect(((results[1] as PromiseRejectedResult).reason as ClientError).code).toBe('CLIENT_REMOTE_ERROR');
    expect(((results[1] as PromiseRejectedResult).reason as ClientError).remoteMessage).toBe('app connection failed (ECONNREFUSED)');
    expect(await (results[2] as PromiseFulfilledResult<Response>).value.text()).toBe('reply 3');
    expect(log.map((m) => m.type)).toEqual(['RequestAttestation', 'Data', 'Data', 'Data']);
    expect(log.slice(1).map((m) => (m as { id: number }).id)).toEqual([1, 2, 3]);
    await client.close();
  });

  it('shares one id counter between Data and OpenStream', async () => {
    const log: ClientMessage[] = [];
    const ws = scriptedWebSocket(
      {
        async onMessage(m, io) {
          if (m.type === 'RequestAttestation') await attest(io);
          else if (m.type === 'Data') io.reply({ type: 'Data', id: m.id, payload: new TextEncoder().encode('HTTP/1.1 204 No Content\r\n\r\n') });
          else if (m.type === 'OpenStream') {
            io.reply({ type: 'StreamData', id: m.id, payload: new TextEncoder().encode('pong') });
            io.reply({ type: 'StreamClose', id: m.id });
          }
        },
      },
      log,
    );
    const client = await connect('ws://fake.test/', { pcrs: pins, roots: [sim.rootPem], WebSocket: ws });
    await client.fetch('/a');
    const s = await client.openStream('ping');
    expect(await new Response(s.readable).text()).toBe('pong');
    s.closeWrite();
    await client.fetch('/b');
    const ids = log.filter((m) => m.type === 'Data' || m.type === 'OpenStream').map((m) => [m.type, (m as { id: number }).id]);
    expect(ids).toEqual([
      ['Data', 1],
      ['OpenStream', 2],
      ['Data', 3],
    ]);
    // Both directions over → StreamClose{Both} releases the stream on the agent.
    expect(log).toContainEqual({ type: 'StreamClose', id: 2, half: 'Both' });
    await client.close();
  });

  it('fails a request whose reply is not HTTP with CLIENT_PROTOCOL and keeps the session', async () => {
    const log: ClientMessage[] = [];
    const ws = scriptedWebSocket(
      {
        async onMessage(m, io) {
          if (m.type === 'RequestAttestation') await attest(io);
          else if (m.type === 'Data') io.reply({ type: 'Data', id: m.id, payload: new TextEncoder().encode(m.id === 1 ? 'garbage' : 'HTTP/1.1 200 OK\r\n\r\nfine') });
        },
      },
      log,
    );
    const client = await connect('ws://fake.test/', { pcrs: pins, roots: [sim.rootPem], WebSocket: ws });
    await expect(client.fetch('/a')).rejects.toMatchObject({ code: 'CLIENT_PROTOCOL' });
    expect(await (await client.fetch('/b')).text()).toBe('fine');
    await client.close();
  });

  it('a fetch re-run on a new session after the old one died under its send keeps its timeout and abort signal', async () => {
    for (const how of ['signal', 'timeout'] as const) {
      const first: { close(): void }[] = [];
      let openStreams = 0;
      let reached!: () => void;
      const retried = new Promise<void>((resolve) => (reached = resolve));
      const ws = scriptedWebSocket(
        {
          async onMessage(m, io) {
            if (m.type === 'RequestAttestation') {
              first.push(io);
              await attest(io, ['bstr']);
            } else if (m.type === 'OpenStream') {
              openStreams++;
              reached(); // and never answered
            }
          },
        },
        [],
      );
      const client = await connect('ws://fake.test/', { pcrs: pins, roots: [sim.rootPem], WebSocket: ws });
      // The socket is closing (readyState CLOSED) and its close event not yet delivered: the fetch's OpenStream
      // cannot be sent, and the request runs again on a fresh, verified session that never answers.
      first[0]!.close();
      const ctl = new AbortController();
      const settled = client.fetch('/x', how === 'signal' ? { signal: ctl.signal } : { timeoutMs: 100 }).then(
        () => 'resolved',
        (err: ClientError) => err.code,
      );
      await retried;
      if (how === 'signal') ctl.abort();
      const outcome = await Promise.race([settled, new Promise((resolve) => setTimeout(() => resolve('still pending after 5 s'), 5000))]);
      expect(outcome).toBe(how === 'signal' ? 'CLIENT_ABORTED' : 'CLIENT_TIMEOUT');
      expect(first.length).toBe(2);
      expect(openStreams).toBe(1);
      await client.close();
    }
  });
});

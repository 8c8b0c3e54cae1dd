// A small Noise NN initiator over any byte pipe (TCP socket or WebSocket), built only from src/ pieces:
// createHandshake (initiator), FrameReader, encodeFrame and the message codec. Plus test apps and a
// responder-on-TCP fixture.
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import type { CipherState } from '../../src/noise/cipher-state.ts';
import { createHandshake } from '../../src/noise/handshake.ts';
import type { NoisePrimitives } from '../../src/noise/primitives.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import type { ForwardContext, Forwarder } from '../../src/responder/forwarder.ts';
import { createResponder, type Responder, type ResponderOptions } from '../../src/responder/server.ts';
import type { SessionSummary } from '../../src/responder/session.ts';
import { listenTcp } from '../../src/transport/tcp.ts';
import type { Listener } from '../../src/transport/types.ts';
import { encodeFrame, FrameReader } from '../../src/wire/frames.ts';
import {
  decodeServerMessage,
  encodeClientMessage,
  type ByteEncoding,
  type ClientMessage,
  type ServerMessage,
} from '../../src/wire/messages.ts';

/** A byte pipe to the agent: TCP gives any chunking, the bridge needs one WS message per record. */
export interface Pipe {
  write(bytes: Uint8Array): void;
  onData(cb: (bytes: Uint8Array) => void): void;
  onClose(cb: () => void): void;
  close(): void;
}

export function tcpPipe(socket: net.Socket): Pipe {
  return {
    write: (b) => void socket.write(b),
    onData: (cb) => socket.on('data', cb),
    onClose: (cb) => socket.once('close', cb),
    close: () => socket.destroy(),
  };
}

export async function connectTcp(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  const socket = net.connect({ host, port });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

export async function wsPipe(url: string): Promise<Pipe> {
  const ws = new WebSocket(url);
  ws.binaryType = 'nodebuffer';
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return {
    write: (b) => ws.send(b, { binary: true }),
    onData: (cb) => ws.on('message', (data: Buffer) => cb(new Uint8Array(data))),
    onClose: (cb) => ws.once('close', cb),
    close: () => ws.terminate(),
  };
}

export interface Received {
  message: ServerMessage;
  encoding: ByteEncoding;
}

export interface TestClient {
  readonly handshakeHash: Uint8Array;
  readonly pipe: Pipe;
  /** Encrypts and sends one message (one write = one WS message through the bridge). */
  send(msg: ClientMessage, enc?: ByteEncoding): void;
  /** Encrypts raw plaintext (no CBOR check) into one frame. */
  sendPlaintext(pt: Uint8Array): void;
  /** The ciphertext a message would have, consuming a nonce (for tamper tests). */
  seal(msg: ClientMessage, enc?: ByteEncoding): Uint8Array;
  /** Next message (rejects after timeoutMs, or when the connection closes first). */
  next(timeoutMs?: number): Promise<Received>;
  /** Messages until `pred` matched (inclusive). */
  until(pred: (m: ServerMessage) => boolean, timeoutMs?: number): Promise<Received[]>;
  readonly closed: Promise<void>;
  readonly isClosed: boolean;
  close(): void;
}

export interface ClientOptions {
  primitives?: NoisePrimitives;
  ephemeralPrivateKey?: Uint8Array;
  /** Bytes written before hs1 (a PROXY v2 header). */
  preamble?: Uint8Array;
}

/** Runs the initiator handshake over `pipe` and returns a client that speaks frames. */
export async function handshake(pipe: Pipe, opts: ClientOptions = {}): Promise<TestClient> {
  const hs = createHandshake({ role: 'initiator', primitives: opts.primitives ?? nodePrimitives, ephemeralPrivateKey: opts.ephemeralPrivateKey });
  const reader = new FrameReader();
  const queue: Received[] = [];
  const waiters: { resolve: (r: Received) => void; reject: (e: Error) => void }[] = [];
  let recv: CipherState | null = null;
  let send: CipherState | null = null;
  let failure: Error | null = null;
  let isClosed = false;
  let hsDone: (() => void) | null = null;
  let hsFail: ((e: Error) => void) | null = null;
  const hsPromise = new Promise<void>((resolve, reject) => {
    hsDone = resolve;
    hsFail = reject;
  });
  const fail = (err: Error): void => {
    failure ??= err;
    for (const w of waiters.splice(0)) w.reject(failure);
    hsFail?.(failure);
  };
  let closedResolve!: () => void;
  const closed = new Promise<void>((r) => (closedResolve = r));
  pipe.onClose(() => {
    isClosed = true;
    fail(new Error('connection closed'));
    closedResolve();
  });
  pipe.onData((bytes) => {
    try {
      reader.push(bytes);
      if (recv === null) {
        const hs2 = reader.readExact(48);
        if (hs2 === null) return;
        hs.readMessage(hs2);
        const t = hs.split();
        recv = t.recv;
        send = t.send;
        hsDone?.();
      }
      for (let ct = reader.nextFrame(); ct !== null; ct = reader.nextFrame()) {
        const r = decodeServerMessage(recv.decrypt(ct), { copy: true });
        const w = waiters.shift();
        if (w) w.resolve(r);
        else queue.push(r);
      }
    } catch (err) {
      fail(err as Error);
    }
  });
  if (opts.preamble) pipe.write(opts.preamble);
  pipe.write(hs.writeMessage());
  await hsPromise;
  const seal = (msg: ClientMessage, enc: ByteEncoding = 'array'): Uint8Array => encodeFrame(send!.encrypt(encodeClientMessage(msg, enc)));
  const next = (timeoutMs = 10_000): Promise<Received> => {
    const r = queue.shift();
    if (r) return Promise.resolve(r);
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (x: Received) => {
          clearTimeout(timer);
          resolve(x);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const i = waiters.indexOf(w);
        if (i >= 0) waiters.splice(i, 1);
        reject(new Error(`no message within ${timeoutMs} ms`));
      }, timeoutMs);
      waiters.push(w);
    });
  };
  return {
    handshakeHash: hs.split().handshakeHash,
    pipe,
    send: (msg, enc) => pipe.write(seal(msg, enc)),
    sendPlaintext: (pt) => pipe.write(encodeFrame(send!.encrypt(pt))),
    seal,
    next,
    async until(pred, timeoutMs = 10_000) {
      const out: Received[] = [];
      for (;;) {
        const r = await next(timeoutMs);
        out.push(r);
        if (pred(r.message)) return out;
      }
    },
    closed,
    get isClosed() {
      return isClosed;
    },
    close: () => pipe.close(),
  };
}

export async function connectClient(port: number, opts: ClientOptions = {}): Promise<TestClient> {
  return handshake(tcpPipe(await connectTcp(port)), opts);
}

/** Resolves when the socket/pipe closes; rejects after timeoutMs. */
export function closedWithin(client: TestClient, timeoutMs = 5000): Promise<void> {
  return Promise.race([
    client.closed,
    new Promise<void>((_, reject) => setTimeout(() => reject(new Error(`still open after ${timeoutMs} ms`)), timeoutMs)),
  ]);
}

// -------------------------------------------------------------------------------------------------------------
// Fixtures

/** Wraps a forwarder to keep the app-side sockets and contexts it hands out. */
export function recording(inner: Forwarder): Forwarder & { sockets: net.Socket[]; contexts: ForwardContext[] } {
  const sockets: net.Socket[] = [];
  const contexts: ForwardContext[] = [];
  return {
    sockets,
    contexts,
    halfCloseData: inner.halfCloseData,
    async connect(ctx) {
      contexts.push(ctx);
      const s = (await inner.connect(ctx)) as net.Socket;
      sockets.push(s);
      return s;
    },
  };
}

export interface Agent {
  responder: Responder;
  listener: Listener;
  port: number;
  /** Server-side sockets, in accept order. */
  sockets: net.Socket[];
  closedSessions: SessionSummary[];
  close(): Promise<void>;
}

/** A responder behind a TCP listener on 127.0.0.1:0. */
export async function startTestAgent(opts: ResponderOptions): Promise<Agent> {
  const closedSessions: SessionSummary[] = [];
  const responder = createResponder({
    ...opts,
    onSessionClosed: (s) => {
      closedSessions.push(s);
      opts.onSessionClosed?.(s);
    },
  });
  const sockets: net.Socket[] = [];
  const listener = await listenTcp({ port: 0 }, {
    onConnection: (s: Duplex, info) => {
      sockets.push(s as net.Socket);
      responder.handle(s, info);
    },
  });
  return {
    responder,
    listener,
    port: listener.port!,
    sockets,
    closedSessions,
    async close() {
      await listener.close();
      await responder.close();
    },
  };
}

let simulator: Promise<NsmSimulator> | null = null;
export const IDENTITY = { agentVersion: 'test-agent', app: 'test-app', config: 'test-config' };

/** One NSM simulator per test file (its CA lives in a tmp dir). */
export function testSimulator(): Promise<NsmSimulator> {
  simulator ??= (async () => {
    const stateDir = await mkdtemp(path.join(os.tmpdir(), 'responder-nsm-'));
    return createNsmSimulator({ stateDir, identity: IDENTITY });
  })();
  return simulator;
}

export interface TestApp {
  port: number;
  server: net.Server;
  /** Server-side sockets accepted so far. */
  sockets: net.Socket[];
  close(): Promise<void>;
}

/** A TCP app on 127.0.0.1:0 (half-open capable) running `onSocket` for each connection. */
export async function startApp(onSocket: (s: net.Socket) => void, port = 0): Promise<TestApp> {
  const sockets: net.Socket[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    sockets.push(s);
    onSocket(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port }, resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    server,
    sockets,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Echoes everything; ends its side after the peer's EOF. */
export function startEchoApp(): Promise<TestApp> {
  return startApp((s) => s.pipe(s));
}

/** Reads the request to EOF, then answers `reply(request)` and closes. */
export function startReplyApp(reply: (req: Buffer) => Uint8Array | string | Promise<Uint8Array | string>): Promise<TestApp> {
  return startApp((s) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      void Promise.resolve(reply(Buffer.concat(chunks))).then((out) => s.end(out));
    });
  });
}

export function bytesOf(n: number, fill: number | ((i: number) => number)): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = typeof fill === 'number' ? fill : fill(i);
  return out;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 10 ms until true; rejects after timeoutMs. */
export async function waitFor(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

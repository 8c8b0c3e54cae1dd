// Fuzzing the responder's sessions (src/responder/server.ts → session.ts) end to end over in-process byte pipes:
// garbage instead of a handshake, every prefix of a valid hs1, and — after a real handshake — streams of frames
// where valid encrypted messages are mixed with corrupted ones (bit flips, bad lengths, random bytes, replays).
// Each session must end on its own (no hang), answer nothing that is not a valid hs2 / valid encrypted frame,
// answer nothing after the first bad frame, report a reason, and leave the responder serving other sessions.
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import pino from 'pino';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { createDuplexPair } from '../../src/http/duplex-pair.ts';
import type { CipherState } from '../../src/noise/cipher-state.ts';
import { createHandshake } from '../../src/noise/handshake.ts';
import { nodePrimitives } from '../../src/noise/suite-node.ts';
import type { ForwardContext, Forwarder } from '../../src/responder/forwarder.ts';
import { createResponder } from '../../src/responder/server.ts';
import type { SessionSummary } from '../../src/responder/session.ts';
import { equalBytes } from '../../src/util/bytes.ts';
import { encodeFrame, FrameReader } from '../../src/wire/frames.ts';
import { decodeServerMessage, encodeClientMessage, type ClientMessage, type ServerMessage } from '../../src/wire/messages.ts';
import { fuzzParams, fuzzTimeout } from './config.ts';
import { applyMutations, bytes, chunked, cuts, mutation, prefixes, type Mutation } from './mutate.ts';

const CASE_TIMEOUT_MS = 10_000;
const DOCUMENT = Uint8Array.of(0x84, 0x40, 0xa0, 0x40, 0x40);

/** A forwarder whose "app" answers every request with a fixed response once the request is complete. */
const forwarder: Forwarder = {
  connect(_ctx: ForwardContext) {
    const [session, app] = createDuplexPair();
    app.on('error', () => {});
    app.resume();
    app.on('end', () => app.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok'));
    return Promise.resolve(session);
  },
};

const summaries: SessionSummary[] = [];
const responder = createResponder({
  channel: 'public',
  nsm: { attest: () => Promise.resolve(DOCUMENT), random: (n) => Promise.resolve(new Uint8Array(randomBytes(n))) },
  forwarder,
  logger: pino({ level: 'silent' }),
  limits: { handshakeTimeoutMs: 5_000, idleTimeoutMs: 5_000 },
  onSessionClosed: (s) => summaries.push(s),
});

afterAll(async () => {
  await responder.close();
});

interface Conn {
  write(b: Uint8Array): void;
  end(): void;
  /** Bytes received so far. */
  received(): Buffer;
  /** Resolves when `n` bytes have arrived (false if the session ended first). */
  waitFor(n: number): Promise<boolean>;
  /** Resolves with everything once the session has closed the pipe and reported its summary. */
  closed(): Promise<{ bytes: Buffer; summary: SessionSummary }>;
}

function connect(): Conn {
  const [client, server] = createDuplexPair();
  client.on('error', () => {});
  const chunks: Buffer[] = [];
  let size = 0;
  let ended = false;
  let wake: (() => void)[] = [];
  const notify = () => {
    for (const w of wake.splice(0)) w();
  };
  client.on('data', (c: Buffer) => {
    chunks.push(c);
    size += c.length;
    notify();
  });
  const onEnd = () => {
    ended = true;
    notify();
  };
  client.on('end', onEnd);
  client.on('close', onEnd);
  const seen = summaries.length;
  responder.handle(server, { remote: 'fuzz', transport: 'tcp' });
  const until = async (cond: () => boolean, what: string): Promise<void> => {
    const deadline = Date.now() + CASE_TIMEOUT_MS;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`session hung: ${what} within ${CASE_TIMEOUT_MS} ms`);
      await new Promise<void>((resolve) => {
        wake.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  };
  return {
    write: (b) => void client.write(b),
    end: () => void client.end(),
    received: () => Buffer.concat(chunks),
    async waitFor(n) {
      await until(() => size >= n || ended, `${n} bytes`);
      return size >= n;
    },
    async closed() {
      await until(() => ended, 'the pipe closing');
      await until(() => summaries.length > seen, 'the session summary');
      wake = [];
      return { bytes: Buffer.concat(chunks), summary: summaries[summaries.length - 1]! };
    },
  };
}

/** An honest initiator: handshake, then encrypted messages; decrypts the responder's frames. */
async function handshake(conn: Conn): Promise<{ send: CipherState; recv: CipherState } | null> {
  const hs = createHandshake({ role: 'initiator', primitives: nodePrimitives });
  conn.write(hs.writeMessage());
  if (!(await conn.waitFor(48))) return null;
  hs.readMessage(conn.received().subarray(0, 48));
  const t = hs.split();
  return { send: t.send, recv: t.recv };
}

/** Decrypts and decodes every frame after hs2; throws on anything that is not a valid server message. */
function serverMessages(bytes: Buffer, recv: CipherState): ServerMessage[] {
  const reader = new FrameReader();
  reader.push(bytes.subarray(48));
  reader.end();
  const out: ServerMessage[] = [];
  for (let f = reader.nextFrame(); f !== null; f = reader.nextFrame()) out.push(decodeServerMessage(recv.decrypt(f), { copy: true }).message);
  return out;
}

const CLOSE_REASONS = new Set(['client-closed', 'handshake-failed', 'receive-failed', 'transport-error']);

// --- frame streams --------------------------------------------------------------------------------------------

const clientMessage: fc.Arbitrary<ClientMessage> = fc.oneof(
  fc.constant({ type: 'RequestAttestation' as const }),
  fc.record({ type: fc.constant('Data' as const), id: fc.integer({ min: 1, max: 1000 }), payload: fc.constant(new TextEncoder().encode('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n')) }),
  fc.record({ type: fc.constant('StreamData' as const), id: fc.integer({ min: 1, max: 1000 }), payload: bytes(20) }),
  fc.constant({ type: 'GetControlNonce' as const }), // wrong channel: refused and closed
);

type Step = { kind: 'valid'; msg: ClientMessage } | { kind: 'corrupt'; muts: Mutation[] } | { kind: 'random'; bytes: Uint8Array } | { kind: 'replay' };
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: clientMessage.map((msg) => ({ kind: 'valid' as const, msg })) },
  { weight: 1, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }).map((muts) => ({ kind: 'corrupt' as const, muts })) },
  { weight: 1, arbitrary: bytes(60).map((b) => ({ kind: 'random' as const, bytes: b })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'replay' as const }) },
);

describe('responder sessions under fuzzing', () => {
  it(
    'closes a session fed garbage instead of a handshake, answering at most a 48-byte hs2',
    async () => {
      await fc.assert(
        fc.asyncProperty(bytes(200), cuts, async (input, cutPoints) => {
          const conn = connect();
          for (const c of chunked(input, cutPoints)) conn.write(c);
          conn.end();
          const { bytes: out, summary } = await conn.closed();
          if (out.length !== 0 && out.length !== 48) throw new Error(`answered ${out.length} bytes to garbage`);
          if (input.length < 32 && out.length !== 0) throw new Error('answered before a whole hs1');
          if (!CLOSE_REASONS.has(summary.reason)) throw new Error(`closed with reason ${summary.reason}`);
        }),
        fuzzParams(0.2),
      );
    },
    fuzzTimeout(120_000),
  );

  it(
    'closes a session at every proper prefix of a valid hs1 without answering',
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.constant(null), async () => {
          const hs1 = createHandshake({ role: 'initiator', primitives: nodePrimitives }).writeMessage();
          for (const prefix of prefixes(hs1)) {
            const conn = connect();
            conn.write(prefix);
            conn.end();
            const { bytes: out, summary } = await conn.closed();
            if (out.length !== 0 || summary.reason !== 'client-closed') throw new Error(`prefix ${prefix.length}: ${out.length} bytes, ${summary.reason}`);
          }
        }),
        fuzzParams(0.01),
      );
    },
    fuzzTimeout(120_000),
  );

  it(
    'answers valid frames until the first bad one, then closes without answering it',
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 6 }), async (steps) => {
          const conn = connect();
          const keys = await handshake(conn);
          if (keys === null) throw new Error('no hs2 for an honest hs1');
          let sentValid = 0;
          /** A frame that cannot be read was sent: the session must end on it (not on our EOF). */
          let bad = false;
          /** A message of the wrong channel was sent: refused, then nothing more is answered. */
          let refused = false;
          let last: Uint8Array | null = null;
          for (const s of steps) {
            let frame: Uint8Array;
            if (s.kind === 'valid') {
              frame = encodeFrame(keys.send.encrypt(encodeClientMessage(s.msg)));
              if (!bad && !refused) sentValid++;
              if (s.msg.type === 'GetControlNonce') refused = true; // answered with a refusal, then closed
            } else if (s.kind === 'corrupt') {
              const good = encodeFrame(keys.send.encrypt(encodeClientMessage({ type: 'RequestAttestation' })));
              frame = applyMutations(good, s.muts);
              if (frame.length === 0) continue; // nothing sent
              // (a mutation may leave the whole good frame in front: that one is still answered)
              if (frame.length >= good.length && equalBytes(frame.subarray(0, good.length), good) && !bad && !refused) sentValid++;
              if (!equalBytes(frame, good)) bad = true;
            } else if (s.kind === 'random') {
              if (s.bytes.length === 0) continue;
              frame = s.bytes;
              bad = true;
            } else {
              if (last === null) continue;
              frame = last; // a replayed frame: its nonce is stale
              bad = true;
            }
            last = frame;
            conn.write(frame);
          }
          conn.end();
          const { bytes: out, summary } = await conn.closed();
          const replies = serverMessages(out, keys.recv);
          if (!CLOSE_REASONS.has(summary.reason) && summary.reason !== 'wrong-channel') throw new Error(`closed with reason ${summary.reason}`);
          if (bad && !refused && summary.reason === 'client-closed') throw new Error('a bad frame did not end the session');
          // One reply per valid request at most (a Data reply, an Attestation, an Error for an unknown stream,
          // a ControlResult refusal), and none for anything after the first bad frame.
          if (replies.length > sentValid) throw new Error(`${replies.length} replies to ${sentValid} valid frames`);
        }),
        fuzzParams(0.2),
      );
    },
    fuzzTimeout(120_000),
  );

  it('keeps serving: an honest session attests after all the hostile ones, and none is left open', async () => {
    const conn = connect();
    const keys = await handshake(conn);
    expect(keys).not.toBeNull();
    conn.write(encodeFrame(keys!.send.encrypt(encodeClientMessage({ type: 'RequestAttestation' }))));
    await conn.waitFor(48 + 4 + 16 + 1);
    conn.end();
    const { bytes: out } = await conn.closed();
    const [reply] = serverMessages(out, keys!.recv);
    expect(reply?.type).toBe('Attestation');
    expect(equalBytes((reply as { data: Uint8Array }).data, DOCUMENT)).toBe(true);
    // The slot comes back when the agent's socket is closed (after its lingering close), a turn after ours may be.
    await vi.waitFor(() => expect(responder.sessionCount).toBe(0), { timeout: 5_000 });
  });
});

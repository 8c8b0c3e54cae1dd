// A session's graceful close lingers as the HTTP paths do (src/transport/lingering-close.ts): once its final
// frame is flushed the agent sends FIN, reads and drops what the client still sends, and closes at the client's
// FIN or a bound. A socket closed while the client still sends makes the kernel answer RST and drop what of the
// final frames is still in its send queue. The lingering socket keeps its session slot until it is closed; a
// drain waits for it within its bound, and a stop cuts it.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';
import { createRawForwarder } from '../../src/responder/raw-forwarder.ts';
import { encodeProxyV2 } from '../../src/transport/proxy-v2.ts';
import { utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { connectTcp, handshake, startReplyApp, startTestAgent, tcpPipe, testSimulator, waitFor, type TestApp, type TestClient } from './helpers.ts';

const REFUSAL: ServerMessage = { type: 'ControlResult', success: false, message: 'message not accepted on the public channel' };
const REPLY = 60_000;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let sim: NsmSimulator;
let app: TestApp;

beforeAll(async () => {
  sim = await testSimulator();
  app = await startReplyApp(() => Buffer.alloc(REPLY, 0x01));
});

afterAll(async () => {
  await app.close();
});

const forwarder = () => createRawForwarder({ appPort: app.port, halfCloseData: true });

/** A client whose socket does not end its side when the agent's does (a client that never sends FIN). */
async function halfOpenClient(port: number, preamble?: Uint8Array): Promise<{ sock: net.Socket; c: TestClient; ended: Promise<void> }> {
  const sock = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.once('connect', r));
  const ended = new Promise<void>((r) => sock.once('end', r));
  return { sock, c: await handshake(tcpPipe(sock), preamble === undefined ? {} : { preamble }), ended };
}

describe('a session that closes after its final frame lingers', { timeout: 30_000 }, () => {
  it('a slow reader that keeps sending after the close gets every reply and the final frame', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: forwarder() });
    const sock = await connectTcp(agent.port);
    const c = await handshake(tcpPipe(sock));
    // A slow reader: nothing is read while ~1 MiB of replies is handed to the kernel (most of it stays in the
    // agent's send queue), then the message that the public channel refuses with a final frame.
    sock.pause();
    const n = 16;
    for (let id = 1; id <= n; id++) c.send({ type: 'Data', id, payload: utf8.encode('go') });
    const server = agent.sockets[0]!;
    await waitFor(() => server.bytesWritten > n * REPLY && server.writableLength === 0, 10_000, 'the replies handed to the kernel');
    c.send({ type: 'GetControlNonce' });
    // The client goes on sending (it has not read that the session is over) for longer than the old fixed 2 s.
    let sending = true;
    sock.once('end', () => (sending = false));
    sock.once('close', () => (sending = false));
    const ticker = setInterval(() => {
      if (sending) sock.write(Buffer.alloc(512, 0x7a));
    }, 50);
    try {
      await sleep(2500);
      sock.resume();
      const got = await c.until((m) => m.type === 'ControlResult', 10_000);
      expect(got.filter((r) => r.message.type === 'Data').length).toBe(n);
      expect(got.at(-1)!.message).toEqual(REFUSAL);
      await c.closed;
    } finally {
      clearInterval(ticker);
      sock.destroy();
    }
    await waitFor(() => agent.responder.sessionCount === 0, 5000, 'the session released');
    expect(agent.closedSessions.map((s) => s.reason)).toEqual(['wrong-channel']);
    await agent.close();
  });

  it('keeps the session slot until the lingering socket closes, then frees it', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: forwarder(), limits: { maxSessions: 1 } });
    const { sock, c, ended } = await halfOpenClient(agent.port);
    c.send({ type: 'GetControlNonce' });
    expect((await c.next()).message).toEqual(REFUSAL);
    await ended; // the agent's FIN: the session is over, its socket lingers
    expect(agent.closedSessions.map((s) => s.reason)).toEqual(['wrong-channel']);
    expect(agent.responder.sessionCount).toBe(1);
    // The slot is still taken: one more connection is refused.
    const refusedBefore = agent.responder.counters.refusedSessions;
    const other = await connectTcp(agent.port);
    await new Promise<void>((r) => other.once('close', () => r()));
    expect(agent.responder.counters.refusedSessions).toBe(refusedBefore + 1);
    // The client's FIN ends the linger: the socket closes and the slot is free again.
    sock.end();
    await new Promise<void>((r) => sock.once('close', () => r()));
    await waitFor(() => agent.responder.sessionCount === 0, 5000, 'the slot freed');
    const next = await handshake(tcpPipe(await connectTcp(agent.port)));
    next.send({ type: 'Data', id: 1, payload: utf8.encode('x') });
    expect((await next.next()).message.type).toBe('Data');
    next.close();
    await agent.close();
  });

  it('keeps the slot of the client address (maxSessionsPerClient) until the lingering socket closes', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: forwarder(), acceptProxyProtocol: true, limits: { maxSessionsPerClient: 1 } });
    const from = encodeProxyV2({ source: { address: '203.0.113.7', port: 4000 }, destination: { address: '10.0.0.1', port: 443 } });
    const { sock, c, ended } = await halfOpenClient(agent.port, from);
    c.send({ type: 'GetControlNonce' });
    expect((await c.next()).message).toEqual(REFUSAL);
    await ended;
    // Same address while the first connection lingers: refused after its PROXY header.
    const second = await connectTcp(agent.port);
    second.write(from);
    await new Promise<void>((r) => second.once('close', () => r()));
    expect(agent.responder.counters.refusedPerClient).toBe(1);
    sock.end();
    await waitFor(() => agent.responder.sessionCount === 0, 5000, 'the slot freed');
    const third = await handshake(tcpPipe(await connectTcp(agent.port)), { preamble: from });
    third.send({ type: 'Data', id: 1, payload: utf8.encode('x') });
    expect((await third.next()).message.type).toBe('Data');
    third.close();
    await agent.close();
  });

  it('a drain waits for a lingering socket within its bound, then cuts it', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: forwarder() });
    const { sock, c, ended } = await halfOpenClient(agent.port);
    c.send({ type: 'GetControlNonce' });
    expect((await c.next()).message).toEqual(REFUSAL);
    await ended;
    expect(agent.responder.sessionCount).toBe(1);
    await agent.listener.close();
    await agent.responder.drain(100);
    // Drained: nothing of the session is left, its socket included.
    expect(agent.sockets[0]!.destroyed).toBe(true);
    expect(agent.responder.sessionCount).toBe(0);
    sock.destroy();
    await agent.responder.close();
  });

  it('close() cuts a lingering socket', async () => {
    const agent = await startTestAgent({ nsm: sim, channel: 'public', forwarder: forwarder() });
    const { sock, c, ended } = await halfOpenClient(agent.port);
    c.send({ type: 'GetControlNonce' });
    expect((await c.next()).message).toEqual(REFUSAL);
    await ended;
    await agent.close();
    expect(agent.sockets[0]!.destroyed).toBe(true);
    expect(agent.responder.sessionCount).toBe(0);
    sock.destroy();
  });
});

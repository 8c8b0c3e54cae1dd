// bridge.close() cuts connections that have not upgraded yet — a TCP connection that sent nothing, one stopped
// mid TLS handshake, one with half an upgrade head — instead of leaving them to the handshake timeout (20 s
// here): close() resolves and their sockets are gone. An upgraded WebSocket still gets its 1001 close.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { startBridge, type Bridge } from '../../src/host/bridge.ts';
import { CloseCode } from '../../src/host/close-codes.ts';
import { startFakeAgent } from './fake-agent.ts';
import { selfSignedCert } from './self-signed.ts';
import { TestClient } from './ws-client.ts';

const HALF_AN_UPGRADE = 'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const until = async (pred: () => boolean): Promise<void> => {
  while (!pred()) await sleep(10);
};

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Resolves when `socket` closes (the bridge cut it). */
function closeOf(socket: Socket): Promise<'closed'> {
  socket.on('error', () => {});
  cleanups.push(() => void socket.destroy());
  return new Promise((resolve) => socket.once('close', () => resolve('closed')));
}

describe('bridge.close() with connections not yet upgraded', () => {
  it.each(['ws', 'wss'] as const)('%s://: cuts them and resolves, long before the handshake timeout', async (scheme) => {
    const agent = await startFakeAgent();
    cleanups.push(() => agent.close());
    const tls = scheme === 'wss' ? await selfSignedCert() : undefined;
    const bridge: Bridge = await startBridge({
      listen: { host: '127.0.0.1', port: 0 },
      target: { kind: 'tcp', host: '127.0.0.1', port: agent.port },
      handshakeTimeoutMs: 20_000,
      ...(tls === undefined ? {} : { tls }),
    });
    cleanups.push(() => bridge.close());
    const port = Number(new URL(bridge.url).port);

    const upgraded = await TestClient.open(bridge.url, tls === undefined ? {} : { ca: tls.cert });
    cleanups.push(() => void upgraded.ws.terminate());
    const silent = connect(port, '127.0.0.1');
    const held: Promise<'closed'>[] = [closeOf(silent)];
    if (tls === undefined) {
      const partial = connect(port, '127.0.0.1', () => partial.write(HALF_AN_UPGRADE));
      held.push(closeOf(partial));
    } else {
      // Mid TLS handshake: the ClientHello's first bytes only.
      const midHandshake = connect(port, '127.0.0.1', () => midHandshake.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])));
      held.push(closeOf(midHandshake));
      const partial = tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }, () => partial.write(HALF_AN_UPGRADE));
      held.push(closeOf(partial));
    }
    await until(() => bridge.pendingUpgrades === held.length);

    let timer: NodeJS.Timeout | undefined;
    // A bound on this test's wait (not a performance check): the handshake timeout is 20 s, a hang would reach it.
    const stillWaiting = new Promise<'still waiting after 5 s'>((resolve) => (timer = setTimeout(() => resolve('still waiting after 5 s'), 5_000)));
    const outcome = await Promise.race([Promise.all([bridge.close(), ...held]).then(() => 'closed and cut'), stillWaiting]);
    clearTimeout(timer);
    expect(outcome).toBe('closed and cut');
    // The bridge's own count lets go of them too (its sockets' 'close' may come after the clients').
    await until(() => bridge.pendingUpgrades === 0);
    expect((await upgraded.closed).code).toBe(CloseCode.GOING_AWAY);
  });
});

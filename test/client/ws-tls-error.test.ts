// A wss:// bridge (or a MITM in front of it) that sends a corrupt TLS record fails connect() at once with
// CLIENT_CONNECT_FAILED naming the TLS error, instead of leaving undici's WebSocket CONNECTING until
// connectTimeoutMs (Node does not destroy an established TLS socket on a record error; undici waits for 'close').
import { createHash } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError, connect } from '../../src/client/node.ts';
import { selfSignedCert } from '../host/self-signed.ts';

/** A TLS application-data record that no key decrypts. */
const GARBAGE_RECORD = Buffer.concat([Buffer.from([0x17, 0x03, 0x03, 0x00, 0x40]), Buffer.alloc(64, 0xab)]);
const PINS = { PCR0: '00'.repeat(48), PCR1: '00'.repeat(48), PCR2: '00'.repeat(48) };

type When = 'before the upgrade answer' | 'after the 101';
let when: When = 'before the upgrade answer';
let server: net.Server;
let port: number;
let ca: string;
let agent: Agent;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  const { cert, key } = await selfSignedCert();
  ca = cert;
  server = net.createServer((raw) => {
    sockets.add(raw);
    raw.on('error', () => {});
    raw.on('close', () => sockets.delete(raw));
    const t = new tls.TLSSocket(raw, { isServer: true, cert, key });
    t.on('error', () => {});
    // Written under TLS, on the raw TCP socket: the client's TLS layer is what must fail.
    t.once('secure', () => when === 'before the upgrade answer' && raw.write(GARBAGE_RECORD));
    t.once('data', (d: Buffer) => {
      if (when !== 'after the 101') return;
      const wsKey = /sec-websocket-key: *([^\r]+)\r\n/i.exec(d.toString('latin1'))?.[1] ?? '';
      const accept = createHash('sha1').update(`${wsKey}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      t.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`, () => raw.write(GARBAGE_RECORD));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
  agent = new Agent({ connect: { ca } });
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await agent.close();
  await new Promise((resolve) => server.close(resolve));
});

describe('wss:// with a corrupt TLS record', () => {
  it.each<When>(['before the upgrade answer', 'after the 101'])('%s: CLIENT_CONNECT_FAILED naming the TLS error, long before connectTimeoutMs', async (w) => {
    when = w;
    let timer: NodeJS.Timeout | undefined;
    // A bound on this test's wait (not a performance check): connectTimeoutMs is 20 s, a hang would reach it.
    const stillWaiting = new Promise<'still waiting after 5 s'>((resolve) => (timer = setTimeout(() => resolve('still waiting after 5 s'), 5_000)));
    const attempt = connect(`wss://127.0.0.1:${port}/`, { pcrs: PINS, dispatcher: agent, connectTimeoutMs: 20_000, reconnect: false }).then(
      (client) => client.close().then(() => 'connected'),
      (err: unknown) => err,
    );
    const outcome = await Promise.race([attempt, stillWaiting]);
    clearTimeout(timer);
    expect(outcome).toBeInstanceOf(ClientError);
    expect((outcome as ClientError).code).toBe('CLIENT_CONNECT_FAILED');
    expect((outcome as ClientError).message).toMatch(/: the connection failed \(ERR_SSL_[A-Z_]+\)$/);
  });
});

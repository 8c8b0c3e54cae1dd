// [egress] sni_check = true: a CONNECT to a name carries TLS for that name only. Real TLS (node:tls client and
// server) through the proxy: the right SNI completes a handshake with the server; another name sharing the
// address (a CDN front), or no SNI, is cut before any byte reaches the server.
import type net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sniFromClientHello } from '../../src/egress/sni.ts';
import { selfSignedCert } from '../host/self-signed.ts';
import { connectVia, startStack, startTestDns, type Stack, type TestDns } from './helpers.ts';

let dns: TestDns;
let stack: Stack;
let server: tls.Server;
let port: number;
let bytesAtServer = 0;

beforeAll(async () => {
  const { cert, key } = await selfSignedCert('ok.test');
  server = tls.createServer({ cert, key }, (s) => {
    s.on('error', () => {});
    s.end('hello over tls\n');
  });
  server.on('connection', (raw: net.Socket) => raw.on('data', (c: Buffer) => (bytesAtServer += c.length)));
  await new Promise<void>((r) => server.listen({ host: '127.0.0.2', port: 0 }, () => r()));
  port = (server.address() as net.AddressInfo).port;
  dns = await startTestDns({ 'ok.test': ['127.0.0.2'], 'front.test': ['127.0.0.2'] });
  // 127.0.0.2 is loopback: the IP entry lets the names reach it on the server's port (and only there)
  stack = await startStack([`ok.test:${port}`, `front.test:${port}`, `127.0.0.2:${port}`], dns.port, { sni_check: true });
});
afterAll(async () => {
  await stack?.close();
  server?.close();
  await dns?.close();
});

/** What the TLS client read before its connection ended ('' when cut during the handshake). */
function tlsThrough(target: string, servername: string): Promise<string> {
  return connectVia(Number(new URL(stack.egress.proxyUrl).port), target).then(
    ({ status, socket }) =>
      new Promise((resolve) => {
        expect(status).toBe(200);
        socket.resume();
        // servername '' sends no SNI extension at all
        const t = tls.connect({ socket, servername, rejectUnauthorized: false });
        let got = '';
        t.on('data', (c: Buffer) => (got += c.toString()));
        t.on('end', () => resolve(got));
        t.on('close', () => resolve(got));
        t.on('error', () => {});
      }),
  );
}

describe('sni_check', () => {
  it('passes a TLS session whose SNI is the CONNECT name', async () => {
    expect(await tlsThrough(`ok.test:${port}`, 'ok.test')).toBe('hello over tls\n');
  });

  it('cuts a session for another name on the same address, and one without SNI, before the server sees a byte', async () => {
    const before = bytesAtServer;
    expect(await tlsThrough(`ok.test:${port}`, 'front.test')).toBe('');
    expect(await tlsThrough(`ok.test:${port}`, '')).toBe('');
    expect(bytesAtServer).toBe(before);
    const denied = stack.decisions.filter((d) => !d.allowed).map((d) => d.reason);
    expect(denied).toEqual(expect.arrayContaining([expect.stringMatching(/SNI front\.test is not ok\.test/), expect.stringMatching(/no TLS SNI/)]));
  });

  it('records a refused SNI cut to 253 name characters (a 60,000-byte SNI with a line break in it)', async () => {
    // Failed before the fix: the whole SNI went into the reason, so into the host's trx record and warn log.
    const sni = 'x'.repeat(20_000) + '\n{"forged":"line"}\u0000' + 'y'.repeat(40_000);
    const { status, socket } = await connectVia(Number(new URL(stack.egress.proxyUrl).port), `ok.test:${port}`);
    expect(status).toBe(200);
    const seen = stack.decisions.length;
    socket.on('error', () => {});
    socket.resume();
    socket.write(clientHello(sni));
    await new Promise((r) => {
      socket.once('end', r);
      socket.once('close', r);
    });
    socket.destroy();
    await waitFor(() => stack.decisions.length > seen);
    const reason = stack.decisions.slice(seen).find((d) => !d.allowed)!.reason!;
    expect(reason).toBe(`TLS SNI ${'x'.repeat(253)} is not ok.test`);
    const rec = stack.records.at(-1) as { reason: string };
    expect(rec.reason).toBe(reason);
  });

  it('reads the server name from a ClientHello, and nothing from other bytes', () => {
    const hello = Buffer.from(
      // handshake type 1, length, version 0303, 32-byte random, empty session id, one suite, null compression,
      // extensions: server_name (0) with one host_name "a.example"
      '0100003a0303' + '00'.repeat(32) + '00' + '0002c02f' + '0100' + '000e' + '0000000a0008000005612e6578',
      'hex',
    );
    expect(sniFromClientHello(hello)).toEqual({ kind: 'not-tls' }); // the name runs past its extension
    const good = Buffer.from('0100003e0303' + '00'.repeat(32) + '00' + '0002c02f' + '0100' + '0012' + '0000000e000c0000096132657861' + '6d706c65', 'hex');
    expect(sniFromClientHello(good)).toEqual({ kind: 'sni', name: 'a2example' });
    expect(sniFromClientHello(Buffer.from('GET / HTTP/1.1\r\n'))).toEqual({ kind: 'not-tls' });
  });

  it('reads the outer SNI of a ClientHello with the ECH extension (Chromium sends it in every TLS 1.3 hello), and of one cut after the SNI', () => {
    const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
    const payload = Buffer.alloc(40, 9);
    const ech = Buffer.concat([u16(0xfe0d), u16(payload.length), payload]);
    const record = clientHello('ok.test', ech);
    expect(sniFromClientHello(record.subarray(5))).toEqual({ kind: 'sni', name: 'ok.test' });
    // A hello split across records: the first one ends inside the extension after server_name.
    expect(sniFromClientHello(record.subarray(5, record.length - 20))).toEqual({ kind: 'sni', name: 'ok.test' });
  });
});

/** A TLS record holding a ClientHello that names `sni` (any bytes, up to 64 KiB), then the extensions `after`. */
function clientHello(sni: string, after: Buffer = Buffer.alloc(0)): Buffer {
  const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
  const name = Buffer.from(sni, 'latin1');
  const entry = Buffer.concat([Buffer.from([0]), u16(name.length), name]);
  const list = Buffer.concat([u16(entry.length), entry]);
  const ext = Buffer.concat([u16(0), u16(list.length), list, after]);
  const body = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32, 7), Buffer.from([0]), u16(2), Buffer.from([0x13, 0x01]), Buffer.from([1, 0]), u16(ext.length), ext]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([0x16, 3, 1]), u16(hs.length), hs]);
}

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!cond()) throw new Error('timed out waiting for a condition');
}

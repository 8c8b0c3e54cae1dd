// Attested certificates for the client tests, built here independently of src/ingress following the documented
// format (src/ingress/attested-cert.ts header, TLS-INGRESS.md §1.4): a P-384 self-signed leaf, SAN =
// [`<host>`, `<lowercase hex of the COSE_Sign1>.<host>`], the document's user_data = the leaf's SPKI DER.
import { generateKeyPairSync, randomBytes, webcrypto, type KeyObject } from 'node:crypto';
import net from 'node:net';
import { TLSSocket } from 'node:tls';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import type { NsmSimulator } from '../../src/attestation/simulator.ts';

const engine = new pkijs.CryptoEngine({ name: 'test-certs', crypto: webcrypto as Crypto });

export interface TestKey {
  spkiDer: Uint8Array;
  keyPem: string;
  privateKey: KeyObject;
}

export function p384Key(): TestKey {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  return {
    spkiDer: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    privateKey,
  };
}

export function pem(der: Uint8Array): string {
  return `-----BEGIN CERTIFICATE-----\n${Buffer.from(der).toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
}

/** A self-signed leaf for `key` with the given dNSNames (the document goes in as `<hex>.<host>`). */
export async function buildCert(key: TestKey, dnsNames: string[], notAfter = new Date(Date.now() + 3 * 3600_000)): Promise<Uint8Array> {
  const cert = new pkijs.Certificate();
  cert.version = 2;
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 1;
  cert.serialNumber = new asn1js.Integer({ valueHex: serial });
  const name = new pkijs.RelativeDistinguishedNames({
    typesAndValues: [new pkijs.AttributeTypeAndValue({ type: '2.5.4.3', value: new asn1js.Utf8String({ value: (dnsNames[0] ?? 'test').slice(0, 64) }) })],
  });
  cert.subject = name;
  cert.issuer = name;
  cert.notBefore.value = new Date(Date.now() - 10_000);
  cert.notAfter.value = notAfter;
  cert.subjectPublicKeyInfo = new pkijs.PublicKeyInfo({ schema: asn1js.fromBER(key.spkiDer.slice().buffer).result });
  cert.extensions = [
    new pkijs.Extension({ extnID: '2.5.29.19', critical: false, extnValue: new pkijs.BasicConstraints({}).toSchema().toBER(false) }),
    new pkijs.Extension({
      extnID: '2.5.29.17',
      critical: false,
      extnValue: new pkijs.GeneralNames({ names: dnsNames.map((value) => new pkijs.GeneralName({ type: 2, value })) }).toSchema().toBER(false),
    }),
  ];
  const pkcs8 = key.privateKey.export({ type: 'pkcs8', format: 'der' });
  const signer = await webcrypto.subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve: 'P-384' }, false, ['sign']);
  await cert.sign(signer as CryptoKey, 'SHA-384', engine);
  return new Uint8Array(cert.toSchema(true).toBER(false));
}

/**
 * Evervault's shape (TLS-INGRESS.md §1.1): the leaf is issued by a separate RSA CA (sha256WithRSAEncryption),
 * subject C=IE/ST=DUB/O=Evervault/CN=<first host>, and the SAN has the hex document under EVERY host name next to
 * the plain names: [h1, <hex>.h1, h2, <hex>.h2].
 */
export async function evervaultShapedCert(sim: NsmSimulator, hosts: string[]): Promise<{ der: Uint8Array; key: TestKey; document: Uint8Array }> {
  const key = p384Key();
  const document = await sim.attest({ userData: key.spkiDer, nonce: new Uint8Array(randomBytes(256)) });
  const hexDoc = Buffer.from(document).toString('hex');
  const ca = (await webcrypto.subtle.generateKey(
    { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    false,
    ['sign', 'verify'],
  )) as CryptoKeyPair;
  const attr = (type: string, value: string) => new pkijs.AttributeTypeAndValue({ type, value: new asn1js.Utf8String({ value }) });
  const cert = new pkijs.Certificate();
  cert.version = 2;
  cert.serialNumber = new asn1js.Integer({ valueHex: randomBytes(20).fill(0x1a, 0, 1) });
  cert.issuer = new pkijs.RelativeDistinguishedNames({ typesAndValues: [attr('2.5.4.6', 'IE'), attr('2.5.4.10', 'Evervault'), attr('2.5.4.3', 'cages.evervault.com')] });
  cert.subject = new pkijs.RelativeDistinguishedNames({
    typesAndValues: [attr('2.5.4.6', 'IE'), attr('2.5.4.8', 'DUB'), attr('2.5.4.10', 'Evervault'), attr('2.5.4.3', hosts[0]!)],
  });
  cert.notBefore.value = new Date(Date.now() - 10_000);
  cert.notAfter.value = new Date(Date.now() + 365 * 86_400_000);
  cert.subjectPublicKeyInfo = new pkijs.PublicKeyInfo({ schema: asn1js.fromBER(key.spkiDer.slice().buffer).result });
  const ku = new asn1js.BitString({ valueHex: Uint8Array.of(0xe0), unusedBits: 5 });
  cert.extensions = [
    new pkijs.Extension({ extnID: '2.5.29.19', critical: false, extnValue: new pkijs.BasicConstraints({}).toSchema().toBER(false) }),
    new pkijs.Extension({ extnID: '2.5.29.15', critical: true, extnValue: ku.toBER(false) }),
    new pkijs.Extension({
      extnID: '2.5.29.17',
      critical: false,
      extnValue: new pkijs.GeneralNames({ names: hosts.flatMap((h) => [new pkijs.GeneralName({ type: 2, value: h }), new pkijs.GeneralName({ type: 2, value: `${hexDoc}.${h}` })]) })
        .toSchema()
        .toBER(false),
    }),
  ];
  await cert.sign(ca.privateKey, 'SHA-256', engine);
  return { der: new Uint8Array(cert.toSchema(true).toBER(false)), key, document };
}

export interface AttestedCert {
  der: Uint8Array;
  pem: string;
  key: TestKey;
  document: Uint8Array;
}

/**
 * An attested certificate from the simulator. `userData` overrides the SPKI put in the document (tampering);
 * `nonce` is the document's nonce (default 32 random bytes).
 */
export async function attestedCert(sim: NsmSimulator, host = 'localhost', opts: { userData?: Uint8Array; nonce?: Uint8Array; key?: TestKey } = {}): Promise<AttestedCert> {
  const key = opts.key ?? p384Key();
  const document = await sim.attest({ userData: opts.userData ?? key.spkiDer, nonce: opts.nonce ?? new Uint8Array(randomBytes(32)) });
  const der = await buildCert(key, [host, `${Buffer.from(document).toString('hex')}.${host}`]);
  return { der, pem: pem(der), key, document };
}

export interface AttestedHttpsServer {
  port: number;
  /** Requests that reached the handler. */
  readonly requests: { method: string; url: string; headers: Record<string, unknown> }[];
  /** TLS connections that finished a handshake, and the application bytes each one received. */
  readonly connections: { servername: string | false; bytes: number }[];
  /** SNI names the server minted a fresh-nonce certificate for. */
  readonly nonceNames: string[];
  closeConnections(): void;
  close(): Promise<void>;
}

export interface AttestedHttpsOptions {
  host?: string;
  /** Put this SPKI in every document instead of the served key's (a server attesting another key). */
  userData?: Uint8Array;
  /** Serve the default certificate even for `<nonce>.attest.` SNI (a server ignoring nonces). */
  ignoreNonce?: boolean;
  port?: number;
}

/**
 * A minimal attested HTTPS server (node:https = node:tls + http) in the documented format, standing in for the
 * ingress: the default certificate, and a fresh one per `<nonce>.attest.<host>` SNI whose document carries the
 * nonce. Routes: /hello → "hello"; /echo → the body back; /ws → WebSocket echo; anything else → 404.
 */
export async function startAttestedHttpsServer(sim: NsmSimulator, opts: AttestedHttpsOptions = {}): Promise<AttestedHttpsServer> {
  const { createServer } = await import('node:https');
  const { createSecureContext } = await import('node:tls');
  const host = opts.host ?? 'localhost';
  const key = p384Key();
  const base = await attestedCert(sim, host, { key, ...(opts.userData === undefined ? {} : { userData: opts.userData }) });
  const requests: AttestedHttpsServer['requests'] = [];
  const connections: AttestedHttpsServer['connections'] = [];
  const nonceNames: string[] = [];
  const server = createServer(
    {
      key: key.keyPem,
      cert: base.pem,
      SNICallback: (name, cb) => {
        const labels = name.split('.');
        if (opts.ignoreNonce || labels.length < 3 || labels[1] !== 'attest') {
          cb(null, createSecureContext({ key: key.keyPem, cert: base.pem }));
          return;
        }
        nonceNames.push(name);
        const nonce = new Uint8Array(Buffer.from(labels[0]!, /[-_]/.test(labels[0]!) ? 'base64url' : 'base64'));
        const fresh = p384Key();
        attestedCert(sim, name, { key: fresh, nonce, ...(opts.userData === undefined ? {} : { userData: opts.userData }) }).then(
          (c) => cb(null, createSecureContext({ key: fresh.keyPem, cert: c.pem })),
          (err: Error) => cb(err),
        );
      },
    },
    (req, res) => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers } });
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/hello') res.end('hello');
        else if (req.url === '/echo') {
          res.setHeader('content-type', req.headers['content-type'] ?? 'application/octet-stream');
          res.end(Buffer.concat(chunks));
        } else {
          res.statusCode = 404;
          res.end('not found');
        }
      });
    },
  );
  // /ws: a WebSocket echo (upgrades over the attested TLS connection).
  const { WebSocketServer } = await import('ws');
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: { ...req.headers } });
    if (req.url === '/refused-with-reason') {
      // A refusal whose reason phrase carries app data: it must not reach the client's error message.
      socket.end('HTTP/1.1 403 card=4111111111111111\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    if (req.url !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (d, binary) => ws.send(d, { binary })));
  });
  server.on('secureConnection', (socket) => {
    const entry = { servername: (socket as unknown as { servername: string | false }).servername, bytes: 0 };
    connections.push(entry);
    socket.on('data', (b: Buffer) => (entry.bytes += b.length));
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    requests,
    connections,
    nonceNames,
    closeConnections: () => server.closeAllConnections(),
    close: async () => {
      for (const c of wss.clients) c.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface RawAttestedTls {
  port: number;
  close(): Promise<void>;
}

/**
 * A TLS server over raw TCP sockets with an attested certificate, for faults below HTTP: `onSecure(tls, raw, k)`
 * runs for the k-th connection once its handshake is done (write garbage on `raw`, reset it, answer on `tls`).
 */
export async function startRawAttestedTls(sim: NsmSimulator, onSecure: (tls: TLSSocket, raw: net.Socket, k: number) => void): Promise<RawAttestedTls> {
  const key = p384Key();
  const cert = await attestedCert(sim, 'localhost', { key });
  const sockets = new Set<net.Socket>();
  let handshakes = 0;
  const server = net.createServer((raw) => {
    sockets.add(raw);
    raw.on('error', () => {});
    raw.on('close', () => sockets.delete(raw));
    const t = new TLSSocket(raw, { isServer: true, cert: cert.pem, key: key.keyPem });
    t.on('error', () => {});
    t.once('secure', () => onSecure(t, raw, ++handshakes));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

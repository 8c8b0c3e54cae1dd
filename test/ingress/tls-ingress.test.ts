// TLS ingress end to end on loopback: Debian's curl and Python's ssl/http.client reach a real app (Python's
// http.server) through the agent's TLS termination and HTTP pipeline; an independent verifier (Python's
// `cryptography` + cbor2, verify_attested_cert.py) checks the certificate's embedded document against the
// simulator root and user_data against the leaf's SPKI; SNI nonces; /.well-known/attestation; PROXY v2.
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes, X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { encodeProxyV2 } from '../../src/transport/proxy-v2.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { createDecryptStage } from '../../src/http/stages/decrypt-ev.ts';
import { run, sniNonce, startIngressStack, verifyWithPython, type IngressStack } from './helpers.ts';

let s: IngressStack;

beforeAll(async () => {
  s = await startIngressStack();
}, 30_000);

afterAll(async () => {
  await s?.stop();
});

function connectTls(port: number, servername?: string, socket?: net.Socket): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port, ...(socket ? { socket } : {}), ...(servername ? { servername } : {}), rejectUnauthorized: false });
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
  });
}

function get(t: tls.TLSSocket, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString('latin1');
      const head = buf.indexOf('\r\n\r\n');
      if (head < 0) return;
      const len = /content-length: (\d+)/i.exec(buf.slice(0, head));
      if (len && buf.length >= head + 4 + Number(len[1])) {
        t.off('data', onData);
        resolve(buf);
      }
    };
    t.on('data', onData);
    t.once('error', reject);
    t.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
  });
}

describe('TLS ingress', () => {
  it('curl reaches the app over TLS 1.3 and TLS 1.2 through the same pipeline', async () => {
    const url = `https://localhost:${s.port}/via-curl`;
    const resolve = `localhost:${s.port}:127.0.0.1`;
    const r13 = await run('curl', ['-sS', '-k', '--tlsv1.3', '--resolve', resolve, '-D', '-', url]);
    expect(r13.code).toBe(0);
    expect(r13.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(r13.stdout).toMatch(/x-request-id: [0-9a-f-]{36}/i);
    expect(r13.stdout.endsWith('hello')).toBe(true);
    const r12 = await run('curl', ['-sS', '-k', '--tlsv1.2', '--tls-max', '1.2', '--resolve', resolve, url]);
    expect(r12.code).toBe(0);
    expect(r12.stdout).toBe('hello');
    const seen = s.app.seen.filter((r) => r.path === '/via-curl');
    expect(seen).toHaveLength(2);
    expect(seen[0]!.headers['x-forwarded-proto']).toBe('https');
    expect(seen[0]!.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    const records = s.sink.records.filter((r) => JSON.stringify(r).includes('/via-curl'));
    expect(records.length).toBe(2);
    expect(records.every((r) => String(r.sessionId ?? JSON.stringify(r)).includes('tls-'))).toBe(true);
  });

  it('Python http.client gets the app\'s answer; the independent verifier accepts the embedded document', async () => {
    const out = await verifyWithPython(s.port, 'localhost', s.sim.rootPath, { path: '/via-python' });
    expect(out.error).toBeUndefined();
    expect(out).toMatchObject({ ok: true, status: 200, body: 'hello', tls: 'TLSv1.3' });
    expect(out.names).toEqual(['localhost', expect.stringMatching(/^<hex \d+>\.localhost$/)]);
    // user_data is the served key: the same SPKI as the identity's boot key.
    const spki = new Uint8Array(Buffer.from(s.identity.spkiDer));
    expect(out.spki_sha256).toBe((await import('node:crypto')).createHash('sha256').update(spki).digest('hex'));
  });

  it('the verifier rejects a certificate against a different root (it really checks the chain)', async () => {
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const dir = await mkdtemp('/tmp/ingress-root-');
    try {
      // A root that is a real certificate but not the simulator's: the ingress's own leaf.
      const t = await connectTls(s.port, 'localhost');
      const leaf = t.getPeerX509Certificate()!;
      t.destroy();
      await writeFile(`${dir}/root.pem`, leaf.toString());
      const out = await verifyWithPython(s.port, 'localhost', `${dir}/root.pem`);
      expect(out.error).toBe('cabundle[0] is not the pinned root');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('an SNI nonce gets a fresh key and a document carrying that nonce; another nonce another one', async () => {
    const n1 = sniNonce();
    const n2 = sniNonce();
    const a = await verifyWithPython(s.port, `${n1}.attest.localhost`, s.sim.rootPath, { nonce: n1 });
    const b = await verifyWithPython(s.port, `${n2}.attest.localhost`, s.sim.rootPath, { nonce: n2 });
    const plain = await verifyWithPython(s.port, 'localhost', s.sim.rootPath);
    expect(a.error).toBeUndefined();
    expect(b.error).toBeUndefined();
    expect(a.nonce).toBe(n1);
    expect(b.nonce).toBe(n2);
    expect((a.names as string[])[0]).toBe(`${n1}.attest.localhost`);
    expect(new Set([a.spki_sha256, b.spki_sha256, plain.spki_sha256]).size).toBe(3);
    // The verifier refuses a document whose nonce is not the one it sent.
    const wrong = await verifyWithPython(s.port, `${n1}.attest.localhost`, s.sim.rootPath, { nonce: n2 });
    expect(wrong.error).toBe('nonce differs from the one sent');
  });

  it('an SNI attest name with a label that is not base64 fails the handshake; the server keeps serving', async () => {
    await expect(connectTls(s.port, 'not*base64.attest.localhost')).rejects.toThrow();
    // Nor a 32-byte nonce: a Noise handshake hash has that length (a document for it would pass as a Noise session's).
    await expect(connectTls(s.port, `${randomBytes(32).toString('base64url')}.attest.localhost`)).rejects.toThrow();
    const t = await connectTls(s.port, 'localhost');
    expect(await get(t, '/after-bad-sni')).toMatch(/hello$/);
    t.destroy();
  });

  it.each([
    ['the default certificate', (): string => 'localhost'],
    ['a fresh-nonce certificate (SNI <nonce>.attest.<host>)', (): string => `${sniNonce()}.attest.localhost`],
  ])('/.well-known/attestation on the TLS port answers a document bound to the key being served: %s', async (_, sni) => {
    const t = await connectTls(s.port, sni());
    const served = new Uint8Array(t.getPeerX509Certificate()!.publicKey.export({ type: 'spki', format: 'der' }));
    const answer = await get(t, '/.well-known/attestation');
    t.destroy();
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { attestation_doc: string };
    const doc = parseAttestationDocument(new Uint8Array(Buffer.from(body.attestation_doc, 'base64'))).document;
    expect(Buffer.from(doc.userData!).equals(Buffer.from(served))).toBe(true);
    expect(doc.publicKey).toBeNull();
    expect(doc.nonce?.length).toBe(32);
    expect(s.app.seen.some((r) => r.path.startsWith('/.well-known'))).toBe(false);
  });

  it('a client reconnecting with its TLS session gets a full handshake: the document binds the certificate it sees', async () => {
    // A resumed handshake would skip the SNI callback and serve on the default context, so the connection's
    // certificate (what the document binds) would not be the fresh-nonce one the client was shown.
    const sni = `${sniNonce()}.attest.localhost`;
    const first = await connectTls(s.port, sni);
    const seen = first.getPeerX509Certificate()!.fingerprint256;
    expect(await get(first, '/first')).toMatch(/hello$/); // TLS 1.3 tickets, if any, come after the handshake
    const session = first.getSession();
    first.destroy();
    const again = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const t = tls.connect({ host: '127.0.0.1', port: s.port, servername: sni, rejectUnauthorized: false, ...(session ? { session } : {}) });
      t.once('secureConnect', () => resolve(t));
      t.once('error', reject);
    });
    expect(again.isSessionReused()).toBe(false);
    const cert = again.getPeerX509Certificate()!;
    expect(cert.fingerprint256).toBe(seen); // the cached fresh-nonce certificate
    const served = new Uint8Array(cert.publicKey.export({ type: 'spki', format: 'der' }));
    const answer = await get(again, '/.well-known/attestation');
    again.destroy();
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { attestation_doc: string };
    const doc = parseAttestationDocument(new Uint8Array(Buffer.from(body.attestation_doc, 'base64'))).document;
    expect(Buffer.from(doc.userData!).equals(Buffer.from(served))).toBe(true);
  });

  it('/.well-known/attestation?nonce= puts the client\'s nonce in a document bound to the served key; a bad nonce is 400', async () => {
    const t = await connectTls(s.port, 'localhost');
    const served = new Uint8Array(t.getPeerX509Certificate()!.publicKey.export({ type: 'spki', format: 'der' }));
    const nonce = randomBytes(20);
    const answer = await get(t, `/.well-known/attestation?nonce=${nonce.toString('base64url')}`);
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as { attestation_doc: string };
    const doc = parseAttestationDocument(new Uint8Array(Buffer.from(body.attestation_doc, 'base64'))).document;
    expect(Buffer.from(doc.nonce!).equals(nonce)).toBe(true);
    expect(Buffer.from(doc.userData!).equals(Buffer.from(served))).toBe(true);
    const n = nonce.toString('base64url');
    for (const bad of ['', 'x', 'AAAAA', 'AB', 'not*base64', randomBytes(513).toString('base64url'), `${n}&nonce=${n}`, randomBytes(32).toString('base64url')]) {
      const r = await get(t, `/.well-known/attestation?nonce=${bad}`);
      expect(r).toMatch(/^HTTP\/1\.1 400/);
      expect(r).toContain('HTTP_BAD_REQUEST');
    }
    expect(await get(t, `/.well-known/attestation?nonce=${randomBytes(32).toString('base64url')}`)).toContain('length of a Noise handshake hash');
    t.destroy();
  });

  it('keep-alive: several requests on one TLS connection reach the app in order', async () => {
    const t = await connectTls(s.port, 'localhost');
    for (let i = 0; i < 3; i++) expect(await get(t, `/ka-${i}`)).toMatch(/hello$/);
    t.destroy();
    expect(s.app.seen.filter((r) => r.path.startsWith('/ka-')).map((r) => r.path)).toEqual(['/ka-0', '/ka-1', '/ka-2']);
  });
});

describe('TLS ingress behind the bridge (PROXY v2 in front)', () => {
  let p: IngressStack;
  beforeAll(async () => {
    // Per client: bursts of 2 (and no refill within the test); the process: plenty.
    p = await startIngressStack({ ingress: { acceptProxyProtocol: true }, identity: { nonceRate: { perSecond: 100, burst: 100 }, nonceRatePerClient: { perSecond: 0.001, burst: 2 } } });
  }, 30_000);

  /** A TLS connection from `source` as the bridge's PROXY v2 header says. */
  const from = async (source: string, servername: string): Promise<tls.TLSSocket> => {
    const raw = net.connect(p.port, '127.0.0.1');
    await new Promise((r) => raw.once('connect', r));
    raw.write(encodeProxyV2({ source: { address: source, port: 40002 }, destination: { address: '10.0.0.1', port: 443 } }));
    return connectTls(p.port, servername, raw);
  };

  it('fresh-nonce documents are budgeted per client: one client spending its share leaves others theirs', async () => {
    const fresh = (): string => `${sniNonce()}.attest.localhost`;
    for (let i = 0; i < 2; i++) (await from('198.51.100.1', fresh())).destroy();
    // Its third fresh-nonce handshake is refused; the same client still gets the default certificate.
    await expect(from('198.51.100.1', fresh())).rejects.toThrow();
    (await from('198.51.100.1', 'localhost')).destroy();
    // ?nonce= draws on the same per-client budget: 429 for it…
    const t = await from('198.51.100.1', 'localhost');
    expect(await get(t, `/.well-known/attestation?nonce=${randomBytes(8).toString('base64url')}`)).toMatch(/^HTTP\/1\.1 429/);
    t.destroy();
    // …while another client (and another /64 for IPv6) is served.
    (await from('198.51.100.2', fresh())).destroy();
    const v6 = await from('2001:db8:1:2::7', 'localhost');
    expect(await get(v6, `/.well-known/attestation?nonce=${randomBytes(8).toString('base64url')}`)).toMatch(/^HTTP\/1\.1 200/);
    v6.destroy();
  });
  afterAll(async () => {
    await p?.stop();
  });

  it('the app is told the client address from the PROXY v2 header', async () => {
    const raw = net.connect(p.port, '127.0.0.1');
    await new Promise((r) => raw.once('connect', r));
    raw.write(encodeProxyV2({ source: { address: '203.0.113.7', port: 40001 }, destination: { address: '10.0.0.1', port: 443 } }));
    const t = await connectTls(p.port, 'localhost', raw);
    expect(await get(t, '/behind-bridge')).toMatch(/hello$/);
    t.destroy();
    const seen = p.app.seen.find((r) => r.path === '/behind-bridge')!;
    expect(seen.headers['x-forwarded-for']).toBe('203.0.113.7');
  });

  it('a connection without the header is refused before any TLS', async () => {
    await expect(connectTls(p.port, 'localhost')).rejects.toThrow();
    expect(p.app.seen.length).toBe(1);
  });
});

describe('ev: decryption over TLS (the same decrypt stage as Noise requests)', () => {
  const keyring = Keyring.generate();
  let d: IngressStack;
  beforeAll(async () => {
    d = await startIngressStack({ forwarder: { decrypt: createDecryptStage(keyring) } });
  }, 30_000);
  afterAll(async () => {
    await d?.stop();
  });

  it('an ev: header sent through curl reaches the app decrypted; the log has no plaintext', async () => {
    const secret = 'card-4242-secret';
    const token = encryptValue(secret, keyring.publicKeys());
    const r = await run('curl', ['-sS', '-k', '--resolve', `localhost:${d.port}:127.0.0.1`, '-H', `x-card: ${token}`, `https://localhost:${d.port}/decrypt-me`]);
    expect(r.stdout).toBe('hello');
    const seen = d.app.seen.find((x) => x.path === '/decrypt-me')!;
    expect(seen.headers['x-card']).toBe(secret);
    await new Promise((res) => setTimeout(res, 50));
    expect(JSON.stringify(d.sink.records)).not.toContain(secret);
    expect(d.sink.records.find((x) => JSON.stringify(x).includes('/decrypt-me'))).toMatchObject({ decrypted_fields: 1 });
  });
});

describe('certificate', () => {
  it('the leaf is P-384, self-signed, and expires with the NSM certificate inside its document', async () => {
    const t = await connectTls(s.port, 'localhost');
    const der = t.getPeerX509Certificate()!.raw;
    t.destroy();
    const x = new X509Certificate(der);
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    expect(x.verify(x.publicKey)).toBe(true);
    const label = x.subjectAltName!.split(', ').map((n) => n.replace(/^DNS:/, '').split('.')[0]!).sort((a, b) => b.length - a.length)[0]!;
    const doc = parseAttestationDocument(new Uint8Array(Buffer.from(label, 'hex'))).document;
    const signer = new X509Certificate(doc.certificate);
    expect(new Date(x.validTo).getTime()).toBe(new Date(signer.validTo).getTime());
  });
});

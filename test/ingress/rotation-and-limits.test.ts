// The attested identity over time and under load: rotation before the NSM certificate in the document expires
// (a moved clock), the fresh-nonce rate limit and its bounded cache, and a TLS handshake flood that must not
// starve an established session.
import net from 'node:net';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAttestationDocument } from '../../src/attestation/document.ts';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { AttestedIdentity, DUE_AT_ISSUE_RETRY_MS, WELL_KNOWN_TTL_MS } from '../../src/ingress/attested-identity.ts';
import { IngressError } from '../../src/ingress/errors.ts';
import { nonceFromSni } from '../../src/ingress/sni-nonce.ts';
import { sniNonce, startIngressStack, type IngressStack } from './helpers.ts';

function connectTls(port: number, servername = 'localhost'): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false });
    t.once('secureConnect', () => resolve(t));
    t.once('error', reject);
  });
}

async function servedCert(port: number): Promise<X509Certificate> {
  const t = await connectTls(port);
  const x = t.getPeerX509Certificate()!;
  t.destroy();
  return x;
}

function documentOf(x: X509Certificate) {
  const label = x.subjectAltName!.split(', ').map((n) => n.replace(/^DNS:/, '').split('.')[0]!).sort((a, b) => b.length - a.length)[0]!;
  return parseAttestationDocument(new Uint8Array(Buffer.from(label, 'hex'))).document;
}

describe('rotation under a moved clock', () => {
  let s: IngressStack;
  beforeAll(async () => {
    s = await startIngressStack();
  }, 30_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('keeps the certificate until 10 min before the NSM certificate expires, then re-issues it (same key)', async () => {
    const first = await servedCert(s.port);
    const firstDoc = documentOf(first);
    const signerNotAfter = new Date(new X509Certificate(firstDoc.certificate).validTo).getTime();
    // 11 minutes before the NSM certificate's expiry: not yet due.
    s.advance(signerNotAfter - Date.now() - 11 * 60_000);
    const same = await servedCert(s.port);
    expect(same.fingerprint256).toBe(first.fingerprint256);
    // 9 minutes before: due; the next handshake gets a new certificate and document.
    s.advance(2 * 60_000);
    const next = await servedCert(s.port);
    expect(next.fingerprint256).not.toBe(first.fingerprint256);
    const nextDoc = documentOf(next);
    expect(new Date(new X509Certificate(nextDoc.certificate).validTo).getTime()).toBeGreaterThan(signerNotAfter);
    expect(new Date(next.validTo).getTime()).toBeGreaterThan(new Date(first.validTo).getTime());
    // Same boot key: user_data and SPKI unchanged, and still equal to each other.
    const spki = (x: X509Certificate) => Buffer.from(x.publicKey.export({ type: 'spki', format: 'der' }));
    expect(spki(next).equals(spki(first))).toBe(true);
    expect(Buffer.from(nextDoc.userData!).equals(spki(next))).toBe(true);
    expect(s.identity.rotations).toBe(2);
  });
});

describe('rotation when the NSM fails', () => {
  let s: IngressStack;
  let failing = false;
  beforeAll(async () => {
    s = await startIngressStack();
  }, 30_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('keeps serving the current certificate when re-issuing fails, and rotates once the NSM answers again', async () => {
    const original = s.sim.attest.bind(s.sim);
    const sim = s.sim as { attest: typeof original };
    sim.attest = (req) => (failing ? Promise.reject(Object.assign(new Error('NSM down'), { code: 'NSM_ERROR' })) : original(req));
    const first = await servedCert(s.port);
    const signerNotAfter = new Date(new X509Certificate(documentOf(first).certificate).validTo).getTime();
    s.advance(signerNotAfter - Date.now() - 5 * 60_000);
    failing = true;
    expect((await servedCert(s.port)).fingerprint256).toBe(first.fingerprint256);
    failing = false;
    expect((await servedCert(s.port)).fingerprint256).not.toBe(first.fingerprint256);
  });
});

describe('SNI nonces', () => {
  let dir: string;
  let sim: NsmSimulator;
  let t = 1_000_000;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ingress-nonce-'));
    sim = await createNsmSimulator({ stateDir: dir, identity: { agentVersion: 't', app: 'a', config: '' } });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('parses <nonce>.attest.<host> (standard base64, then base64url) and ignores other names', () => {
    expect(nonceFromSni('localhost')).toBeNull();
    expect(nonceFromSni('a.b')).toBeNull();
    expect(nonceFromSni('AAEC.notattest.example.com')).toBeNull();
    expect(Buffer.from(nonceFromSni('AAEC.attest.example.com')!)).toEqual(Buffer.from([0, 1, 2]));
    expect(Buffer.from(nonceFromSni('AAE_.ATTEST.x')!)).toEqual(Buffer.from([0, 1, 0x3f]));
    for (const bad of ['*.attest.x', `${'A'.repeat(64)}.attest.x`, 'A.attest.x', '.attest.x']) {
      expect(() => nonceFromSni(bad)).toThrow(IngressError);
    }
    // 31 and 33 bytes pass; 32 (a Noise handshake hash's length) never does, in either alphabet.
    expect(nonceFromSni(`${Buffer.alloc(31, 0xfb).toString('base64')}.attest.x`)!.length).toBe(31);
    expect(nonceFromSni(`${Buffer.alloc(33, 0xfb).toString('base64url')}.attest.x`)!.length).toBe(33);
    for (const enc of ['base64', 'base64url'] as const) {
      expect(() => nonceFromSni(`${Buffer.alloc(32, 0xfb).toString(enc)}.attest.x`)).toThrow(expect.objectContaining({ code: 'INGRESS_BAD_NONCE' }));
    }
  });

  it('a default certificate due the moment it is issued is served 30 s before the next NSM call, not one per handshake', async () => {
    let calls = 0;
    const counting = { ...sim, attest: (req: Parameters<typeof sim.attest>[0]) => (calls++, sim.attest(req)) };
    let clock = Date.now();
    const id = new AttestedIdentity({ nsm: counting, now: () => clock });
    await id.current();
    // 5 min before the NSM certificate expires by this clock (the margin is 10): the simulator's next one expires
    // no later, so each certificate is due as soon as it is issued.
    clock = id.served!.notAfter - 5 * 60_000;
    calls = 0;
    for (let i = 0; i < 20; i++) if (id.due) await id.serving(); // what each handshake does
    expect(calls).toBe(1);
    expect(id.dueAtIssue).toBe(true);
    expect(id.msUntilDue()).toBe(DUE_AT_ISSUE_RETRY_MS);
    clock += DUE_AT_ISSUE_RETRY_MS;
    for (let i = 0; i < 20; i++) if (id.due) await id.serving();
    expect(calls).toBe(2);
  });

  it('rate-limits fresh-nonce certificates; a repeated SNI is served from the bounded cache', async () => {
    const now = Date.now();
    const id = new AttestedIdentity({ nsm: sim, now: () => now + t, nonceRate: { perSecond: 1, burst: 2 }, nonceCacheSize: 2 });
    const [a, b, c] = [sniNonce(), sniNonce(), sniNonce()];
    const ctxA = await id.contextFor(`${a}.attest.localhost`);
    await id.contextFor(`${b}.attest.localhost`);
    await expect(id.contextFor(`${c}.attest.localhost`)).rejects.toMatchObject({ code: 'INGRESS_NONCE_RATE_LIMITED' });
    // The same nonce again costs nothing: the same context.
    expect(await id.contextFor(`${a}.attest.localhost`)).toBe(ctxA);
    // The plain name is never limited.
    await expect(id.contextFor('localhost')).resolves.toBeDefined();
    t += 1000;
    await expect(id.contextFor(`${c}.attest.localhost`)).resolves.toBeDefined();
    // Cache bounded at 2: a (oldest) was evicted by c.
    t += 1000;
    expect(await id.contextFor(`${a}.attest.localhost`)).not.toBe(ctxA);
  });

  it('/.well-known documents: a client nonce spends the same budget; without one a document is reused for a minute', async () => {
    let calls = 0;
    const counting = { ...sim, attest: (req: Parameters<typeof sim.attest>[0]) => (calls++, sim.attest(req)) };
    let now = Date.now();
    const id = new AttestedIdentity({ nsm: counting, now: () => now, nonceRate: { perSecond: 1, burst: 2 } });
    await id.current();
    const spki = id.spkiDer;
    calls = 0;
    const first = await id.documentFor(spki);
    expect(await id.documentFor(spki)).toBe(first);
    expect(calls).toBe(1);
    now += WELL_KNOWN_TTL_MS;
    expect(await id.documentFor(spki)).not.toBe(first);
    expect(calls).toBe(2);
    const nonce = new Uint8Array([1, 2, 3]);
    expect(parseAttestationDocument(await id.documentFor(spki, nonce)).document.nonce).toEqual(nonce);
    await id.documentFor(spki, nonce);
    await expect(id.documentFor(spki, nonce)).rejects.toMatchObject({ code: 'INGRESS_NONCE_RATE_LIMITED' });
    // the fresh-nonce certificates draw from the same bucket
    await expect(id.contextFor(`${sniNonce()}.attest.localhost`)).rejects.toMatchObject({ code: 'INGRESS_NONCE_RATE_LIMITED' });
    expect(calls).toBe(4);
    now += 1000;
    await expect(id.documentFor(spki, nonce)).resolves.toBeInstanceOf(Uint8Array);
    // A 32-byte client nonce never reaches the NSM, whoever calls (a session worker's RPC included).
    now += 10_000;
    calls = 0;
    await expect(id.documentFor(spki, new Uint8Array(32).fill(5))).rejects.toMatchObject({ code: 'INGRESS_BAD_NONCE' });
    expect(calls).toBe(0);
  });
});

describe('the connection cap (limits.max_sessions)', () => {
  let s: IngressStack;
  beforeAll(async () => {
    s = await startIngressStack({ ingress: { maxConnections: 3 } });
  }, 30_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('refuses connections past the cap and admits new ones as served connections close', async () => {
    const open = [await connectTls(s.port), await connectTls(s.port), await connectTls(s.port)];
    await expect(connectTls(s.port)).rejects.toThrow();
    const closed = new Promise((r) => open[0]!.once('close', r));
    open[0]!.destroy();
    await closed;
    let admitted: tls.TLSSocket | undefined;
    // The server side sees the close a moment later: retry a bounded number of times.
    for (let i = 0; i < 50 && admitted === undefined; i++) {
      admitted = await connectTls(s.port).catch(() => undefined);
      if (admitted === undefined) await new Promise((r) => setTimeout(r, 20));
    }
    expect(admitted).toBeDefined();
    admitted?.destroy();
    for (const t of open) t.destroy();
  });
});

describe('a TLS handshake flood', () => {
  let s: IngressStack;
  beforeAll(async () => {
    s = await startIngressStack({ ingress: { maxPendingHandshakes: 32, handshakeTimeoutMs: 5_000 } });
  }, 30_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('does not starve an established session; excess connections are refused before any crypto', async () => {
    const established = await connectTls(s.port);
    const request = (p: string): Promise<string> =>
      new Promise((resolve, reject) => {
        let buf = '';
        const onData = (c: Buffer): void => {
          buf += c.toString('latin1');
          if (/\r\n\r\nhello$/.test(buf)) {
            established.off('data', onData);
            resolve(buf);
          }
        };
        established.on('data', onData);
        established.once('error', reject);
        established.write(`GET ${p} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
      });
    // 200 connections that never finish a handshake (a ClientHello never sent), and 60 full handshakes.
    const idle: net.Socket[] = [];
    for (let i = 0; i < 200; i++) {
      const c = net.connect(s.port, '127.0.0.1');
      c.on('error', () => {});
      idle.push(c);
    }
    const full = Array.from({ length: 60 }, () => connectTls(s.port).then((t) => (t.destroy(), 'ok' as const), () => 'refused' as const));
    const answers: string[] = [];
    for (let i = 0; i < 5; i++) answers.push(await request(`/during-flood-${i}`));
    const outcomes = await Promise.all(full);
    expect(answers).toHaveLength(5);
    expect(answers.every((a) => a.startsWith('HTTP/1.1 200'))).toBe(true);
    expect(s.ingress.refused).toBeGreaterThan(0);
    expect(outcomes).toContain('refused');
    for (const c of idle) c.destroy();
    established.destroy();
    // After the flood a new client is served.
    await new Promise((r) => setTimeout(r, 100));
    const t = await connectTls(s.port);
    t.destroy();
    expect(s.app.seen.filter((r) => r.path.startsWith('/during-flood-'))).toHaveLength(5);
  });
});

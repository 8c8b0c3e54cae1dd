// The TLS ingress's identity across threads (identity-proxy.ts), over a MessageChannel with the NSM simulator:
// a worker serves no certificate older than the generation a connection was handed with, builds a working TLS
// context from the pushed key and certificate, gets fresh-nonce certificates and documents from the main
// thread's budget (its IngressError arriving as IngressError, so /.well-known answers 429), and a closed port
// fails what waits instead of hanging it.
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { MessageChannel } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../../src/attestation/simulator.ts';
import { AttestedIdentity } from '../../../src/ingress/attested-identity.ts';
import { IngressError } from '../../../src/ingress/errors.ts';
import { remoteIdentity, serveIdentity } from '../../../src/runtime/worker-services/identity-proxy.ts';
import { WorkerServiceError } from '../../../src/runtime/worker-services/errors.ts';
import { sniNonce } from '../../ingress/helpers.ts';

let dir: string;
let sim: NsmSimulator;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'identity-proxy-'));
  sim = await createNsmSimulator({ stateDir: dir, identity: { agentVersion: 'test', app: 'identity-proxy', config: '' } });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function pair(identity: AttestedIdentity) {
  const { port1, port2 } = new MessageChannel();
  return { server: serveIdentity(port1, identity), remote: remoteIdentity(port2) };
}

/** The certificate a TLS server built on `context` presents. */
async function presented(context: tls.SecureContext, servername = 'localhost'): Promise<X509Certificate> {
  const server = tls.createServer({ SNICallback: (_n, cb) => cb(null, context) });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    return await new Promise<X509Certificate>((resolve, reject) => {
      const c = tls.connect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername, rejectUnauthorized: false }, () => {
        resolve(c.getPeerX509Certificate()!);
        c.destroy();
      });
      c.once('error', reject);
    });
  } finally {
    await new Promise((r) => server.close(r));
  }
}

describe('identity proxy', () => {
  it('waits for the generation it was asked for, then serves the pushed certificate with the same key', async () => {
    const identity = new AttestedIdentity({ nsm: sim });
    const issued = await identity.current();
    const { server, remote } = pair(identity);
    try {
      expect(remote.due).toBe(true);
      const first = remote.serving();
      server.push(issued, 1);
      const got = await first;
      expect(remote.due).toBe(false);
      const x = await presented(got.context);
      expect(Buffer.from(x.raw).equals(Buffer.from(issued.der))).toBe(true);
      expect(Buffer.from(remote.spkiDer).equals(Buffer.from(issued.spkiDer))).toBe(true);
      // A connection handed with generation 2: not served generation 1.
      remote.want(2);
      expect(remote.due).toBe(true);
      let settled = false;
      const second = remote.serving().then((c) => ((settled = true), c));
      await new Promise((r) => setTimeout(r, 20));
      expect(settled).toBe(false);
      server.push(issued, 2);
      expect(await second).toBe(remote.served);
      // An older push arriving late changes nothing.
      server.push(issued, 1);
      await new Promise((r) => setTimeout(r, 20));
      expect(remote.due).toBe(false);
    } finally {
      remote.close();
      server.close();
    }
  });

  it("gets fresh-nonce certificates and documents from the main thread's budget; its refusal stays an IngressError", async () => {
    const identity = new AttestedIdentity({ nsm: sim, nonceRate: { perSecond: 0.001, burst: 1 } });
    const issued = await identity.current();
    const { server, remote } = pair(identity);
    try {
      server.push(issued, 1);
      const n = sniNonce();
      const ctx = await remote.contextFor(`${n}.attest.localhost`);
      const x = await presented(ctx, `${n}.attest.localhost`);
      expect(x.subjectAltName).toContain(`${n}.attest.localhost`);
      // The same SNI again: the main thread's cache, no budget.
      const again = await presented(await remote.contextFor(`${n}.attest.localhost`), `${n}.attest.localhost`);
      expect(again.fingerprint256).toBe(x.fingerprint256);
      // The budget (one) is spent: a new nonce, or a document for a client nonce, is refused as on the main thread.
      await expect(remote.contextFor(`${sniNonce()}.attest.localhost`)).rejects.toSatisfy((e) => e instanceof IngressError && e.code === 'INGRESS_NONCE_RATE_LIMITED');
      await expect(remote.documentFor(issued.spkiDer, new Uint8Array([1, 2, 3]))).rejects.toSatisfy((e) => e instanceof IngressError && e.code === 'INGRESS_NONCE_RATE_LIMITED');
      // Without a client nonce: a document, the same one the main thread would give (its cache).
      const doc = await remote.documentFor(issued.spkiDer);
      expect(Buffer.from(doc).equals(Buffer.from(await identity.documentFor(issued.spkiDer)))).toBe(true);
      // A plain SNI never crosses: the held certificate.
      expect(await remote.contextFor('localhost')).toBe(remote.served!.context);
      // A bad nonce label is refused here, as on the main thread.
      await expect(remote.contextFor('!!.attest.localhost')).rejects.toSatisfy((e) => e instanceof IngressError && e.code === 'INGRESS_BAD_NONCE');
    } finally {
      remote.close();
      server.close();
    }
  });

  it('[ingress.acme]: the domain certificate and pending challenges follow the pushes, by generation', async () => {
    const identity = new AttestedIdentity({ nsm: sim });
    const issued = await identity.current();
    const fresh = await identity.certificateFor(`${sniNonce()}.attest.localhost`); // another key and certificate
    const pemOf = (der: Uint8Array): string => new X509Certificate(der).toString();
    const { server, remote } = pair(identity);
    try {
      server.push(issued, 1, { domain: 'shop.example', issued: null, challenges: [] });
      await remote.serving();
      expect(remote.acme.issuedFor('shop.example')).toBeUndefined();
      // A challenge pending (generation 2), then the certificate obtained and the challenge gone (generation 3).
      server.push(issued, 2, { domain: 'shop.example', issued: null, challenges: [{ name: 'shop.example', keyPem: fresh.keyPem, certPem: pemOf(fresh.der) }] });
      remote.want(2);
      await remote.serving();
      const challenge = await presented(remote.acme.challengeContext('SHOP.example')!, 'shop.example');
      expect(Buffer.from(challenge.raw).equals(Buffer.from(fresh.der))).toBe(true);
      expect(remote.acme.challengeContext('other.example')).toBeUndefined();
      server.push(issued, 3, { domain: 'shop.example', issued: { keyPem: fresh.keyPem, chainPem: pemOf(fresh.der) }, challenges: [] });
      remote.want(3);
      await remote.serving();
      expect(remote.acme.challengeContext('shop.example')).toBeUndefined();
      const served = await presented(remote.acme.issuedFor('Shop.Example')!.context, 'shop.example');
      expect(Buffer.from(served.raw).equals(Buffer.from(fresh.der))).toBe(true);
      expect(remote.acme.issuedFor('localhost')).toBeUndefined();
      // Expired on the main thread's clock: pushed as none.
      server.push(issued, 4, { domain: 'shop.example', issued: null, challenges: [] });
      remote.want(4);
      await remote.serving();
      expect(remote.acme.issuedFor('shop.example')).toBeUndefined();
    } finally {
      remote.close();
      server.close();
    }
  });

  it('a closed port fails what waits for a certificate (no handshake hangs)', async () => {
    const identity = new AttestedIdentity({ nsm: sim });
    await identity.current();
    const { server, remote } = pair(identity);
    const waiting = remote.serving();
    remote.close();
    await expect(waiting).rejects.toSatisfy((e) => e instanceof WorkerServiceError && e.code === 'WORKER_SERVICE_CLOSED');
    await expect(remote.serving()).rejects.toSatisfy((e) => e instanceof WorkerServiceError && e.code === 'WORKER_SERVICE_CLOSED');
    server.close();
  });

  it('keeps the key out of what is enumerable on an issued certificate', async () => {
    const identity = new AttestedIdentity({ nsm: sim });
    const issued = await identity.current();
    expect(Object.keys(issued)).not.toContain('keyPem');
    expect(JSON.stringify({ ...issued, context: null })).not.toContain('PRIVATE KEY');
    expect(issued.keyPem).toContain('PRIVATE KEY');
  });
});

// [ingress.acme] against Debian's pebble, on loopback: the agent (the runtime `run` assembles, TCP standing in
// for vsock) orders a certificate for its domain through the egress tunnel (explicit proxy → host dialer →
// pebble), pebble really validates tls-alpn-01 against the agent's own TLS port (no PEBBLE_VA_ALWAYS_VALID),
// and then curl verifies the chain to pebble's issuing root for SNI = the domain, while any other SNI still
// gets the attested certificate that our client verifies under the simulator root. With the CA down, the
// attested certificate is served, each failure is logged and retried with backoff, and the certificate
// arrives once the CA is up. Renewal happens once 2/3 of the lifetime has passed (moved clock).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import pino, { type Logger } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { verifyAttestedCertificate } from '../../src/client/attested-cert.ts';
import { sniNonceLabel } from '../../src/client/tls-connect.ts';
import { configFromObject } from '../../src/config.ts';
import { startEgressDialer, type EgressDialer } from '../../src/host/egress-dialer.ts';
import { startAgentRuntime, type AgentRuntime } from '../../src/runtime/agent.ts';
import { connectStream } from '../../src/transport/connect.ts';
import { nativeAvailable } from '../../src/transport/native.ts';
import { startTestDns, type TestDns } from '../egress/helpers.ts';
import { run, startPythonApp, type PythonApp } from './helpers.ts';
import { freePort, makeServerCert, startPebble, type Pebble } from './pebble.ts';

const DOMAIN = 'shop.acme.test';
const CA_NAME = 'pebble.test';
/** TLS connections (and so the tls-alpn-01 validation) on session workers where threads can be had. */
const WORKERS = nativeAvailable() ? 2 : 1;

interface Peer {
  der: Uint8Array;
  x509: X509Certificate;
  authorized: boolean;
}

/** One handshake with `servername` (none when undefined): the certificate the agent presented. */
function handshake(port: number, servername: string | undefined, ca?: string): Promise<Peer> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, ...(servername === undefined ? {} : { servername }), ALPNProtocols: ['http/1.1'], rejectUnauthorized: false, ...(ca === undefined ? {} : { ca }) }, () => {
      const x509 = s.getPeerX509Certificate()!;
      resolve({ der: new Uint8Array(x509.raw), x509, authorized: s.authorized });
      s.destroy();
    });
    s.once('error', reject);
  });
}

const fromPebble = (p: Peer) => /Pebble Intermediate/.test(p.x509.issuer);

function memoryLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>) });
  return { logger, lines };
}

interface Agent {
  runtime: AgentRuntime;
  sim: NsmSimulator;
  lines: Record<string, unknown>[];
  tlsPort: number;
  close(): Promise<void>;
}

async function startAgent(o: { dir: string; appPort: number; dialerPort: number; acmePort: number; tlsPort: number; caPem: string; now?: () => number }): Promise<Agent> {
  const stateDir = mkdtempSync(path.join(o.dir, 'agent-'));
  const sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app: 'acme', config: '' } });
  const { logger, lines } = memoryLogger();
  const config = configFromObject({
    tls_termination: true,
    app: { port: o.appPort },
    api: { enabled: false },
    limits: { workers: WORKERS },
    ingress: {
      host: 'localhost',
      acme: { domain: DOMAIN, directory: `https://${CA_NAME}:${o.acmePort}/dir`, terms_of_service_agreed: true, email: 'ops@acme.test', retry_backoff_ms: 200, retry_backoff_max_ms: 800 },
    },
    // The CA by name, and its (loopback) address: non-global addresses need an IP entry.
    egress: { enabled: true, destinations: [`${CA_NAME}:${o.acmePort}`, `127.0.0.1/32:${o.acmePort}`] },
  });
  const runtime = await startAgentRuntime({
    config,
    listen: { kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0, opsPort: 0, tlsPort: o.tlsPort },
    nsm: sim,
    stateDir,
    logger,
    processMetrics: false,
    egress: { dialer: () => connectStream({ kind: 'tcp', host: '127.0.0.1', port: o.dialerPort }), proxyPort: 0 },
    acme: { extraCa: [o.caPem], pollMinMs: 100, ...(o.now === undefined ? {} : { now: o.now }) },
  });
  return { runtime, sim, lines, tlsPort: o.tlsPort, close: () => runtime.close() };
}

let dir: string;
let dns: TestDns;
let dialer: EgressDialer;
let app: PythonApp;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'acme-test-'));
  dns = await startTestDns({ [CA_NAME]: ['127.0.0.1'], [DOMAIN]: ['127.0.0.1'] });
  // The host side: dials what the in-enclave proxy allowed, resolving through the test DNS server.
  dialer = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: dns.port }], allowNonGlobal: ['127.0.0.1/32'] });
  app = await startPythonApp();
}, 30_000);

afterAll(async () => {
  await app?.stop();
  await dialer?.close();
  await dns?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('ACME certificate from pebble, validated by tls-alpn-01 on the agent', () => {
  let pebble: Pebble | undefined;
  let agent: Agent | undefined;
  let offset = 0;

  beforeAll(async () => {
    const tlsPort = await freePort();
    pebble = await startPebble({ name: CA_NAME, tlsPort, dnsPort: dns.port });
    agent = await startAgent({ dir, appPort: app.port, dialerPort: dialer.port!, acmePort: pebble.port, tlsPort, caPem: pebble.httpsCaPem, now: () => Date.now() + offset });
  }, 30_000);

  afterAll(async () => {
    await agent?.close();
    await pebble?.stop();
  });

  it('serves the pebble-issued chain for SNI = the domain; curl verifies it to pebble’s root and reaches the app', async () => {
    const a = agent!;
    await expect.poll(async () => fromPebble(await handshake(a.tlsPort, DOMAIN)), { timeout: 30_000, interval: 100 }).toBe(true);
    const rootPath = path.join(dir, 'pebble-root.pem');
    writeFileSync(rootPath, await pebble!.issuingRoot());
    const peer = await handshake(a.tlsPort, DOMAIN);
    expect(peer.x509.checkHost(DOMAIN)).toBe(DOMAIN);
    const r = await run('curl', ['-sS', '--cacert', rootPath, '--resolve', `${DOMAIN}:${a.tlsPort}:127.0.0.1`, `https://${DOMAIN}:${a.tlsPort}/through-acme`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('hello');
    expect(app.seen.map((s) => s.path)).toContain('/through-acme');
    // The chain does not verify against the system roots: it is pebble's, not a public CA's.
    expect((await run('curl', ['-sS', '--resolve', `${DOMAIN}:${a.tlsPort}:127.0.0.1`, `https://${DOMAIN}:${a.tlsPort}/`])).code).not.toBe(0);
    // Pebble validated the challenge itself, against the agent.
    expect(pebble!.output()).toMatch(/authz \S+ set VALID by completed challenge/);
    // Answered by a worker thread (its log lines carry its number) when there are workers.
    expect(a.lines.some((l) => l.msg === 'ACME tls-alpn-01 challenge answered' && l.servername === DOMAIN && (WORKERS === 1 || typeof l.worker === 'number'))).toBe(true);
    expect(a.lines.some((l) => l.msg === 'ACME certificate obtained; served for its domain' && l.domain === DOMAIN)).toBe(true);
  }, 60_000);

  it('serves the attested certificate for every other SNI (none, the host, a nonce name), verified by our client', async () => {
    const a = agent!;
    for (const sni of [undefined, 'localhost', 'other.acme.test']) {
      const peer = await handshake(a.tlsPort, sni);
      expect(fromPebble(peer)).toBe(false);
      const v = await verifyAttestedCertificate(peer.der, { roots: [a.sim.rootPem] });
      expect(v.certificate.hostnames).toEqual(['localhost']);
    }
    const nonce = new Uint8Array(crypto.getRandomValues(new Uint8Array(24)));
    const peer = await handshake(a.tlsPort, `${sniNonceLabel(nonce)}.attest.${DOMAIN}`);
    const v = await verifyAttestedCertificate(peer.der, { roots: [a.sim.rootPem], nonce });
    expect(Buffer.from(v.attestation.nonce!)).toEqual(Buffer.from(nonce));
  });

  it('answers /.well-known/attestation on the domain with a document bound to the ACME key (Evervault’s trusted-cert path)', async () => {
    const a = agent!;
    const rootPath = path.join(dir, 'pebble-root.pem');
    const r = await run('curl', ['-sS', '--cacert', rootPath, '--resolve', `${DOMAIN}:${a.tlsPort}:127.0.0.1`, `https://${DOMAIN}:${a.tlsPort}/.well-known/attestation`]);
    expect(r.code).toBe(0);
    const document = new Uint8Array(Buffer.from((JSON.parse(r.stdout) as { attestation_doc: string }).attestation_doc, 'base64'));
    const acmeLeaf = await handshake(a.tlsPort, DOMAIN);
    expect(fromPebble(acmeLeaf)).toBe(true);
    const v = await verifyAttestedCertificate(acmeLeaf.der, { roots: [a.sim.rootPem], document });
    expect(Buffer.from(v.attestation.userData!)).toEqual(Buffer.from(acmeLeaf.x509.publicKey.export({ type: 'spki', format: 'der' })));
    // The same document does not pass for the attested certificate's key.
    const attested = await handshake(a.tlsPort, 'localhost');
    await expect(verifyAttestedCertificate(attested.der, { roots: [a.sim.rootPem], document })).rejects.toMatchObject({ code: 'ATTESTED_CERT_KEY_MISMATCH' });
  });

  it('renews once 2/3 of the lifetime has passed, and serves the new certificate', async () => {
    const a = agent!;
    const first = await handshake(a.tlsPort, DOMAIN);
    const notBefore = Date.parse(first.x509.validFrom);
    const notAfter = Date.parse(first.x509.validTo);
    offset = notBefore + ((notAfter - notBefore) * 2) / 3 + 60_000 - Date.now();
    await expect.poll(async () => (await handshake(a.tlsPort, DOMAIN)).x509.serialNumber !== first.x509.serialNumber, { timeout: 30_000, interval: 200 }).toBe(true);
    const renewed = await handshake(a.tlsPort, DOMAIN);
    expect(fromPebble(renewed)).toBe(true);
    expect(a.lines.some((l) => l.msg === 'ACME certificate obtained; served for its domain' && l.renewal === true)).toBe(true);
    // pebble dates its certificates by the real clock: under the moved one each renewal is due again at once
    // (renewAt = its notBefore + 2/3 of the lifetime < now + offset) until a minute has passed. Back to real time.
    offset = 0;
  }, 60_000);

  it('with the CA gone, keeps the certificate until it expires, then serves the attested one again', async () => {
    const a = agent!;
    // A renewal the moved clock started may still be in flight: let it end while the CA answers, or it may be
    // left waiting on a CA that is gone (acme-client's own retries) past this test's deadline.
    const obtained = (): number => a.lines.filter((l) => l.msg === 'ACME certificate obtained; served for its domain').length;
    let last = -1;
    const settled = (): boolean => {
      const n = obtained();
      const same = n === last;
      last = n;
      return same;
    };
    await expect.poll(settled, { timeout: 20_000, interval: 1_500 }).toBe(true);
    await pebble!.stop();
    const current = await handshake(a.tlsPort, DOMAIN);
    const notBefore = Date.parse(current.x509.validFrom);
    const notAfter = Date.parse(current.x509.validTo);
    offset = notBefore + ((notAfter - notBefore) * 5) / 6 - Date.now();
    const renewalFailed = () => a.lines.some((l) => l.msg === 'ACME renewal failed; the current certificate stays until it succeeds');
    // Due, the renewal fails; the certificate still valid is served meanwhile.
    await expect.poll(async () => (await handshake(a.tlsPort, DOMAIN), renewalFailed()), { timeout: 20_000, interval: 100 }).toBe(true);
    expect((await handshake(a.tlsPort, DOMAIN)).x509.serialNumber).toBe(current.x509.serialNumber);
    offset = notAfter + 1_000 - Date.now();
    const after = await handshake(a.tlsPort, DOMAIN);
    expect(fromPebble(after)).toBe(false);
    await verifyAttestedCertificate(after.der, { roots: [a.sim.rootPem] });
  }, 60_000);
});

describe('ACME with the CA down', () => {
  let pebble: Pebble | undefined;
  let agent: Agent | undefined;

  afterAll(async () => {
    await agent?.close();
    await pebble?.stop();
  });

  it('serves the attested certificate, logs each failure, retries with backoff, and switches once the CA answers', async () => {
    const tlsPort = await freePort();
    const acmePort = await freePort(); // nothing listens there yet: the CA is down
    const certs = makeServerCert(mkdtempSync(path.join(dir, 'pebble-tls-')), [CA_NAME, 'localhost']);
    agent = await startAgent({ dir, appPort: app.port, dialerPort: dialer.port!, acmePort, tlsPort, caPem: certs.caPem });
    const a = agent;
    const failures = () => a.lines.filter((l) => l.msg === 'ACME certificate failed; serving the attested certificate for its domain until it succeeds');
    await expect.poll(() => failures().length, { timeout: 20_000, interval: 50 }).toBeGreaterThanOrEqual(3);
    // Backoff doubles from retry_backoff_ms up to retry_backoff_max_ms; the error names the cause.
    expect(failures().slice(0, 3).map((l) => l.retryInMs)).toEqual([200, 400, 800]);
    expect(failures()[0]!.cause).toMatch(/egress proxy .*CONNECT pebble\.test:\d+ refused \(502\)/);
    expect(failures()[0]!.level).toBe(50);
    const peer = await handshake(tlsPort, DOMAIN);
    expect(fromPebble(peer)).toBe(false);
    const v = await verifyAttestedCertificate(peer.der, { roots: [a.sim.rootPem] });
    expect(v.certificate.hostnames).toEqual(['localhost']);
    // The CA comes up: the next retry obtains the certificate, with no restart.
    pebble = await startPebble({ name: CA_NAME, tlsPort, dnsPort: dns.port, port: acmePort, https: certs });
    await expect.poll(async () => fromPebble(await handshake(tlsPort, DOMAIN)), { timeout: 30_000, interval: 100 }).toBe(true);
  }, 90_000);
});

// Debian's `pebble` (Let's Encrypt's ACME test server) for the ACME tests, on loopback: its HTTPS certificate
// comes from a throwaway CA made here with openssl; it resolves names through the given DNS server and
// validates tls-alpn-01 on `tlsPort` (the agent's TLS ingress port). Its own issuing root is random per run and
// fetched from the management endpoint. stop() kills it (SIGKILL) and removes its files.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const PEBBLE = '/usr/bin/pebble';

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A CA and a server certificate for `names` (and 127.0.0.1), PEM, made by openssl in `dir`. */
export function makeServerCert(dir: string, names: string[]): { caPem: string; certPath: string; keyPath: string } {
  const f = (n: string) => path.join(dir, n);
  const ssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-subj', '/CN=acme test CA', '-days', '2']);
  ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', `/CN=${names[0]}`]);
  writeFileSync(f('ext.cnf'), `subjectAltName=${[...names.map((n) => `DNS:${n}`), 'IP:127.0.0.1'].join(',')}\n`);
  ssl(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('ext.cnf')]);
  return { caPem: readFileSync(f('ca.pem'), 'utf8'), certPath: f('server.pem'), keyPath: f('server.key') };
}

export interface Pebble {
  /** The ACME port (listenAddress 127.0.0.1:port). */
  port: number;
  managementPort: number;
  /** The CA of Pebble's own HTTPS certificate (what the agent must trust to talk to it). */
  httpsCaPem: string;
  /** Everything Pebble printed. */
  output(): string;
  /** Pebble's current issuing root, PEM (GET /roots/0 on the management port). */
  issuingRoot(): Promise<string>;
  stop(): Promise<void>;
}

export interface PebbleOptions {
  /** The name the agent reaches Pebble by (in its certificate). */
  name: string;
  /** Where Pebble validates tls-alpn-01 (and would http-01). */
  tlsPort: number;
  dnsPort: number;
  /** Fixed ACME port (a restart on the same port); default a free one. */
  port?: number;
  /** Pebble's HTTPS certificate made beforehand (makeServerCert), so a client can trust it before Pebble runs. */
  https?: { caPem: string; certPath: string; keyPath: string };
}

export async function startPebble(opts: PebbleOptions): Promise<Pebble> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pebble-'));
  const { caPem, certPath, keyPath } = opts.https ?? makeServerCert(dir, [opts.name, 'localhost']);
  const port = opts.port ?? (await freePort());
  const managementPort = await freePort();
  const config = {
    pebble: {
      listenAddress: `127.0.0.1:${port}`,
      managementListenAddress: `127.0.0.1:${managementPort}`,
      certificate: certPath,
      privateKey: keyPath,
      httpPort: await freePort(),
      tlsPort: opts.tlsPort,
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  };
  writeFileSync(path.join(dir, 'pebble.json'), JSON.stringify(config));
  // Real validation (no PEBBLE_VA_ALWAYS_VALID); no artificial sleeps, no random nonce rejections.
  const child: ChildProcess = spawn(PEBBLE, ['-config', path.join(dir, 'pebble.json'), '-dnsserver', `127.0.0.1:${opts.dnsPort}`], {
    env: { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const get = (p: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port: managementPort, path: p, ca: caPem, servername: 'localhost' }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        })
        .on('error', reject);
    });
  try {
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`pebble exited (${child.exitCode}): ${out}`);
      const up = await get('/roots/0').then((r) => r.status === 200, () => false);
      if (up) break;
      if (Date.now() > deadline) throw new Error(`pebble did not answer within 15 s: ${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    port,
    managementPort,
    httpsCaPem: caPem,
    output: () => out,
    async issuingRoot() {
      const r = await get('/roots/0');
      if (r.status !== 200) throw new Error(`pebble /roots/0: HTTP ${r.status}`);
      return r.body;
    },
    stop,
  };
}

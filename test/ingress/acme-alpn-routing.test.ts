// The TLS ingress's certificate choice with [ingress.acme], with a stand-in ACME source (no CA): only a
// handshake offering ALPN acme-tls/1 for a name with a pending challenge gets the challenge certificate, and
// such a connection serves nothing; every other handshake — same SNI with http/1.1 or no ALPN, acme-tls/1 for
// another name — never sees it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls, { type SecureContext } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AcmeSni } from '../../src/ingress/tls-ingress.ts';
import { startIngressStack, type IngressStack } from './helpers.ts';
import { makeServerCert } from './pebble.ts';

const DOMAIN = 'shop.acme.test';

let dir: string;
let stack: IngressStack;
let challenge: SecureContext;
let started = 0;
let stopped = 0;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'acme-alpn-'));
  const made = makeServerCert(dir, ['challenge.acme.test']);
  challenge = tls.createSecureContext({ key: readFileSync(made.keyPath), cert: readFileSync(made.certPath) });
  const acme: AcmeSni = {
    issuedFor: () => undefined,
    challengeContext: (name) => (name === DOMAIN ? challenge : undefined),
    start: () => void started++,
    stop: () => void stopped++,
  };
  stack = await startIngressStack({ ingress: { acme } });
}, 30_000);

afterAll(async () => {
  await stack?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Outcome {
  subject?: string;
  alpn?: string | false | null;
  error?: string;
  /** What an HTTP request on the connection got back (first line), or null when the server closed. */
  reply?: string | null;
}

function attempt(servername: string | undefined, alpn: string[] | undefined): Promise<Outcome> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: stack.port, ...(servername === undefined ? {} : { servername }), ...(alpn === undefined ? {} : { ALPNProtocols: alpn }), rejectUnauthorized: false });
    s.once('error', (err) => resolve({ error: err.message }));
    s.once('secureConnect', () => {
      const out: Outcome = { subject: s.getPeerX509Certificate()!.subject, alpn: s.alpnProtocol };
      let data = '';
      s.on('data', (c: Buffer) => (data += c.toString()));
      s.once('close', () => resolve({ ...out, reply: data === '' ? null : data.split('\r\n')[0]! }));
      s.write(`GET /alpn HTTP/1.1\r\nHost: ${servername ?? 'localhost'}\r\nConnection: close\r\n\r\n`);
    });
  });
}

describe('TLS ingress: ALPN-exact tls-alpn-01 routing', () => {
  it('starts the ACME source with the listener', () => {
    expect(started).toBe(1);
  });

  it('acme-tls/1 for a pending name: the challenge certificate, and nothing is served', async () => {
    const o = await attempt(DOMAIN, ['acme-tls/1']);
    expect(o).toMatchObject({ subject: 'CN=challenge.acme.test', alpn: 'acme-tls/1', reply: null });
  });

  it('the same name with http/1.1 (or no ALPN, or h2 first): the attested certificate, and the app answers', async () => {
    for (const alpn of [['http/1.1'], undefined, ['h2', 'http/1.1']]) {
      const o = await attempt(DOMAIN, alpn);
      expect(o.subject).toContain('O=enclave-agent');
      expect(o.reply).toBe('HTTP/1.1 200 OK');
    }
  });

  it('acme-tls/1 for a name with no pending challenge, or without SNI: refused (no_application_protocol)', async () => {
    for (const sni of ['other.acme.test', undefined]) {
      const o = await attempt(sni, ['acme-tls/1']);
      expect(o.subject).toBeUndefined();
      expect(o.error).toMatch(/no application protocol/i);
    }
  });

  it('a client offering only protocols the ingress does not speak is refused, as without ACME', async () => {
    expect((await attempt(DOMAIN, ['h2'])).error).toMatch(/no application protocol/i);
  });

  it('stops the ACME source with the ingress', async () => {
    await stack.ingress.close();
    expect(stopped).toBe(1);
  });
});

// [ingress.acme]: what loads, what fails naming the key (incl. the egress rule: the CA is reached through the
// egress proxy, so the directory's host:port must be an allowed destination), and the schedule's arithmetic.
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config.ts';
import { renewalTime, retryDelay } from '../../src/ingress/acme-certificate.ts';

const EGRESS = '[egress]\nenabled = true\ndestinations = ["acme-v02.api.letsencrypt.org:443"]\n';
const ACME = '[ingress.acme]\ndomain = "Shop.Example.com"\ndirectory = "https://acme-v02.api.letsencrypt.org/directory"\n';

function errorOf(text: string): ConfigError {
  try {
    parseConfig(text);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('[ingress.acme] config', () => {
  it('loads with defaults, the domain lower-cased', () => {
    const c = parseConfig(`tls_termination = true\n${ACME}${EGRESS}`);
    expect(c.ingress.acme).toEqual({
      domain: 'shop.example.com',
      directory: 'https://acme-v02.api.letsencrypt.org/directory',
      email: null,
      terms_of_service_agreed: false,
      retry_backoff_ms: 60_000,
      retry_backoff_max_ms: 3_600_000,
    });
    expect(parseConfig('').ingress.acme).toBeNull();
  });

  it('accepts an IP entry or a wildcard entry covering the directory, and an explicit port', () => {
    const pebble = '[ingress.acme]\ndomain = "a.test"\ndirectory = "https://127.0.0.1:14000/dir"\n';
    expect(parseConfig(`tls_termination = true\n${pebble}[egress]\nenabled = true\ndestinations = ["127.0.0.1/32:14000"]\n`).ingress.acme?.directory).toBe('https://127.0.0.1:14000/dir');
    expect(parseConfig(`tls_termination = true\n${ACME}[egress]\nenabled = true\ndestinations = ["*.letsencrypt.org:443"]\n`).ingress.acme?.domain).toBe('shop.example.com');
  });

  it('fails naming the key: missing domain or directory, bad values, unknown keys', () => {
    expect(errorOf(`tls_termination = true\n[ingress.acme]\ndirectory = "https://ca.test/dir"\n${EGRESS}`).message).toContain('ingress.acme.domain: required');
    expect(errorOf(`tls_termination = true\n[ingress.acme]\ndomain = "a.test"\n${EGRESS}`).message).toContain('ingress.acme.directory: required');
    expect(errorOf(`tls_termination = true\n[ingress.acme]\ndomain = "*.a.test"\ndirectory = "https://ca.test/dir"\n${EGRESS}`).message).toContain('ingress.acme.domain');
    expect(errorOf(`tls_termination = true\n[ingress.acme]\ndomain = "a.test"\ndirectory = "http://ca.test/dir"\n${EGRESS}`).message).toContain('ingress.acme.directory');
    expect(errorOf(`tls_termination = true\n${ACME}email = "not an address"\n${EGRESS}`).message).toContain('ingress.acme.email');
    expect(errorOf(`tls_termination = true\n${ACME}retry_backoff_ms = 5000\nretry_backoff_max_ms = 1000\n${EGRESS}`).message).toContain('ingress.acme.retry_backoff_max_ms');
    const unknown = errorOf(`tls_termination = true\n${ACME}challenge = "http-01"\n${EGRESS}`);
    expect(unknown.code).toBe('CONFIG_UNKNOWN_KEY');
    expect(unknown.message).toContain('ingress.acme.challenge');
  });

  it('needs TLS ingress', () => {
    expect(errorOf(`${ACME}${EGRESS}`).message).toContain('ingress.acme: the certificate is served by TLS ingress; it needs tls_termination = true');
  });

  it('needs egress enabled and allowing the directory host:port', () => {
    expect(errorOf(`tls_termination = true\n${ACME}`).message).toContain(
      'ingress.acme.directory: the CA is reached through egress; set [egress] enabled = true with "acme-v02.api.letsencrypt.org:443" in destinations',
    );
    const other = errorOf(`tls_termination = true\n${ACME}[egress]\nenabled = true\ndestinations = ["kms.eu-west-1.amazonaws.com:443"]\n`);
    expect(other.code).toBe('CONFIG_BAD_VALUE');
    expect(other.message).toContain('ingress.acme.directory: acme-v02.api.letsencrypt.org:443 is not allowed by egress.destinations; add "acme-v02.api.letsencrypt.org:443"');
    // The right name on the wrong port is not enough.
    expect(errorOf(`tls_termination = true\n${ACME}[egress]\nenabled = true\ndestinations = ["acme-v02.api.letsencrypt.org:8443"]\n`).message).toContain('is not allowed by egress.destinations');
  });
});

describe('ACME schedule', () => {
  it('renews after 2/3 of the lifetime', () => {
    const day = 86_400_000;
    expect(renewalTime(0, 90 * day)).toBe(60 * day);
    expect(renewalTime(1_000, 1_000 + 3 * day)).toBe(1_000 + 2 * day);
  });

  it('backs off by doubling from the base up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 60].map((n) => retryDelay(n, 60_000, 3_600_000))).toEqual([60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000]);
  });
});

// Evervault's enclave.toml (fixtures/evervault/README.md): the files load unchanged, tls_termination = true
// switching on the TLS ingress (ingress.tls) and api_key_auth = true the API-key stage; every key lands where
// it should.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadConfig, parseConfig, pinnedPcrs, type Config } from '../../src/config.ts';
import { errorOf } from './helpers.ts';

const dir = new URL('./fixtures/evervault/', import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, dir), 'utf8');
const FILES = ['cli-test', 'egress-scaling', 'api-key-auth', 'debug-pcrs', 'debug-no-pcrs', 'service-acceptor'].map((n) => `${n}.enclave.toml`);

const load = (name: string): Config => parseConfig(read(name), name, {});
/** PCR lines of the file, as written. */
const pcr = (text: string, k: string): string | undefined => new RegExp(`^${k} = "([0-9a-f]{96})"$`, 'm').exec(text)?.[1];

describe('Evervault enclave.toml files', () => {
  it.each(FILES)('%s: tls_termination = true switches the TLS ingress on', (name) => {
    const text = read(name);
    expect(text).toMatch(/^tls_termination = true$/m);
    const c = load(name);
    expect(c.ingress).toEqual({ tls: true, tls_port: 5443, host: 'localhost', acme: null });
  });

  it.each(FILES)('%s: api_key_auth as written is honoured (enabled, no keys: run refuses, start makes one)', (name) => {
    const on = /^api_key_auth = true$/m.test(read(name));
    expect(load(name).api_key_auth).toEqual({ enabled: on, keys: [] });
  });

  it('cli-test: identity, signing, runtime and the attestation block become information; PCRs are pins', () => {
    const text = read('cli-test.enclave.toml');
    const c = load('cli-test.enclave.toml');
    expect(c.name).toBe('fixture-enclave');
    expect(c.debug).toBe(false);
    expect(c.trx_logging).toBe(true);
    expect(c.forward_proxy_protocol).toBe(false);
    expect(c.trusted_headers).toEqual([]);
    expect(c.egress.enabled).toBe(false);
    expect(c.evervault).toEqual({
      uuid: '5678',
      app_uuid: '8765',
      team_uuid: 'teamfixture',
      dockerfile: './fixture-user.Dockerfile',
      scaling: { desired_replicas: null },
      signing: { certPath: './cert.pem', keyPath: './key.pem' },
      runtime: { data_plane_version: '0.0.41', installer_version: expect.stringMatching(/^[0-9a-f]{64}$/) },
      HashAlgorithm: 'Sha384 { ... }',
      signature: null,
    });
    expect(pinnedPcrs(c)).toEqual({ PCR0: pcr(text, 'PCR0'), PCR1: pcr(text, 'PCR1'), PCR2: pcr(text, 'PCR2'), PCR8: pcr(text, 'PCR8') });
    // Nothing Evervault-only is left at the top level of the config.
    for (const k of ['uuid', 'app_uuid', 'team_uuid', 'dockerfile', 'scaling', 'signing', 'runtime', 'service', 'acceptor', 'tls_termination']) expect(c).not.toHaveProperty(k);
  });

  it('egress-scaling: [egress] destinations and [scaling] desired_replicas', () => {
    const c = load('egress-scaling.enclave.toml');
    expect(c.egress).toMatchObject({ enabled: true, destinations: ['rpc.example.org', 'backend.example.net'] });
    expect(c.evervault.scaling).toEqual({ desired_replicas: 1 });
    expect(c.evervault.uuid).toBe('enclave_0a1b2c3d4e5f');
    expect(pinnedPcrs(c)).toBeNull();
  });

  it('api-key-auth: the rest loads with defaults for the agent keys', () => {
    const c = load('api-key-auth.enclave.toml');
    expect(c.evervault.dockerfile).toBe('./enclave/Dockerfile');
    expect(c.app.port).toBe(8008);
    expect(c.attestation_cors.origin).toBe('*');
  });

  it('debug-pcrs: debug = true with PCRs loads, the PCRs kept as information (not pins); a string healthcheck', () => {
    const text = read('debug-pcrs.enclave.toml');
    const c = load('debug-pcrs.enclave.toml');
    expect(c.debug).toBe(true);
    expect(c.attestation.PCR0).toBe(pcr(text, 'PCR0'));
    expect(c.attestation.PCR8).toBe(pcr(text, 'PCR8'));
    expect(pinnedPcrs(c)).toBeNull();
    expect(c.healthcheck).toEqual({ path: '/api/v1/health', port: null, interval_ms: 10000 });
    expect(c.egress).toMatchObject({ enabled: true, destinations: ['*.metrics.example.com', 'relay.example.org'] });
  });

  it('debug-no-pcrs: debug enclave without measurements', () => {
    const c = load('debug-no-pcrs.enclave.toml');
    expect(c.debug).toBe(true);
    expect(c.evervault.team_uuid).toBe('team_9abc9abc9abc');
  });

  it('service-acceptor: [service] port → app.port, [attestation_cors] → CORS origin, [acceptor] → limits', () => {
    const c = load('service-acceptor.enclave.toml');
    expect(c.app.port).toBe(3000);
    expect(c.attestation_cors.origin).toBe('https://app.example.com');
    expect(c.limits.max_sessions).toBe(256);
    expect(c.limits.handshake_timeout_ms).toBe(5000);
    expect(c.forward_proxy_protocol).toBe(true);
    expect(c.trusted_headers).toEqual(['x-trace-id']);
    expect(c.trx_logging).toBe(false);
    expect(c.evervault.signature).toMatch(/^[0-9a-f]{192}$/);
    expect(c.evervault.scaling.desired_replicas).toBe(2);
  });
});

describe('Evervault keys against the agent\'s own', () => {
  it('[service] port and [app] port must agree when both are set', () => {
    expect(parseConfig('[service]\nport = 3000\n[app]\nport = 3000').app.port).toBe(3000);
    const e = errorOf(() => parseConfig('[service]\nport = 3000\n[app]\nport = 4000'));
    expect(e.code).toBe('CONFIG_BAD_VALUE');
    expect(e.message).toContain('service.port');
  });

  it('[acceptor] and [limits] must agree when both set one value', () => {
    expect(errorOf(() => parseConfig('[acceptor]\nmax_concurrent_connections = 10\n[limits]\nmax_sessions = 20')).message).toContain('acceptor.max_concurrent_connections');
    expect(parseConfig('[acceptor]\nhandshake_timeout = 3').limits.handshake_timeout_ms).toBe(3000);
    expect(parseConfig('[acceptor]\nmax_concurrent_handshakes = 8').limits.max_concurrent_handshakes).toBe(8);
  });

  it('refuses a bad CORS origin, unknown keys inside the Evervault tables, and a bad port', () => {
    expect(errorOf(() => parseConfig('[attestation_cors]\norigin = "not a url"')).code).toBe('CONFIG_BAD_VALUE');
    expect(errorOf(() => parseConfig('[scaling]\nreplicas = 2')).message).toContain('unknown key "scaling.replicas"');
    expect(errorOf(() => parseConfig('[service]\nport = 0')).code).toBe('CONFIG_BAD_VALUE');
  });

  it('api_key_auth / tls_termination: false load; true loads (http mode only); [api_key_auth] keys', () => {
    expect(() => parseConfig('tls_termination = false\napi_key_auth = false')).not.toThrow();
    expect(parseConfig('tls_termination = true\n[ingress]\ntls_port = 6443').ingress).toEqual({ tls: true, tls_port: 6443, host: 'localhost', acme: null });
    expect(parseConfig('').ingress.tls).toBe(false);
    expect(errorOf(() => parseConfig('tls_termination = true\nmode = "raw"')).message).toContain('needs mode = "http"');
    expect(errorOf(() => parseConfig('tls_termination = true\n[ingress]\ntls_port = 5000')).message).toContain('ingress.tls_port');
    expect(errorOf(() => parseConfig('[ingress]\nhost = "not a host!"')).code).toBe('CONFIG_BAD_VALUE');
    expect(parseConfig('api_key_auth = true').api_key_auth).toEqual({ enabled: true, keys: [] });
    const h = 'AB'.repeat(32);
    expect(parseConfig(`[api_key_auth]\nkeys = ["${h}"]`).api_key_auth).toEqual({ enabled: true, keys: [h.toLowerCase()] });
    expect(parseConfig(`[api_key_auth]\nenabled = false\nkeys = ["${h}"]`).api_key_auth.enabled).toBe(false);
    const clear = errorOf(() => parseConfig('[api_key_auth]\nkeys = ["secret-in-clear"]')).message;
    expect(clear).toContain('api_key_auth.keys[0]');
    expect(clear).not.toContain('secret-in-clear');
    expect(errorOf(() => parseConfig('[api_key_auth]\nkey = []')).message).toContain('unknown key "api_key_auth.key"');
    expect(errorOf(() => parseConfig('api_key_auth = true\nmode = "raw"')).message).toContain('needs mode = "http"');
  });
});

describe('[listen] ops_port and [clock]', () => {
  it('ops_port must differ from the public and control ports', () => {
    expect(errorOf(() => parseConfig('[listen]\nops_port = 5000')).message).toContain('listen.ops_port');
    expect(parseConfig('[listen]\nops_port = 6000').listen.ops_port).toBe(6000);
  });

  it('the example enclave.toml documents ops_port and [clock] at their defaults', () => {
    const example = loadConfig('enclave.toml', {});
    const defaults = parseConfig('');
    expect(example.listen.ops_port).toBe(5009);
    expect(example.clock).toEqual(defaults.clock);
  });

    it('[clock] bounds', () => {
    expect(parseConfig('[clock]\ncorrect = true\nmax_step_ms = 200\nallow_backwards = true').clock).toMatchObject({ correct: true, max_step_ms: 200, allow_backwards: true });
    expect(errorOf(() => parseConfig('[clock]\ninterval_ms = 10')).code).toBe('CONFIG_BAD_VALUE');
    expect(errorOf(() => parseConfig('[clock]\nslew = true')).code).toBe('CONFIG_UNKNOWN_KEY');
  });
});

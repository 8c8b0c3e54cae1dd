import { describe, expect, it } from 'vitest';
import { configFromObject, loadConfig, parseConfig, pinnedPcrs } from '../../src/config.ts';
import { errorOf } from './helpers.ts';

describe('enclave.toml', () => {
  it('gives every default for an empty document', () => {
    const c = configFromObject({});
    expect(c.mode).toBe('http');
    expect(c.trx_logging).toBe(true);
    expect(c.forward_proxy_protocol).toBe(false);
    expect(c.listen).toEqual({ public_port: 5000, control_port: 5007, ops_port: 5009, drain_timeout_ms: 30000 });
    expect(c.clock).toEqual({ interval_ms: 60000, warn_ms: 1000, correct: false, max_step_ms: 5000, allow_backwards: false });
    expect(c.api.port).toBe(9999);
    expect(c.healthcheck).toBeNull();
    expect(c.limits.max_in_flight).toBe(64);
  });

  it('loads the example enclave.toml at the repo root', () => {
    const c = loadConfig('enclave.toml', {});
    expect(c.name).toBe('hello-enclave');
    expect(c.healthcheck).toEqual({ path: '/health', port: null, interval_ms: 10000 });
    expect(c.trusted_headers).toContain('x-trace-*');
    expect(pinnedPcrs(c)).toBeNull();
  });

  it('rejects an unknown key and names it, at any depth', () => {
    expect(errorOf(() => parseConfig('trx_loging = false'))).toEqual({
      code: 'CONFIG_UNKNOWN_KEY',
      message: 'enclave.toml: unknown key "trx_loging" (did you mean "trx_logging"?)',
    });
    expect(errorOf(() => parseConfig('[limits]\nmax_sesions = 3')).message).toContain('"limits.max_sesions"');
    expect(errorOf(() => parseConfig('healthcheck = { path = "/h", prot = 1 }')).message).toContain('"healthcheck.prot"');
  });

  it('rejects wrong types and out-of-range values with expected and found', () => {
    expect(errorOf(() => parseConfig('debug = "yes"')).message).toBe('enclave.toml: debug: expected true or false, found string "yes"');
    expect(errorOf(() => parseConfig('[app]\nport = 70000')).message).toContain('app.port: expected an integer in 1..65535, found number 70000');
    expect(errorOf(() => parseConfig('mode = "tcp"')).message).toContain('one of "http", "raw"');
    expect(errorOf(() => parseConfig('[attestation]\nPCR0 = "abc"')).code).toBe('CONFIG_BAD_VALUE');
    expect(errorOf(() => parseConfig('healthcheck = "health"')).message).toContain('healthcheck: expected a path');
    expect(errorOf(() => parseConfig('[listen]\npublic_port = 7\ncontrol_port = 7')).message).toContain('must differ');
    expect(errorOf(() => parseConfig('[keyring]\nsource = "sealed-file"')).message).toContain('keyring.path: required');
  });

  it('reports TOML syntax errors with the position', () => {
    const e = errorOf(() => parseConfig('name = "x\n', 'my.toml'));
    expect(e.code).toBe('CONFIG_PARSE');
    expect(e.message).toMatch(/^my\.toml: invalid TOML at line \d+, column \d+/);
  });

  it('reports a missing file without a stack trace', () => {
    expect(errorOf(() => loadConfig('/nonexistent/enclave.toml', {}))).toEqual({
      code: 'CONFIG_READ',
      message: 'cannot read /nonexistent/enclave.toml (ENOENT)',
    });
  });

  it('lets FORWARD_PROXY_PROTOCOL override the file and rejects a bad value', () => {
    expect(parseConfig('forward_proxy_protocol = false', 'x', { FORWARD_PROXY_PROTOCOL: 'true' }).forward_proxy_protocol).toBe(true);
    expect(parseConfig('forward_proxy_protocol = true', 'x', { FORWARD_PROXY_PROTOCOL: '0' }).forward_proxy_protocol).toBe(false);
    expect(errorOf(() => parseConfig('', 'x', { FORWARD_PROXY_PROTOCOL: 'maybe' })).code).toBe('CONFIG_BAD_VALUE');
  });

  it('returns the pins only when PCR0..2 are all set', () => {
    const h = 'ab'.repeat(48);
    expect(pinnedPcrs(parseConfig(`[attestation]\nPCR0 = "${h}"\nPCR1 = "${h}"`))).toBeNull();
    expect(pinnedPcrs(parseConfig(`[attestation]\nPCR0 = "${h}"\nPCR1 = "${h}"\nPCR2 = "${h}"\nPCR8 = "${h}"`))).toEqual({ PCR0: h, PCR1: h, PCR2: h, PCR8: h });
  });

  it('loads real PCRs on a debug enclave as information, not pins (Evervault writes both)', () => {
    const h = 'ab'.repeat(48);
    const c = parseConfig(`debug = true\n[attestation]\nPCR0 = "${h}"\nPCR1 = "${h}"\nPCR2 = "${h}"`);
    expect(c.attestation.PCR0).toBe(h);
    expect(pinnedPcrs(c)).toBeNull();
  });
});

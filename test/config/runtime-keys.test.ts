import { describe, expect, it } from 'vitest';
import { configFromObject, loadConfig, parseConfig } from '../../src/config.ts';
import { errorOf } from './helpers.ts';

describe('enclave.toml keys of `enclave-agent run` (supervision and drain)', () => {
  it('defaults the restart, stop and drain settings', () => {
    const c = configFromObject({});
    expect(c.app).toMatchObject({
      restart: 'on-failure',
      stop_timeout_ms: 10_000,
      restart_backoff_ms: 500,
      restart_backoff_max_ms: 30_000,
      max_restarts: 5,
      restart_window_ms: 60_000,
    });
    expect(c.listen.drain_timeout_ms).toBe(30_000);
  });

  it('documents every new key in the example enclave.toml with its default', () => {
    const c = loadConfig('enclave.toml', {});
    expect(c.app.stop_timeout_ms).toBe(10_000);
    expect(c.app.max_restarts).toBe(5);
    expect(c.listen.drain_timeout_ms).toBe(30_000);
  });

  it('reads the keys and bounds them', () => {
    const c = parseConfig('[app]\nrestart = "always"\nmax_restarts = 0\nrestart_backoff_ms = 0\nstop_timeout_ms = 0\n[listen]\ndrain_timeout_ms = 0');
    expect(c.app).toMatchObject({ restart: 'always', max_restarts: 0, restart_backoff_ms: 0, stop_timeout_ms: 0 });
    expect(c.listen.drain_timeout_ms).toBe(0);
    expect(errorOf(() => parseConfig('[app]\nmax_restarts = -1')).message).toContain('app.max_restarts: expected an integer in 0..10000, found number -1');
    expect(errorOf(() => parseConfig('[app]\nrestart = "sometimes"')).message).toContain('one of "never", "on-failure", "always"');
    expect(errorOf(() => parseConfig('[listen]\ndrain_timeout = 5')).message).toBe('enclave.toml: unknown key "listen.drain_timeout" (did you mean "drain_timeout_ms"?)');
  });

  // [app] sandbox: on by default (the app of every `run` is sandboxed); false is the explicit opt-out, and it
  // cannot silently undo [egress]: an unsandboxed app opens vsock, so app_vsock must say so too.
  it('[app] sandbox: true by default; false with [egress] enabled needs egress.app_vsock = true', () => {
    expect(configFromObject({}).app.sandbox).toBe(true);
    expect(loadConfig('enclave.toml', {}).app.sandbox).toBe(true);
    expect(parseConfig('[app]\nsandbox = false').app.sandbox).toBe(false);
    expect(parseConfig('[app]\nsandbox = false\n[egress]\nenabled = true\napp_vsock = true').app.sandbox).toBe(false);
    expect(errorOf(() => parseConfig('[app]\nsandbox = false\n[egress]\nenabled = true'))).toEqual({
      code: 'CONFIG_BAD_VALUE',
      message: 'enclave.toml: app.sandbox: false lets the app open vsock and go around [egress]; set egress.app_vsock = true as well to say so',
    });
    expect(errorOf(() => parseConfig('[app]\nsandbox = "no"')).message).toContain('app.sandbox');
  });

  it('refuses a backoff ceiling below the first delay', () => {
    expect(errorOf(() => parseConfig('[app]\nrestart_backoff_ms = 2000\nrestart_backoff_max_ms = 1000'))).toEqual({
      code: 'CONFIG_BAD_VALUE',
      message: 'enclave.toml: app.restart_backoff_max_ms: must be at least app.restart_backoff_ms (2000), found 1000',
    });
  });
});

// The [limits] keys of this round (enclave.toml → Config) and their responder-side validation.
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.ts';
import { DEFAULT_LIMITS, resolveLimits } from '../../src/responder/limits.ts';

describe('[limits] for idle and non-reading clients and handshakes', () => {
  it('has the stated defaults', () => {
    const l = parseConfig('').limits;
    expect(l.max_sessions_per_client).toBe(64);
    expect(l.write_stall_timeout_ms).toBe(30_000);
    expect(l.max_queued_bytes).toBe(256 * 1024 * 1024);
    expect(l.max_concurrent_handshakes).toBe(4 * os.availableParallelism());
    expect(l.max_queued_handshakes).toBe(256);
    expect(DEFAULT_LIMITS).toMatchObject({ maxSessionsPerClient: 64, writeStallTimeoutMs: 30_000, maxQueuedBytes: 256 << 20, maxQueuedHandshakes: 256 });
  });

  it('reads each key and refuses values out of bounds, naming the key', () => {
    const l = parseConfig(
      '[limits]\nmax_sessions_per_client = 8\nwrite_stall_timeout_ms = 5000\nmax_queued_bytes = 67108864\nmax_concurrent_handshakes = 3\nmax_queued_handshakes = 0\n',
    ).limits;
    expect(l).toMatchObject({ max_sessions_per_client: 8, write_stall_timeout_ms: 5000, max_queued_bytes: 64 << 20, max_concurrent_handshakes: 3, max_queued_handshakes: 0 });
    for (const [key, value] of [
      ['max_sessions_per_client', '0'],
      ['write_stall_timeout_ms', '10'],
      ['max_queued_bytes', '1024'],
      ['max_concurrent_handshakes', '0'],
      ['max_queued_handshakes', '-1'],
      ['max_queued_bytes', '"big"'],
    ] as const) {
      expect(() => parseConfig(`[limits]\n${key} = ${value}\n`), key).toThrow(new RegExp(`limits\\.${key}: expected`));
    }
  });

  it('keeps refusing unknown [limits] keys', () => {
    expect(() => parseConfig('[limits]\nmax_queued_byte = 1\n')).toThrow(/unknown key "limits\.max_queued_byte"/);
  });

  it('responder limits: 0 is allowed only where it means something', () => {
    expect(resolveLimits({ maxQueuedHandshakes: 0 }).maxQueuedHandshakes).toBe(0);
    expect(() => resolveLimits({ maxConcurrentHandshakes: 0 })).toThrow(/maxConcurrentHandshakes: expected an integer ≥ 1/);
    expect(() => resolveLimits({ writeStallTimeoutMs: 1.5 })).toThrow(/writeStallTimeoutMs/);
  });

  it('responder limits: refuses a timeout above 2^31−1 ms, which a Node timer would fire after 1 ms', () => {
    const top = 2 ** 31 - 1;
    for (const key of ['handshakeTimeoutMs', 'idleTimeoutMs', 'dataResponseTimeoutMs', 'writeStallTimeoutMs'] as const) {
      expect(resolveLimits({ [key]: top })[key]).toBe(top);
      expect(() => resolveLimits({ [key]: top + 1 })).toThrow(new RegExp(`limits\\.${key}: expected an integer in 1\\.\\.${top}`));
    }
    // Byte and count limits are not timers: no such ceiling.
    expect(resolveLimits({ maxQueuedBytes: 2 ** 40 }).maxQueuedBytes).toBe(2 ** 40);
  });
});

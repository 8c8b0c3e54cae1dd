// Each decision is one transaction record of type "egress" (no payload) and a count; refusals are logged at
// warn, at most WARN_BURST per window, the rest summarised once the window has passed.
import pino from 'pino';
import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { DecisionLog, egressCounters, RECORD_BURST, WARN_BURST, WARN_WINDOW_MS, type EgressDecision } from '../../src/egress/decision-log.ts';

const denied: EgressDecision = { allowed: false, via: 'explicit', name: 'evil.test', ip: null, port: 443, bytesOut: 0, bytesIn: 0, durationMs: 0.42, reason: 'not on the allow-list' };

describe('DecisionLog', () => {
  it('writes one egress record per decision and counts it', () => {
    const records: object[] = [];
    const before = { ...egressCounters };
    const log = new DecisionLog({ trxSink: { write: (r) => records.push(r), close: async () => {} } });
    log.record({ ...denied, allowed: true, ip: '203.0.113.7', bytesOut: 10, bytesIn: 20, reason: 'closed' });
    log.record(denied);
    log.record({ ...denied, failed: true, reason: 'connect failed' });
    expect(records).toEqual([
      { type: 'egress', allowed: true, via: 'explicit', name: 'evil.test', ip: '203.0.113.7', port: 443, bytes_out: 10, bytes_in: 20, duration_ms: 0.4, reason: 'closed' },
      { type: 'egress', allowed: false, via: 'explicit', name: 'evil.test', ip: null, port: 443, bytes_out: 0, bytes_in: 0, duration_ms: 0.4, reason: 'not on the allow-list' },
      { type: 'egress', allowed: false, via: 'explicit', name: 'evil.test', ip: null, port: 443, bytes_out: 0, bytes_in: 0, duration_ms: 0.4, reason: 'connect failed', failed: true },
    ]);
    expect(egressCounters.allowed - before.allowed).toBe(1);
    expect(egressCounters.denied - before.denied).toBe(1);
    expect(egressCounters.failed - before.failed).toBe(1);
  });

  it('logs refusals at warn, at most WARN_BURST per window, then one summary line', () => {
    const lines: { level: number; msg: string; suppressed?: number }[] = [];
    const logger = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString())), cb()) }));
    let now = 0;
    const log = new DecisionLog({ logger, now: () => now });
    for (let i = 0; i < WARN_BURST + 15; i++) log.record(denied);
    expect(lines.filter((l) => l.msg === 'egress denied')).toHaveLength(WARN_BURST);
    now = WARN_WINDOW_MS;
    log.record(denied);
    const summary = lines.find((l) => l.suppressed !== undefined);
    expect(summary).toMatchObject({ level: 40, suppressed: 15 });
    expect(lines.filter((l) => l.msg === 'egress denied')).toHaveLength(WARN_BURST + 1);
  });

  it('says on the warn line how a flow was refused: denied, failed on the way, or busy at capacity', () => {
    // Failed before the fix: a connection refused at [egress] max_proxy_connections (counted busy) was logged
    // "egress denied", as if the policy had refused it.
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString())), cb()) }));
    let now = 0;
    const log = new DecisionLog({ logger, now: () => now });
    const busy: EgressDecision = { ...denied, name: '', reason: 'egress proxy: 2 connections open ([egress] max_proxy_connections); try again later', code: 'EGRESS_PROXY_BUSY', failed: true, busy: true };
    log.record(busy);
    log.record({ ...denied, failed: true, reason: 'connect failed' });
    log.record(denied);
    const fields = (l: Record<string, unknown>): object => ({ via: l.via, name: l.name, ip: l.ip, port: l.port, reason: l.reason, code: l.code });
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, 'egress busy: at capacity, refused'],
      [40, 'egress failed'],
      [40, 'egress denied'],
    ]);
    // The same fields as before, whatever the line says.
    expect(fields(lines[0]!)).toEqual({ via: 'explicit', name: '', ip: null, port: 443, reason: busy.reason, code: 'EGRESS_PROXY_BUSY' });
    expect(fields(lines[2]!)).toEqual({ via: 'explicit', name: 'evil.test', ip: null, port: 443, reason: 'not on the allow-list', code: undefined });
    // The summary of held-back lines does not call busy ones denied either.
    for (let i = 0; i < WARN_BURST + 5; i++) log.record(busy);
    now = WARN_WINDOW_MS;
    log.record(busy);
    expect(lines.find((l) => l.suppressed !== undefined)).toMatchObject({ suppressed: 8, msg: 'egress refused: more flows refused (denied, failed or busy), not logged one by one' });
  });

  it('writes at most RECORD_BURST records of refused flows per window, then one count record; allowed ones all', () => {
    // Failed before the fix: every refusal (an app looping on a refused name) was its own record on the host.
    const records: Record<string, unknown>[] = [];
    let now = 0;
    const log = new DecisionLog({ trxSink: { write: (r) => records.push(r as Record<string, unknown>), close: async () => {} }, now: () => now });
    const before = egressCounters.denied;
    for (let i = 0; i < RECORD_BURST + 15; i++) log.record({ ...denied, via: 'dns' });
    log.record({ ...denied, allowed: true, reason: 'closed' });
    expect(records.filter((r) => r.allowed === false)).toHaveLength(RECORD_BURST);
    expect(records.filter((r) => r.allowed === true)).toHaveLength(1);
    expect(egressCounters.denied - before).toBe(RECORD_BURST + 15); // every one still counted
    now = WARN_WINDOW_MS;
    log.record(denied);
    expect(records.at(-2)).toEqual({ type: 'egress', allowed: false, suppressed: 15, window_ms: WARN_WINDOW_MS });
    expect(records.at(-1)).toMatchObject({ type: 'egress', allowed: false, name: 'evil.test' });
  });

  it('writes the held-back counts a window later with no further refusal, and at flush (close)', () => {
    vi.useFakeTimers();
    try {
      const records: Record<string, unknown>[] = [];
      const lines: { suppressed?: number }[] = [];
      const logger = pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(JSON.parse(c.toString())), cb()) }));
      const log = new DecisionLog({ trxSink: { write: (r) => records.push(r as Record<string, unknown>), close: async () => {} }, logger });
      for (let i = 0; i < RECORD_BURST + 150; i++) log.record(denied);
      for (let i = 0; i < 3; i++) log.record({ ...denied, allowed: true, reason: 'closed' }); // allowed flows only from here
      vi.advanceTimersByTime(WARN_WINDOW_MS);
      expect(records.filter((r) => r.suppressed !== undefined)).toEqual([{ type: 'egress', allowed: false, suppressed: 150, window_ms: WARN_WINDOW_MS }]);
      expect(lines.filter((l) => l.suppressed !== undefined)).toEqual([expect.objectContaining({ suppressed: RECORD_BURST + 150 - WARN_BURST })]);
      // Held back in the next window and then closed: flush writes it.
      for (let i = 0; i < RECORD_BURST + 7; i++) log.record(denied);
      log.flush();
      expect(records.filter((r) => r.suppressed !== undefined).map((r) => r.suppressed)).toEqual([150, 7]);
    } finally {
      vi.useRealTimers();
    }
  });
});

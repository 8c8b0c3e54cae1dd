// A client chooses its SNI: handshakes refused for it (a nonce label that is not base64, a 32-byte nonce, a
// spent fresh-nonce budget) are logged as one line per interval with counts by code, never one line per
// handshake — the operational log is a resource a client must not be able to fill (README "Configuration").
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryLog, type MemoryLog } from '../faults/stack.ts';
import { startIngressStack, type IngressStack } from './helpers.ts';

let s: IngressStack;
let log: MemoryLog;

beforeAll(async () => {
  log = memoryLog();
  s = await startIngressStack({ ingress: { logger: log.logger, refusalLogIntervalMs: 600_000 } });
}, 30_000);

afterAll(async () => {
  await s?.stop();
});

/** Resolves with whether the handshake completed. */
function handshake(servername: string): Promise<boolean> {
  return new Promise((resolve) => {
    const t = tls.connect({ host: '127.0.0.1', port: s.port, servername, rejectUnauthorized: false });
    t.once('secureConnect', () => {
      t.destroy();
      resolve(true);
    });
    t.once('error', () => resolve(false));
  });
}

describe('TLS ingress: handshakes refused for their SNI', () => {
  it('are counted into one log line per interval, by code, not logged one line per handshake', async () => {
    const refused = [];
    for (let i = 0; i < 4; i++) refused.push(await handshake('not*base64.attest.localhost'));
    for (let i = 0; i < 3; i++) refused.push(await handshake(`${randomBytes(32).toString('base64url')}.attest.localhost`));
    expect(refused.every((ok) => !ok)).toBe(true);
    expect(await handshake('localhost')).toBe(true);
    const lines = (): Record<string, unknown>[] => log.records().filter((r) => /refused for (its|their) SNI/.test(String(r.msg)));
    // Within the interval nothing is written; the close writes what was counted (as the interval's end does).
    expect(lines()).toHaveLength(0);
    await s.ingress.close();
    expect(lines()).toHaveLength(1);
    expect(lines()[0]).toMatchObject({ level: 40, total: 7, counts: { INGRESS_BAD_NONCE: 7 } });
  });
});

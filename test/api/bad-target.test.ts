// A request target `new URL` refuses (`//x:99999/`, `http://x:99999/`, `//[`) once crashed the agent: the parse
// ran outside the handler's try and the handler's promise was dropped, so the rejection was unhandled (exit 70).
// Now it is a 400 API_BAD_INPUT, and the same connection goes on to the next request.
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiServer, type ApiServer } from '../../src/api/server.ts';
import type { Nsm } from '../../src/attestation/nsm.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { rawExchange } from '../util/raw-exchange.ts';

const nsm: Nsm = { attest: () => Promise.resolve(new Uint8Array([0x84])), random: (n) => Promise.resolve(new Uint8Array(n)) };
let api: ApiServer;
const seen: [string, number][] = [];

beforeAll(async () => {
  api = await startApiServer({ keyring: Keyring.generate(), nsm, port: 0, logger: pino({ level: 'silent' }), onRequest: (p, s) => seen.push([p, s]) });
});
afterAll(async () => {
  await api.close();
});

describe('local API: request targets URL cannot parse', () => {
  it.each(['//x:99999/', 'http://x:99999/', '//['])('%s → 400 API_BAD_INPUT, then the next request on the connection is served', async (target) => {
    const host = `127.0.0.1:${api.port}`;
    const out = await rawExchange(api.port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /health HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    const statuses = [...out.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
    expect(statuses).toEqual([400, 200]);
    expect(out).toContain('"error":"API_BAD_INPUT"');
    expect(out).toContain('"status":"ok"');
    expect(seen).toContainEqual(['(unparsed)', 400]);
  });
});

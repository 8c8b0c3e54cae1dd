// The vsock peer filter shared by the credentials server, the egress dialer and the log sink: only the enclave
// served gets through; every other CID (or none read) is closed, counted, and logged at warn once per CID.
import { PassThrough } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ForeignPeers, servedCid } from '../../src/host/vsock-peer.ts';

describe('ForeignPeers', () => {
  it('lets the served CID and non-vsock peers through; closes, counts and logs others once per CID', () => {
    const records: { level: number; peerCid: number | null; servedCid: number }[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => void records.push(JSON.parse(l) as (typeof records)[number]) });
    const f = new ForeignPeers(16, logger, 'not the enclave');
    const stream = (): PassThrough => new PassThrough();
    expect(f.refuse(stream(), { remote: 'vsock:16:1', transport: 'vsock', peerCid: 16 })).toBe(false);
    expect(f.refuse(stream(), { remote: 'unix', transport: 'unix' })).toBe(false);
    const closed = [17, 17, 17, 3, undefined, undefined].map((peerCid) => {
      const s = stream();
      expect(f.refuse(s, { remote: 'vsock:?', transport: 'vsock', ...(peerCid === undefined ? {} : { peerCid }) })).toBe(true);
      return s.destroyed;
    });
    expect(closed.every(Boolean)).toBe(true);
    expect(f.count).toBe(6);
    expect(records.map((r) => [r.level, r.peerCid])).toEqual([
      [40, 17],
      [20, 17],
      [20, 17],
      [40, 3],
      [40, null],
      [20, null],
    ]);
    expect(records.every((r) => r.servedCid === 16)).toBe(true);
  });

  it('servedCid takes one enclave CID and refuses what would serve every enclave', () => {
    expect(servedCid(16, (r) => new Error(r))).toBe(16);
    for (const bad of [undefined, -1, 1.5, 0xffffffff, '16']) expect(() => servedCid(bad, (r) => new Error(r))).toThrow(/give the CID of the enclave served/);
  });
});

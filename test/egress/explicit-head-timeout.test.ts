// A request head that never completes on the explicit proxy is answered 408 Request Timeout (not 400 Bad
// Request: nothing about it was malformed), and nothing is dialled.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { DecisionLog } from '../../src/egress/decision-log.ts';
import { startExplicitProxy } from '../../src/egress/explicit-proxy.ts';
import { FlowTracker } from '../../src/egress/flow-tracker.ts';
import { EgressPolicy } from '../../src/egress/policy.ts';

describe('explicit proxy: a head that never completes', () => {
  it('gets 408 once the head timeout passes; the dialer is never asked', async () => {
    let dialled = 0;
    const log = new DecisionLog();
    const proxy = await startExplicitProxy({
      port: 0,
      policy: new EgressPolicy(['ok.test']),
      dialer: () => {
        dialled++;
        return Promise.reject(new Error('not reached'));
      },
      dns: () => Promise.reject(new Error('not reached')),
      connectTimeoutMs: 1_000,
      log,
      flows: new FlowTracker(log),
      sniCheck: false,
      headTimeoutMs: 200,
    });
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        const c = net.connect({ host: '127.0.0.1', port: proxy.port });
        let got = '';
        c.on('data', (d: Buffer) => (got += d.toString('latin1')));
        c.on('end', () => {
          c.destroy();
          resolve(got);
        });
        c.on('error', reject);
        c.write('CONNECT ok.test:443 HTTP/1.1\r\nhost: ok.test:443\r\n'); // no blank line: the head never ends
      });
      expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 408 Request Timeout');
      expect(dialled).toBe(0);
    } finally {
      await proxy.close();
    }
  });
});

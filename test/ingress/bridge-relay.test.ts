// The host side of TLS ingress: `enclave-agent bridge --tls-listen` relays raw TCP to the agent's TLS port,
// PROXY v2 first when --proxy-protocol; TLS still ends in the agent (the relay sees ciphertext only).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBridgeArgs } from '../../src/cli/bridge.ts';
import { CliUsageError } from '../../src/cli/types.ts';
import { startTcpRelay, type TcpRelay } from '../../src/host/tcp-relay.ts';
import { run, startIngressStack, type IngressStack } from './helpers.ts';

describe('bridge --tls-listen', () => {
  it('parses the relay flags; a vsock agent defaults to its TLS port 5443', () => {
    const v = parseBridgeArgs(['--enclave-cid', '16', '--tls-listen', '0.0.0.0:443', '--proxy-protocol']);
    expect(v.tlsRelay).toEqual({ listen: { host: '0.0.0.0', port: 443 }, target: { kind: 'vsock', cid: 16, port: 5443 }, proxyProtocol: true });
    const t = parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--tls-listen', '127.0.0.1:8444', '--tls-agent', 'tcp:127.0.0.1:5443']);
    expect(t.tlsRelay).toEqual({ listen: { host: '127.0.0.1', port: 8444 }, target: { kind: 'tcp', host: '127.0.0.1', port: 5443 }, proxyProtocol: false });
    expect(() => parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--tls-listen', '127.0.0.1:8444'])).toThrow(CliUsageError);
    expect(() => parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--tls-agent', 'tcp:127.0.0.1:5443'])).toThrow(CliUsageError);
    expect(parseBridgeArgs(['--enclave-cid', '16']).tlsRelay).toBeUndefined();
  });

  describe('relay with PROXY v2 in front of an agent that expects it', () => {
    let s: IngressStack;
    let relay: TcpRelay;
    beforeAll(async () => {
      s = await startIngressStack({ ingress: { acceptProxyProtocol: true } });
      relay = await startTcpRelay({ listen: { host: '127.0.0.1', port: 0 }, target: { kind: 'tcp', host: '127.0.0.1', port: s.port }, proxyProtocol: true });
    }, 30_000);
    afterAll(async () => {
      await relay?.close();
      await s?.stop();
    });

    it('curl through the relay: the app is told the real client address', async () => {
      const r = await run('curl', ['-sS', '-k', '--resolve', `localhost:${relay.port}:127.0.0.1`, `https://localhost:${relay.port}/relayed`]);
      expect(r.stdout).toBe('hello');
      const seen = s.app.seen.find((x) => x.path === '/relayed')!;
      expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
      expect(seen.headers['x-forwarded-proto']).toBe('https');
    });
  });
});

// [api] max_connections reaches the local API that startAgentRuntime starts (as `run` and `start` do): with 2, two
// open connections keep a third out (503 API_TOO_MANY_CONNECTIONS), and the key is checked like every other
// (before it existed it was refused as unknown and the bound could only be set in code).
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config.ts';
import { startAgentStack, type AgentStack } from '../faults/stack.ts';

let app: http.Server;
let stack: AgentStack;
const sockets: net.Socket[] = [];

beforeAll(async () => {
  app = http.createServer((_req, res) => res.end('{}'));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  stack = await startAgentStack({ appPort: (app.address() as AddressInfo).port, extra: { api: { port: 0, max_connections: 2 } } });
}, 30_000);

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await stack?.close();
  await new Promise<void>((resolve) => app.close(() => resolve()));
});

function open(port: number): Promise<net.Socket> {
  const s = net.connect({ port, host: '127.0.0.1' });
  sockets.push(s);
  s.on('error', () => {});
  return new Promise((resolve) => s.once('connect', () => resolve(s)));
}

/** Sends a GET /health on `s` and resolves with everything read until the connection ends (or 5 s). */
function answer(s: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const timer = setTimeout(() => resolve(buf), 5000);
    s.on('data', (d: Buffer) => (buf += d.toString('latin1')));
    s.on('close', () => {
      clearTimeout(timer);
      resolve(buf);
    });
    s.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
  });
}

describe('[api] max_connections', () => {
  it('bounds the local API startAgentRuntime starts', async () => {
    const port = stack.runtime.apiPort!;
    await open(port);
    await open(port);
    const third = await answer(await open(port));
    expect(third).toMatch(/^HTTP\/1\.1 503 /);
    expect(third).toContain('API_TOO_MANY_CONNECTIONS');
  });

  it('is validated: at least 1, and 256 by default', () => {
    expect(configFromObject({}).api.max_connections).toBe(256);
    expect(() => configFromObject({ api: { max_connections: 0 } })).toThrow(/max_connections/);
  });
});

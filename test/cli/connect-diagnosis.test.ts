// A failed WebSocket connect names its cause: the CLI looks again step by step (DNS, TCP, HTTP upgrade) because
// the WebSocket error event carries none. Loopback servers of each kind; DNS through an injected resolver.
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { explainConnectFailure } from '../../src/cli/connect-diagnosis.ts';
import { runCli } from '../../src/cli/run.ts';
import { refusedPort } from '../util/refused-port.ts';

let closedPort: number;
let httpServer: http.Server;
let sshLike: net.Server;
const sshSockets = new Set<net.Socket>();
let wsServer: WebSocketServer;

const port = (s: { address(): AddressInfo | string | null }): number => (s.address() as AddressInfo).port;

const listen = <S extends net.Server>(s: S): Promise<S> => new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));

beforeAll(async () => {
  closedPort = await refusedPort();
  httpServer = await listen(http.createServer((_req, res) => res.end('a web page')));
  sshLike = await listen(
    net.createServer((s) => {
      sshSockets.add(s.on('error', () => {}).on('close', () => sshSockets.delete(s)));
      s.end('SSH-2.0-OpenSSH_9.2\r\n');
    }),
  );
  wsServer = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wsServer.once('listening', r));
});

afterAll(async () => {
  httpServer.closeAllConnections();
  for (const c of wsServer.clients) c.terminate();
  for (const s of sshSockets) s.destroy();
  await Promise.all([
    new Promise((r) => httpServer.close(r)),
    new Promise((r) => sshLike.close(r)),
    new Promise((r) => wsServer.close(r)),
  ]);
});

describe('explainConnectFailure', () => {
  it('a URL that does not parse is described, never quoted (it may carry user:pass@)', async () => {
    const said = await explainConnectFailure('wss://alice:hunter2@[bad/');
    expect(said).toMatch(/does not parse/);
    expect(said).not.toMatch(/hunter2|alice/);
  });

  it('a name that does not resolve: the DNS failure', async () => {
    const lookup = (): Promise<never> => Promise.reject(Object.assign(new Error('getaddrinfo ENOTFOUND bridge.invalid'), { code: 'ENOTFOUND' }));
    expect(await explainConnectFailure('ws://bridge.invalid:8443/', { lookup })).toBe('DNS lookup of "bridge.invalid" failed (ENOTFOUND)');
  });

  it('nothing listening: connection refused, with where to find the URL', async () => {
    expect(await explainConnectFailure(`ws://127.0.0.1:${closedPort}/`)).toBe(
      `connection refused by 127.0.0.1:${closedPort}: nothing listens there (is the bridge running? \`enclave-agent start\` prints the bridge URL)`,
    );
  });

  it('an HTTP server that is not a WebSocket endpoint: its status', async () => {
    expect(await explainConnectFailure(`ws://127.0.0.1:${port(httpServer)}/`)).toBe(
      `127.0.0.1:${port(httpServer)} answered the WebSocket upgrade with HTTP 200: not a WebSocket endpoint (\`enclave-agent start\` prints the bridge URL; ws://, not http://)`,
    );
  });

  it('something that does not speak HTTP', async () => {
    expect(await explainConnectFailure(`ws://127.0.0.1:${port(sshLike)}/`)).toMatch(new RegExp(`^127\\.0\\.0\\.1:${port(sshLike)} does not speak HTTP \\(HPE_[A-Z_]+\\): not a WebSocket endpoint$`));
  });

  it('a WebSocket endpoint: nothing to add (null)', async () => {
    expect(await explainConnectFailure(`ws://127.0.0.1:${port(wsServer)}/`)).toBeNull();
  });
});

describe('enclave-agent fetch / attest on a failed connect', () => {
  it('print the cause, not a bare "WebSocket error", exit 1', async () => {
    const pins = ['--pcrs', `PCR0=${'ab'.repeat(48)},PCR1=${'ab'.repeat(48)},PCR2=${'ab'.repeat(48)}`];
    for (const argv of [['fetch', `ws://127.0.0.1:${closedPort}/`, '/', ...pins], ['attest', `ws://127.0.0.1:${port(httpServer)}/`, ...pins]]) {
      const err: string[] = [];
      const code = await runCli(argv, { out: () => {}, err: (l) => err.push(l), stdin: () => Promise.resolve(new Uint8Array()) });
      expect(code, argv[0]).toBe(1);
      expect(err.join('\n')).toMatch(argv[0] === 'fetch' ? /^enclave-agent fetch: CLIENT_CONNECT_FAILED: connection refused by 127\.0\.0\.1:\d+: / : /^enclave-agent attest: CLIENT_CONNECT_FAILED: 127\.0\.0\.1:\d+ answered the WebSocket upgrade with HTTP 200: not a WebSocket endpoint/);
    }
  });
});

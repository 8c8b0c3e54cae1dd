// HTTP mode in front of a real keep-alive app — Python's http.server (Debian's /usr/bin/python3, the script in
// fixtures/keepalive_app.py, which prints every request it parses) — through a real session: what reaches
// the app, and what a compat client gets back in its Data replies and streams.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpForwarder } from '../../src/http/forwarder.ts';
import type { HttpForwarder } from '../../src/http/forwarder.ts';
import { createMemoryLogSink } from '../../src/http/log-sink.ts';
import { connectClient, startTestAgent, testSimulator, waitFor } from '../responder/helpers.ts';
import type { Agent, TestClient } from '../responder/helpers.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { silentLogger } from './helpers.ts';

const SCRIPT = fileURLToPath(new URL('./fixtures/keepalive_app.py', import.meta.url));

interface AppRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
}

let py: ChildProcess | undefined;
const seen: AppRequest[] = [];
let fwd: HttpForwarder;
let agent: Agent | undefined;
let client: TestClient | undefined;
let nextId = 1;

beforeAll(async () => {
  const child = spawn('/usr/bin/python3', [SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
  py = child;
  const appPort = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the python app exited (${String(code)}) before listening`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('LISTENING ')) resolve(Number(line.slice('LISTENING '.length)));
      else seen.push(JSON.parse(line) as AppRequest);
    });
  });
  fwd = createHttpForwarder({ appPort, logger: silentLogger, logSink: createMemoryLogSink() });
  agent = await startTestAgent({ nsm: await testSimulator(), channel: 'public', forwarder: fwd });
  client = await connectClient(agent.port);
});

afterAll(async () => {
  client?.close();
  await agent?.close();
  await fwd?.close();
  if (py !== undefined && py.exitCode === null && py.signalCode === null) {
    const exited = new Promise((r) => py!.once('exit', r));
    py.kill('SIGKILL');
    await exited;
  }
});

const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

/** Sends one Data request and returns its reply (the tests run one request at a time). */
async function data(raw: string): Promise<ServerMessage> {
  const id = nextId++;
  client!.send({ type: 'Data', id, payload: Buffer.from(raw, 'latin1') });
  const m = (await client!.next()).message;
  expect('id' in m && m.id).toBe(id);
  return m;
}

function dataText(m: ServerMessage): string {
  if (m.type !== 'Data') throw new Error(`expected a Data reply, got ${m.type}${m.type === 'Error' ? `: ${m.message}` : ''}`);
  return text(m.payload);
}

/**
 * A request that surely comes after everything sent so far has been parsed by the app: the app prints
 * requests in the order it parses them, so once this one is printed, any earlier one is too.
 */
async function barrier(name: string): Promise<AppRequest[]> {
  expect(dataText(await data(`GET /${name} HTTP/1.1\r\nHost: app.test\r\n\r\n`))).toMatch(/^HTTP\/1\.1 200 /);
  await waitFor(() => seen.some((r) => r.path === `/${name}`), 5000, `the app to print /${name}`);
  return seen.slice();
}

const UPGRADE =
  'GET / HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
/** What a client hides after the upgrade head: a request with its own Host, client address and request id. */
const SMUGGLED =
  'POST /admin HTTP/1.1\r\nHost: internal.admin\r\nX-Forwarded-For: 10.0.0.1\r\nX-Request-Id: forged-id\r\n' +
  'Content-Length: 7\r\n\r\npayload';

describe('a refused Upgrade never carries a second request to the app (request smuggling)', () => {
  it('one Data message: the client gets the app’s answer to the upgrade, the app never parses the bytes after it', async () => {
    const reply = dataText(await data(UPGRADE + SMUGGLED));
    const all = await barrier('after-data-upgrade');
    expect(all.filter((r) => r.path === '/admin')).toEqual([]);
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(reply).toMatch(/\r\nConnection: close\r\n/i);
    expect(reply.endsWith('\r\n\r\nhello')).toBe(true);
    const upgrade = all.find((r) => r.path === '/' && r.headers.upgrade === 'websocket')!;
    expect(upgrade.headers['x-request-id']).not.toBe('forged-id');
  });

  it('a stream (OpenStream): the same, and the session goes on', async () => {
    const id = nextId++;
    client!.send({ type: 'OpenStream', id, payload: Buffer.from(UPGRADE + SMUGGLED, 'latin1') });
    let got = '';
    for (;;) {
      const m = (await client!.next()).message;
      expect('id' in m && m.id).toBe(id);
      if (m.type === 'StreamData') got += text(m.payload);
      else {
        expect(m.type).toBe('StreamClose');
        break;
      }
    }
    const all = await barrier('after-stream-upgrade');
    expect(all.filter((r) => r.path === '/admin')).toEqual([]);
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    expect(got.endsWith('\r\n\r\nhello')).toBe(true);
  });
});

describe('Expect: 100-continue on a Data request', () => {
  const post = (path: string, extra = ''): string => `POST ${path} HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\n${extra}Content-Length: 4\r\n\r\nbody`;

  it('fast path: the reply is the final response, with no interim 100 before it', async () => {
    const before = fwd.fastPathRequests;
    const reply = dataText(await data(post('/expect-fast')));
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(reply.endsWith('posted 4')).toBe(true);
    expect(fwd.fastPathRequests).toBe(before + 1);
  });

  it('http.Server path (a head the fast path declines): the same', async () => {
    const before = fwd.fastPathRequests;
    // obs-text in a header value: valid for Node's parser, declined by the fast path.
    const reply = dataText(await data(post('/expect-full', 'X-Note: caf\xe9\r\n')));
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(reply.endsWith('posted 4')).toBe(true);
    expect(fwd.fastPathRequests).toBe(before);
    const all = await barrier('after-expect');
    expect(all.find((r) => r.path === '/expect-full')?.headers.expect).toBeUndefined();
  });
});

describe('a truncated app response is an Error, never a complete-looking Data reply', () => {
  // obs-text in a header value sends the request through the http.Server (the fast path already answers Error).
  const viaServer = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: app.test\r\nX-Note: caf\xe9\r\n\r\n`;

  it.each(['/cut-length', '/cut-chunked'])('http.Server path: %s', async (path) => {
    const before = fwd.fastPathRequests;
    const m = await data(viaServer(path));
    expect(fwd.fastPathRequests).toBe(before);
    expect(m.type).toBe('Error');
    expect(m.type === 'Error' && m.message).toBe('the app closed the connection before the end of its response');
    // The session goes on.
    await barrier(`after${path}`);
  });

  it.each(['/cut-length', '/cut-chunked'])('fast path: %s', async (path) => {
    const m = await data(`GET ${path} HTTP/1.1\r\nHost: app.test\r\n\r\n`);
    expect(m.type).toBe('Error');
  });
});

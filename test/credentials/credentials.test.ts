// Credentials into the enclave: the bridge's credentials service in front of the parent's real AWS credential
// chain (the SDK's default chain reaching a fake IMDSv2 on loopback), the agent's provider in front of the
// bridge (TCP and unix standing in for vsock), refresh before expiry (driven by Expiration values and injected
// clocks; the assertions are on fetch counts), malformed frames, and nothing secret in the bridge's log.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { command as bridgeCommand, parseBridgeArgs } from '../../src/cli/bridge.ts';
import { CliUsageError } from '../../src/cli/types.ts';
import { encodeFrame, type AwsCredentials } from '../../src/host/credentials-protocol.ts';
import { startCredentialsServer, type CredentialsListen, type CredentialsServer } from '../../src/host/credentials-server.ts';
import type { ConnectionInfo } from '../../src/transport/types.ts';
import { bridgeCredentialProvider } from '../../src/runtime/credentials-provider.ts';
import { onlyImdsCredentials, startFakeImds, type FakeImds } from './fake-imds.ts';
import { vsockStandIn } from '../host/vsock-stand-in.ts';

const savedEnv = { ...process.env };
let dir: string;
let imds: FakeImds;
const servers: CredentialsServer[] = [];
const logLines: string[] = [];
const logger = pino(
  { level: 'trace' },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(chunk.toString());
      cb();
    },
  }),
);

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'ea-creds-'));
  imds = await startFakeImds();
  onlyImdsCredentials(imds, dir);
});

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

afterAll(async () => {
  await imds.close();
  for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
  Object.assign(process.env, savedEnv);
  rmSync(dir, { recursive: true, force: true });
});

async function serve(opts: Partial<Parameters<typeof startCredentialsServer>[0]> = {}): Promise<CredentialsServer> {
  const s = await startCredentialsServer({ listen: { kind: 'tcp', port: 0 }, logger, ...opts });
  servers.push(s);
  return s;
}

function expectIssued(c: AwsCredentials, i: number): void {
  const want = imds.issued[i]!;
  expect(c).toEqual({ accessKeyId: want.AccessKeyId, secretAccessKey: want.SecretAccessKey, sessionToken: want.Token, expiration: new Date(want.Expiration) });
}

describe('bridge credentials from the parent chain (IMDSv2) to the enclave', () => {
  it('serves the instance role credentials, caches on both sides, and refreshes each side before expiry', async () => {
    imds.expiresInMs = () => 3_600_000;
    const base = imds.counts.credentials;
    const issuedBase = imds.issued.length;
    // One clock for both sides (a clock the enclave disagrees with: the next test).
    let now = Date.now();
    const bridge = await serve({ now: () => now });
    const provider = bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: bridge.port! }, now: () => now });

    const first = await provider();
    expectIssued(first, issuedBase);
    expect(imds.counts.unauthorized).toBe(0); // IMDSv2: every metadata GET carried the session token
    expect(imds.counts.token).toBeGreaterThanOrEqual(1);

    // Fresh on both sides: nobody asks again.
    expect(await provider()).toBe(first);
    expect(provider.fetches).toBe(1);
    expect(bridge.counters.served).toBe(1);

    // Inside the bridge's 5-minute margin, not the agent's 2: the agent keeps its copy and asks nobody.
    now = first.expiration!.getTime() - 4 * 60_000;
    expect(await provider()).toBe(first);
    expect(provider.fetches).toBe(1);

    // Inside the agent's margin: it asks the bridge, which goes back to IMDS for a new pair.
    now = first.expiration!.getTime() - 60_000;
    const second = await provider();
    expect(imds.counts.credentials - base).toBe(2);
    expectIssued(second, issuedBase + 1);
    expect(second.accessKeyId).not.toBe(first.accessKeyId);
    expect(provider.fetches).toBe(2);

    // The SDK's forceRefresh (after an ExpiredToken answer) goes to the bridge even when the copy looks fresh;
    // the bridge's copy is fresh (back on the clock the fake IMDS issues by), so it serves that one.
    now = Date.now();
    expect(await provider({ forceRefresh: true })).toEqual(second);
    expect(provider.fetches).toBe(3);
    expect(bridge.counters.served).toBe(3);
    expect(imds.counts.credentials - base).toBe(2);
  });

  it('short-lived credentials (Expiration inside both margins) are fetched again on every use, mid-run', async () => {
    imds.expiresInMs = () => 60_000;
    const base = imds.counts.credentials;
    const issuedBase = imds.issued.length;
    const bridge = await serve();
    const provider = bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: bridge.port! } });
    const got = [await provider(), await provider(), await provider()];
    expect(imds.counts.credentials - base).toBe(3);
    expect(bridge.counters.served).toBe(3);
    got.forEach((c, i) => expectIssued(c, issuedBase + i));
    imds.expiresInMs = () => 3_600_000;
  });

  it('works over a unix socket (standing in for vsock), and concurrent callers share one fetch', async () => {
    const sock = path.join(dir, 'creds.sock');
    const bridge = await serve({ listen: { kind: 'unix', path: sock } });
    const provider = bridgeCredentialProvider({ target: { kind: 'unix', path: sock } });
    const all = await Promise.all([provider(), provider(), provider()]);
    expect(provider.fetches).toBe(1);
    expect(bridge.counters.served).toBe(1);
    expect(all[1]).toBe(all[0]);
  });

  it('a failing chain gives the enclave a typed error; a failed refresh serves the still-valid copy', async () => {
    let fail = true;
    let now = Date.now();
    const good: AwsCredentials = { accessKeyId: 'AKIDTEST', secretAccessKey: 'secret-of-test', sessionToken: 'tok', expiration: new Date(now + 3_600_000) };
    const bridge = await serve({
      now: () => now,
      source: () => {
        if (fail) return Promise.reject(Object.assign(new Error('no role attached (body with http://169.254.169.254/...)'), { name: 'CredentialsProviderError' }));
        return Promise.resolve(good);
      },
    });
    const provider = bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: bridge.port! }, now: () => now });
    await expect(provider()).rejects.toMatchObject({ code: 'CREDENTIALS_UNAVAILABLE', message: expect.stringContaining('CredentialsProviderError') });
    expect(bridge.counters.failed).toBe(1);
    fail = false;
    expect(await provider()).toEqual(good);
    fail = true;
    now = good.expiration!.getTime() - 60_000; // the bridge wants a refresh, the chain fails, the copy is still valid
    expect(await provider({ forceRefresh: true })).toEqual(good);
    expect(bridge.credentials.fetches).toBe(3);
    expect(logLines.join('')).toContain('serving the cached credentials until they expire');
  });

  it('the agent reports an unreachable bridge and a malformed answer without echoing it', async () => {
    const closed = await serve();
    const port = closed.port!;
    await closed.close();
    servers.splice(servers.indexOf(closed), 1);
    await expect(bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port } })()).rejects.toMatchObject({ code: 'CREDENTIALS_UNREACHABLE' });

    const answers = [encodeFrame({ Status: 'Ok', AccessKeyId: 'AKID-LEAK-CHECK' }), Buffer.from([0, 0, 0, 3, 0x7b, 0x7b, 0x7b]), Buffer.from([0xff, 0xff, 0xff, 0xff])];
    const fake = net.createServer((s) => {
      s.once('data', () => s.write(answers.shift()!));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const fport = (fake.address() as net.AddressInfo).port;
    try {
      const p = (): Promise<AwsCredentials> => bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: fport } })();
      const e1 = await p().catch((e: Error & { code: string }) => e);
      expect(e1).toMatchObject({ code: 'CREDENTIALS_BAD_FRAME' });
      expect(String((e1 as Error).message)).not.toContain('AKID-LEAK-CHECK');
      await expect(p()).rejects.toMatchObject({ code: 'CREDENTIALS_BAD_FRAME' });
      await expect(p()).rejects.toMatchObject({ code: 'CREDENTIALS_FRAME_TOO_LARGE' });
    } finally {
      await new Promise<void>((r) => fake.close(() => r()));
    }
  });

  it('a malformed frame closes only its own connection; the other connections keep being served', async () => {
    const bridge = await serve({ source: () => Promise.resolve({ accessKeyId: 'AKIDOTHER', secretAccessKey: 's' }) });
    const open = (): Promise<net.Socket> => new Promise((resolve) => { const s = net.connect(bridge.port!, '127.0.0.1', () => resolve(s)); });
    const closedAfter = (s: net.Socket, bytes: Buffer): Promise<void> => new Promise((resolve) => { s.on('close', () => resolve()); s.on('error', () => {}); s.write(bytes); });
    const good = await open();
    const answers: Buffer[] = [];
    good.on('data', (b: Buffer) => answers.push(b));

    const big = Buffer.alloc(4);
    big.writeUInt32BE(10_000_000);
    const framed = (text: string): Buffer => Buffer.concat([Buffer.from([0, 0, 0, Buffer.byteLength(text)]), Buffer.from(text)]);
    await closedAfter(await open(), big);
    await closedAfter(await open(), framed('not json'));
    await closedAfter(await open(), framed('[1,2]'));
    await closedAfter(await open(), encodeFrame({ Operation: 'SetClient', AwsAccessKeyId: 'x' }));
    expect(bridge.counters.refused).toBe(4);

    // The long-lived connection, opened before the bad ones, still gets two answers in a row.
    good.write(Buffer.concat([encodeFrame({ Operation: 'GetCredentials' }), encodeFrame({ Operation: 'GetCredentials' })]));
    await expect.poll(() => Buffer.concat(answers).length, { timeout: 5_000 }).toBeGreaterThan(8);
    const all = Buffer.concat(answers);
    const first = JSON.parse(all.subarray(4, 4 + all.readUInt32BE(0)).toString()) as Record<string, string>;
    expect(first).toEqual({ Status: 'Ok', AccessKeyId: 'AKIDOTHER', SecretAccessKey: 's' });
    await expect.poll(() => bridge.counters.served, { timeout: 5_000 }).toBe(2);
    good.destroy();
  });

  it('credentials the chain gives already expired are neither served nor cached; a valid copy is served instead', async () => {
    let now = Date.now();
    let next: AwsCredentials = { accessKeyId: 'AKIDSTALE', secretAccessKey: 'stale', expiration: new Date(now - 1_000) };
    const bridge = await serve({ now: () => now, source: () => Promise.resolve(next) });
    const provider = bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: bridge.port! }, now: () => now });
    await expect(provider()).rejects.toMatchObject({ code: 'CREDENTIALS_UNAVAILABLE' });
    expect(bridge.counters).toMatchObject({ served: 0, failed: 1 });

    const good: AwsCredentials = { accessKeyId: 'AKIDFRESH', secretAccessKey: 'fresh', expiration: new Date(now + 3_600_000) };
    next = good;
    expect(await provider()).toEqual(good);
    // Inside the bridge's refresh margin, the chain answers with expired ones again: the still-valid copy goes out.
    now = good.expiration!.getTime() - 60_000;
    next = { accessKeyId: 'AKIDSTALE', secretAccessKey: 'stale', expiration: new Date(now - 1_000) };
    expect(await provider({ forceRefresh: true })).toEqual(good);
  });

  it("an enclave clock hours off judges expiry on the host's clock: used, cached, refreshed before they expire", async () => {
    // Failed before the fix: with the enclave's clock 3 h ahead, credentials the host had just issued (valid 1 h)
    // arrived "expired" and were refused; with it 3 h behind, they were kept 3 h past their expiry.
    const t0 = Date.now();
    let elapsed = 0; // time passes on both clocks alike
    const issued: AwsCredentials = { accessKeyId: 'AKIDSKEW', secretAccessKey: 'skew', expiration: new Date(t0 + 3_600_000) };
    const bridge = await serve({ now: () => t0 + elapsed, source: () => Promise.resolve(issued) });
    for (const skew of [3 * 3_600_000, -3 * 3_600_000]) {
      elapsed = 0;
      const provider = bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: bridge.port! }, now: () => t0 + skew + elapsed });
      const got = await provider();
      expect(got.accessKeyId).toBe('AKIDSKEW');
      expect(got.expiration!.getTime()).toBe(t0 + skew + 3_600_000); // the hour the host gave them, on the enclave's clock
      elapsed = 3_600_000 - 3 * 60_000; // outside the agent's 2-minute margin: kept
      expect(await provider()).toBe(got);
      elapsed = 3_600_000 - 60_000; // inside it: fetched again
      await provider();
      expect(provider.fetches).toBe(2);
    }
  });

  it('a peer that keeps asking and never reads its answers is closed, not buffered for without bound', async () => {
    const sock = path.join(dir, 'creds-unread.sock');
    // A 16 KiB session token: each answer is ~16 KiB for a 30-byte request.
    const bridge = await serve({ listen: { kind: 'unix', path: sock }, source: () => Promise.resolve({ accessKeyId: 'AKIDUNREAD', secretAccessKey: 's', sessionToken: 'T'.repeat(16_384) }) });
    const peer = net.connect(sock);
    await new Promise<void>((resolve) => peer.once('connect', resolve));
    peer.on('error', () => {});
    peer.pause(); // never reads
    let closed = false;
    peer.once('close', () => (closed = true));
    const request = encodeFrame({ Operation: 'GetCredentials' });
    // One request at a time, each only once the previous one was answered (never a burst the flood rule catches).
    const LIMIT = 2000; // 2000 answers ≈ 32 MiB left unread
    for (let i = 0; i < LIMIT && !closed; i++) {
      const before = bridge.counters.served + bridge.counters.refused;
      peer.write(request);
      while (!closed && bridge.counters.served + bridge.counters.refused === before) await new Promise((r) => setImmediate(r));
    }
    expect(closed).toBe(true);
    expect(bridge.counters.refused).toBe(1);
    // What the socket buffers hold plus the 64 KiB allowance: far below LIMIT answers.
    expect(bridge.counters.served).toBeLessThan(200);
  });

  it('over tcp it listens on loopback only: any other address is refused before it listens', async () => {
    const source = (): Promise<AwsCredentials> => Promise.resolve({ accessKeyId: 'AKIDWIDE', secretAccessKey: 's' });
    for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.com']) {
      await expect(serve({ listen: { kind: 'tcp', host, port: 0 }, source })).rejects.toMatchObject({ code: 'CREDENTIALS_BAD_OPTIONS', message: expect.stringContaining(host) });
    }
    for (const host of ['127.0.0.1', '::1', 'localhost']) {
      const s = await serve({ listen: { kind: 'tcp', host, port: 0 }, source });
      expect(s.port).toBeGreaterThan(0);
    }
  });

  it('over vsock it answers only the agent it serves: a connection from another CID is closed unanswered', async () => {
    // Every enclave on the instance (and a debug-mode build, which KMS would refuse but which still runs next to
    // the role) reaches the parent's vsock port. A stand-in listener hands the server unix-socket connections
    // labelled with the peer CID the native vsock listener reports: the server's own code path from there on.
    const standIn = vsockStandIn(8002, dir);
    const bridge = await serve({ listen: { kind: 'vsock', port: 8002, agentCid: 16 }, listenWith: standIn.listenWith, source: () => Promise.resolve({ accessKeyId: 'AKIDVSOCK', secretAccessKey: 's' }) });
    expect(standIn.listened).toBe(1);
    const peer = (info: ConnectionInfo): Promise<net.Socket> => standIn.peer(info);
    /** Sends one GetCredentials and collects what comes back until the server closes the connection. */
    const askUntilClosed = (s: net.Socket): Promise<Buffer> => new Promise((resolve) => {
      const got: Buffer[] = [];
      s.on('data', (b: Buffer) => got.push(b));
      s.once('close', () => resolve(Buffer.concat(got)));
      s.write(encodeFrame({ Operation: 'GetCredentials' }));
    });

    for (const info of [
      { remote: 'vsock:17:1024', transport: 'vsock', peerCid: 17 }, // another enclave
      { remote: 'vsock:3:1024', transport: 'vsock', peerCid: 3 }, // the parent itself
      { remote: 'vsock:?', transport: 'vsock' }, // the peer address could not be read
    ] as const) {
      expect([info.remote, (await askUntilClosed(await peer(info))).length]).toEqual([info.remote, 0]);
    }
    expect(bridge.counters).toMatchObject({ served: 0, foreignPeers: 3 });

    const agent = await peer({ remote: 'vsock:16:1024', transport: 'vsock', peerCid: 16 });
    const answer = await new Promise<Buffer>((resolve) => {
      agent.once('data', resolve);
      agent.write(encodeFrame({ Operation: 'GetCredentials' }));
    });
    expect(JSON.parse(answer.subarray(4, 4 + answer.readUInt32BE(0)).toString())).toEqual({ Status: 'Ok', AccessKeyId: 'AKIDVSOCK', SecretAccessKey: 's' });
    expect(bridge.counters).toMatchObject({ served: 1, foreignPeers: 3 });
    agent.destroy();
  });

  it('over vsock without the CID of the agent it serves, it refuses to start (it would serve every enclave)', async () => {
    const standIn = vsockStandIn(8002, dir);
    for (const agentCid of [undefined, -1, 1.5, 0xffffffff]) {
      const listen = { kind: 'vsock', port: 8002, agentCid } as unknown as CredentialsListen;
      await expect(serve({ listen, listenWith: standIn.listenWith }), String(agentCid)).rejects.toMatchObject({ code: 'CREDENTIALS_BAD_OPTIONS', message: expect.stringContaining('agent') });
    }
    expect(standIn.listened).toBe(0);
  });

  it('never logs credentials (the bridge at trace level, through all the cases above)', () => {
    const text = logLines.join('');
    expect(text).toContain('credentials served');
    expect(imds.issued.length).toBeGreaterThan(3);
    for (const c of imds.issued) {
      for (const v of [c.AccessKeyId, c.SecretAccessKey, c.Token]) expect(text).not.toContain(v);
    }
    for (const v of ['AKIDTEST', 'secret-of-test', 'AKIDOTHER', '169.254.169.254']) expect(text).not.toContain(v);
  });
});

describe('bridge --credentials', () => {
  const agent = ['--agent', 'tcp:127.0.0.1:5000'];
  it('parses vsock, vsock:PORT, tcp and unix, and refuses anything else', () => {
    expect(parseBridgeArgs(['--enclave-cid', '16', '--credentials', 'vsock']).credentials).toEqual({ kind: 'vsock', port: 8002, agentCid: 16 });
    expect(parseBridgeArgs(['--agent', 'vsock:21:5000', '--credentials', 'vsock:9100']).credentials).toEqual({ kind: 'vsock', port: 9100, agentCid: 21 });
    expect(parseBridgeArgs([...agent, '--credentials', 'tcp:127.0.0.1:9100']).credentials).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 9100 });
    expect(parseBridgeArgs([...agent, '--credentials', 'unix:/run/c.sock']).credentials).toEqual({ kind: 'unix', path: '/run/c.sock' });
    expect(parseBridgeArgs(agent).credentials).toBeUndefined();
    expect(() => parseBridgeArgs([...agent, '--credentials', 'vsock:3:8002'])).toThrow(CliUsageError);
    expect(() => parseBridgeArgs([...agent, '--credentials', 'imds'])).toThrow(/--credentials: expected vsock/);
  });

  it('over vsock it needs a vsock agent (its CID is the only one served): with a tcp/unix agent it is refused', () => {
    for (const a of [agent, ['--agent', 'unix:/run/agent.sock']]) {
      for (const where of ['vsock', 'vsock:9100']) {
        expect(() => parseBridgeArgs([...a, '--credentials', where]), `${a.join(' ')} ${where}`).toThrow(CliUsageError);
        expect(() => parseBridgeArgs([...a, '--credentials', where])).toThrow(/--credentials.*vsock agent/);
      }
    }
    expect(parseBridgeArgs([...agent, '--credentials', 'unix:/run/c.sock']).credentials).toEqual({ kind: 'unix', path: '/run/c.sock' });
    expect(bridgeCommand.help).toMatch(/--credentials[\s\S]*only the agent's CID/);
  });

  it('over tcp a non-loopback address is a usage error naming the flag, as for --egress', () => {
    // The server refuses a non-loopback address at start; the command line names it before anything starts.
    for (const where of ['tcp:0.0.0.0:8002', 'tcp:10.0.0.5:8002', 'tcp:[::]:8002']) {
      expect(() => parseBridgeArgs([...agent, '--credentials', where]), where).toThrow(CliUsageError);
      expect(() => parseBridgeArgs([...agent, '--credentials', where])).toThrow(/--credentials.*loopback only/);
    }
    for (const where of ['tcp:127.0.0.1:8002', 'tcp:[::1]:8002', 'tcp:localhost:8002']) expect(parseBridgeArgs([...agent, '--credentials', where]).credentials?.kind).toBe('tcp');
  });
});

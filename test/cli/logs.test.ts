// `enclave-agent logs`: the host-side log sink CLI, over AF_UNIX (the same server code path as vsock).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { command as logsCommand, parseListen, parseLogsArgs, serveLogs } from '../../src/cli/logs.ts';
import { runCli } from '../../src/cli/run.ts';
import { CliUsageError, type CliIo } from '../../src/cli/types.ts';
import { createReconnectingLogSink } from '../../src/runtime/stream-log-sink.ts';
import { connectStream } from '../../src/transport/connect.ts';
import { startBin } from './spawn.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function tmpDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-logs-cli-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function capture(): CliIo & { outLines: string[]; errLines: string[] } {
  const outLines: string[] = [];
  const errLines: string[] = [];
  return { outLines, errLines, out: (l) => outLines.push(l), err: (l) => errLines.push(l), stdin: () => Promise.resolve(new Uint8Array()) };
}

async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const jsonLines = (text: string): Record<string, unknown>[] =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

function rawClient(p: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path: p });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
    cleanup.push(() => void s.destroy());
  });
}

describe('enclave-agent logs flags', () => {
  it('parses each --listen form; vsock takes only a port (it listens on any local CID)', () => {
    expect(parseListen('vsock:5008', 16)).toEqual({ kind: 'vsock', port: 5008, enclaveCid: 16 });
    expect(parseListen('unix:/run/logs.sock')).toEqual({ kind: 'unix', path: '/run/logs.sock' });
    expect(parseListen('tcp:127.0.0.1:0')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 0 });
    expect(parseListen('tcp:[::1]:7000')).toEqual({ kind: 'tcp', host: '::1', port: 7000 });
    for (const bad of ['5008', 'vsock:2:5008', 'vsock:', 'vsock:0', 'vsock:5008', 'unix:', 'tcp:127.0.0.1', 'tcp:h:70000', 'http://x', 'udp:1.2.3.4:5']) {
      expect(() => parseListen(bad), bad).toThrow(CliUsageError);
    }
  });

  it('over tcp listens on loopback only, as the credentials server and egress dialer do', async () => {
    expect(parseListen('tcp:localhost:7000')).toEqual({ kind: 'tcp', host: 'localhost', port: 7000 });
    expect(parseListen('tcp:127.0.0.2:7000')).toEqual({ kind: 'tcp', host: '127.0.0.2', port: 7000 });
    for (const where of ['tcp:0.0.0.0:7000', 'tcp:10.0.0.5:7000', 'tcp:[::]:7000', 'tcp:example.com:7000']) {
      expect(() => parseListen(where), where).toThrow(CliUsageError);
      expect(() => parseListen(where), where).toThrow(`--listen: over tcp the log sink listens on loopback only (127.0.0.1, [::1], localhost), found "${where}"`);
    }
    const io = capture();
    expect(await runCli(['logs', '--listen', 'tcp:0.0.0.0:0'], io)).toBe(2);
    expect(io.errLines).toEqual([expect.stringMatching(/^enclave-agent logs: --listen: over tcp the log sink listens on loopback only .*found "tcp:0\.0\.0\.0:0"/)]);
  });

  it('defaults to vsock on [log] vsock_port of the config, 5008 with every default', async () => {
    const dir = await tmpDir();
    const toml = path.join(dir, 'enclave.toml');
    await writeFile(toml, '[log]\nsink = "vsock"\nvsock_port = 6123\n');
    expect(parseLogsArgs(['--config', toml, '--enclave-cid', '16']).listen).toEqual({ kind: 'vsock', port: 6123, enclaveCid: 16 });
    const empty = path.join(dir, 'empty.toml');
    await writeFile(empty, '');
    expect(parseLogsArgs(['--config', empty, '--enclave-cid', '21'])).toMatchObject({ listen: { kind: 'vsock', port: 5008, enclaveCid: 21 }, out: null, logLevel: 'info' });
    expect(parseLogsArgs(['--listen', 'unix:/x', '--out', 'f.jsonl', '--max-line-bytes', '300', '--max-connections', '2'])).toMatchObject({
      listen: { kind: 'unix', path: '/x' },
      out: 'f.jsonl',
      maxLineBytes: 300,
      maxConnections: 2,
    });
  });

  it('over vsock (explicit or the default) it needs --enclave-cid: every enclave on the instance reaches the port', async () => {
    const dir = await tmpDir();
    const toml = path.join(dir, 'enclave.toml');
    await writeFile(toml, '[log]\nsink = "vsock"\nvsock_port = 6123\n');
    for (const args of [['--listen', 'vsock:5008'], ['--config', toml], ['--config', toml, '--db', path.join(dir, 'a.db')]]) {
      expect(() => parseLogsArgs(args, {}), args.join(' ')).toThrow(CliUsageError);
      expect(() => parseLogsArgs(args, {}), args.join(' ')).toThrow(/vsock:(5008|6123).* reads only the enclave's CID: give --enclave-cid CID/);
    }
    expect(parseLogsArgs(['--listen', 'vsock:5008', '--enclave-cid', '4'], {}).listen).toEqual({ kind: 'vsock', port: 5008, enclaveCid: 4 });
    // accepted and ignored would be a defect: a CID with a unix/tcp listener, or one that means "any"
    expect(() => parseLogsArgs(['--listen', 'unix:/x', '--enclave-cid', '16'], {})).toThrow(/--enclave-cid goes with a vsock listener/);
    for (const cid of ['4294967295', '-1', 'x', '']) {
      expect(() => parseLogsArgs(['--listen', 'vsock:5008', '--enclave-cid', cid], {}), cid).toThrow(/--enclave-cid/);
    }
    const io = capture();
    expect(await runCli(['logs', '--listen', 'vsock:5008'], io)).toBe(2);
    expect(io.errLines).toEqual([expect.stringMatching(/^enclave-agent logs: --listen vsock:5008 reads only the enclave's CID: give --enclave-cid CID/)]);
    expect(logsCommand.help).toMatch(/--enclave-cid CID +required with vsock/);
  });

  it('rejects malformed flags as usage errors (exit 2, one line)', async () => {
    for (const args of [['--listen', 'vsock:x'], ['--listen', 'unix:/x', '--max-line-bytes', '1'], ['--listen', 'unix:/x', '--max-connections', '0'], ['--listen', 'unix:/x', '--log-level', 'loud'], ['--listen', 'unix:/x', 'extra'], ['--bogus']]) {
      expect(() => parseLogsArgs(args), args.join(' ')).toThrow(CliUsageError);
    }
    const io = capture();
    expect(await runCli(['logs', '--listen', 'tcp:nope'], io)).toBe(2);
    expect(io.errLines).toHaveLength(1);
    expect(io.errLines[0]).toMatch(/^enclave-agent logs: --listen expects vsock:PORT, unix:PATH or tcp:HOST:PORT, found "tcp:nope"/);
  });

  it('an output file that cannot be opened is one error line before anything listens', async () => {
    const dir = await tmpDir();
    const sock = path.join(dir, 'logs.sock');
    const io = capture();
    expect(await runCli(['logs', '--listen', `unix:${sock}`, '--out', path.join(dir, 'missing-dir', 'x.jsonl')], io)).toBe(2);
    expect(io.errLines).toEqual([expect.stringMatching(/^enclave-agent logs: --out: cannot open .*x\.jsonl for appending \(ENOENT\)/)]);
    await expect(rawClient(sock)).rejects.toThrow();
  });
});

describe('enclave-agent logs (in process, AF_UNIX)', () => {
  it("writes the agent sink's records to --out as JSON lines; a non-JSON line is dropped and counted", async () => {
    const dir = await tmpDir();
    const sock = path.join(dir, 'logs.sock');
    const out = path.join(dir, 'agent.jsonl');
    await writeFile(out, '{"earlier":"line"}\n'); // appended to, never truncated
    const io = capture();
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const done = serveLogs(['--listen', `unix:${sock}`, '--out', out], io, () => stopped, { logger: pino({ level: 'silent' }) });
    cleanup.push(async () => {
      stop();
      await done.catch(() => {});
    });
    await until(() => io.errLines.length > 0);
    expect(io.errLines[0]).toBe(`enclave-agent logs: listening on ${sock} (${sock}), writing JSON lines to ${out}`);

    // The agent side, as createRuntimeLogs builds it for [log] sink = "vsock" (here over a Unix socket).
    const agentSink = createReconnectingLogSink({ connect: () => connectStream({ kind: 'unix', path: sock }, { timeoutMs: 1_000 }), reconnectInitialMs: 20, reconnectMaxMs: 100 });
    const logger = pino({ base: { name: 'enclave-agent' } }, agentSink.destination);
    logger.info({ port: 5000 }, 'agent listening');
    agentSink.write({ type: 'trx', method: 'POST', status: 200 });

    const hostile = await rawClient(sock);
    hostile.write('this is not json\n{"fine":true}\n');

    await until(async () => (await readFile(out, 'utf8')).split('\n').length >= 5);
    await agentSink.close(1_000);
    hostile.end();
    stop();
    expect(await done).toBe(0);

    const lines = jsonLines(await readFile(out, 'utf8'));
    expect(lines[0]).toEqual({ earlier: 'line' });
    expect(lines).toContainEqual(expect.objectContaining({ name: 'enclave-agent', msg: 'agent listening', port: 5000 }));
    expect(lines).toContainEqual({ level: 'info', type: 'trx', method: 'POST', status: 200 });
    expect(lines).toContainEqual({ fine: true });
    expect(lines).toHaveLength(4);
    expect(io.errLines.at(-1)).toBe('enclave-agent logs: stopped; 3 lines written, 1 dropped (not JSON), 0 dropped (too long), 2 connections, 0 refused, 0 from other CIDs, 0 HTTP requests (closed unread), 0 silent (closed for room)');
    expect(io.outLines).toEqual([]);
  });

  it('drops lines longer than --max-line-bytes and keeps the stream', async () => {
    const dir = await tmpDir();
    const sock = path.join(dir, 'logs.sock');
    const chunks: string[] = [];
    const output = new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c.toString());
        cb();
      },
    });
    const io = capture();
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const done = serveLogs(['--listen', `unix:${sock}`, '--max-line-bytes', '64'], io, () => stopped, { output, logger: pino({ level: 'silent' }) });
    cleanup.push(async () => {
      stop();
      await done.catch(() => {});
    });
    await until(() => io.errLines.length > 0);
    expect(io.errLines[0]).toContain('writing JSON lines to stdout');
    const c = await rawClient(sock);
    c.write(`{"big":"${'x'.repeat(200)}"}\n{"small":1}\n`);
    await until(() => chunks.join('').includes('small'));
    stop();
    expect(await done).toBe(0);
    expect(jsonLines(chunks.join(''))).toEqual([{ small: 1 }]);
    expect(io.errLines.at(-1)).toContain('1 lines written, 0 dropped (not JSON), 1 dropped (too long)');
  });
});

describe('enclave-agent logs (the binary)', () => {
  it('runs until SIGTERM, writing what the agent sends, and exits 0', { timeout: 60_000 }, async () => {
    const dir = await tmpDir();
    const sock = path.join(dir, 'logs.sock');
    const out = path.join(dir, 'out.jsonl');
    const run = startBin(['logs', '--listen', `unix:${sock}`, '--out', out, '--log-level', 'silent']);
    cleanup.push(() => void run.child.kill('SIGKILL'));
    await until(() => run.stderr().includes('listening on'), 45_000);
    const c = await rawClient(sock);
    c.write('{"msg":"from the enclave"}\n');
    await until(async () => (await readFile(out, 'utf8').catch(() => '')).includes('from the enclave'));
    run.child.kill('SIGTERM');
    expect(await run.exited).toEqual({ code: 0, signal: null });
    expect(jsonLines(await readFile(out, 'utf8'))).toEqual([{ msg: 'from the enclave' }]);
    expect(run.stderr()).toContain('stopped; 1 lines written');
  });
});

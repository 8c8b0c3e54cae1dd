// Connections that send nothing must not keep the agent out of the log sink's TCP port (`logs --listen
// tcp:127.0.0.1:PORT`): a browser's preconnects, or any local process, could open maxConnections of them and the
// agent's connection was refused for as long as they stayed open. At the cap, the oldest connection open
// silentAfterMs without one complete line is closed to make room; one that has sent a line never is.
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { startLogSinkServer, type LogSinkServer, type LogSinkServerOptions } from '../../src/host/log-sink-server.ts';
import { until } from '../runtime/harness.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function sink(extra: Partial<LogSinkServerOptions>): Promise<{ srv: LogSinkServer; taken: string[] }> {
  const taken: string[] = [];
  const srv = await startLogSinkServer({ listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, output: new PassThrough(), onLine: (text) => (taken.push(text), true), ...extra });
  cleanup.push(() => srv.close());
  return { srv, taken };
}

/** A connection once it is open, and a promise of its close. */
async function connect(port: number): Promise<{ socket: net.Socket; closed: Promise<void> }> {
  const socket = net.connect({ host: '127.0.0.1', port });
  cleanup.push(() => void socket.destroy());
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  return { socket, closed };
}

/** Opens `n` connections that send nothing (or half a line), each accepted by the sink before the next. */
async function squat(srv: LogSinkServer, n: number, opening = ''): Promise<{ socket: net.Socket; closed: Promise<void> }[]> {
  const conns = [];
  for (let i = 0; i < n; i++) {
    const accepted = srv.stats.connections + 1;
    const c = await connect(srv.port!);
    if (opening !== '') c.socket.write(opening);
    await until(() => (srv.stats.connections >= accepted ? true : undefined), 5_000, `connection ${i} accepted`);
    conns.push(c);
  }
  return conns;
}

/** The agent: connects, sends one line; resolves 'read' when the sink has it, 'refused' when the sink closes it first. */
async function agentLine(srv: LogSinkServer, taken: string[], line: string): Promise<'read' | 'refused'> {
  const { socket, closed } = await connect(srv.port!);
  socket.write(line + '\n');
  return Promise.race([closed.then(() => 'refused' as const), until(() => (taken.includes(line) ? ('read' as const) : undefined), 5_000, 'the line')]);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('log sink: silent connections at the cap', () => {
  it('the agent gets in once connections that sent nothing have been silent silentAfterMs', async () => {
    const { srv, taken } = await sink({ maxConnections: 16, silentAfterMs: 200 });
    const squatters = await squat(srv, 12);
    squatters.push(...(await squat(srv, 4, '{"half":'))); // half a line is no line either
    await sleep(300); // past silentAfterMs
    expect(await agentLine(srv, taken, '{"msg":"from the agent"}')).toBe('read');
    expect(srv.stats).toMatchObject({ silent: 1, refused: 0, lines: 1 });
    await squatters[0]!.closed; // the oldest gave way
  });

  it('a connection that has sent a line is never closed for a newcomer; with no silent one old enough, the newcomer is refused', async () => {
    const { srv, taken } = await sink({ maxConnections: 2, silentAfterMs: 200 });
    // Both slots taken by connections that have sent a line (agentLine leaves its connection open).
    expect(await agentLine(srv, taken, '{"n":1}')).toBe('read');
    const agent = await connect(srv.port!);
    agent.socket.write('{"n":2}\n');
    await until(() => (taken.length === 2 ? true : undefined), 5_000, 'line 2');
    await sleep(300); // past silentAfterMs
    const late = await connect(srv.port!);
    await late.closed;
    expect(srv.stats).toMatchObject({ refused: 1, silent: 0 });
    // The agent still streams.
    agent.socket.write('{"n":3}\n');
    await until(() => (taken.length === 3 ? true : undefined), 5_000, 'line 3');
  });

  it('silent connections younger than silentAfterMs keep their slots: the newest is refused', async () => {
    const { srv, taken } = await sink({ maxConnections: 4, silentAfterMs: 600_000 });
    await squat(srv, 4);
    expect(await agentLine(srv, taken, '{"msg":"too early"}')).toBe('refused');
    expect(srv.stats).toMatchObject({ refused: 1, silent: 0, lines: 0 });
  });

  it('refuses a bad silentAfterMs', async () => {
    await expect(sink({ silentAfterMs: -1 })).rejects.toMatchObject({ code: 'LOG_SINK_SERVER_BAD_OPTIONS' });
  });
});

// The native splice relay (native/src/splice.c through src/egress/native-splice.ts), as splice() uses it for
// egress flows between kernel sockets: client ↔ midA ==relay== midB ↔ server, over loopback TCP and over a
// NativeStream (the vsock engine on AF_UNIX). Every test checks the addon's relay counter, so none of them
// passes on the JS relay by accident.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { openSync, closeSync } from 'node:fs';
import net from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeSpliceStats } from '../../src/egress/native-splice.ts';
import { NATIVE_AFTER, splice, type Splice } from '../../src/egress/splice.ts';
import { addonPath, loadNative } from '../../src/transport/native.ts';
import type { NativeStream } from '../../src/transport/native-stream.ts';
import { connectUnixNative, listenUnixNative } from '../../src/transport/unix-native.ts';
import type { NativeListener } from '../../src/transport/native-listener.ts';
import { available, closed, openFds, readAll, sleep, tempDir } from '../native/helpers.ts';
import { sha256 } from './helpers.ts';

const started = (): number => nativeSpliceStats()!.started;

let server: net.Server;
let port = 0;
const waiting = new Map<number, (s: net.Socket) => void>();
const early = new Map<number, net.Socket>();

/** A connected loopback TCP pair: [client, the server's accepted socket]; both allow half-open. */
async function tcpPair(): Promise<[net.Socket, net.Socket]> {
  const c = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true });
  await once(c, 'connect');
  const p = c.localPort!;
  const s = early.get(p) ?? (await new Promise<net.Socket>((r) => waiting.set(p, r)));
  early.delete(p);
  return [c, s];
}

let tmp: ReturnType<typeof tempDir>;
let unixListener: NativeListener;
const unixAccepted: NativeStream[] = [];

let pairing: Promise<unknown> = Promise.resolve();

/** A connected NativeStream pair over AF_UNIX (the vsock engine): [client, accepted]. One at a time, so that
 * the accepted stream is the client's own. */
function nativePair(): Promise<[NativeStream, NativeStream]> {
  const next = pairing.then(async (): Promise<[NativeStream, NativeStream]> => {
    const c = await connectUnixNative(unixListener.address);
    while (unixAccepted.length === 0) await sleep(1);
    return [c, unixAccepted.shift()!];
  });
  pairing = next;
  return next;
}

/** Resolves when `s` reads EOF or fails (an AF_UNIX peer that was closed: no reset exists there). */
function ended(s: Duplex): Promise<void> {
  return new Promise((resolve) => {
    s.once('end', () => resolve());
    s.once('error', () => resolve());
    s.resume();
  });
}

interface Flow {
  client: Duplex;
  server: Duplex;
  relay: Splice;
}

/**
 * client ↔ midA ==relay== midB ↔ server; midB is a NativeStream when `native`. The native relay from the first
 * byte unless `nativeAfter` says otherwise (splice()'s default: after NATIVE_AFTER bytes through the JS relay).
 */
async function flow(opts: { native?: boolean; nativeAfter?: number; handoffDeadlineMs?: number; before?: (midA: Duplex, midB: Duplex) => void } = {}): Promise<Flow> {
  const [client, midA] = await tcpPair();
  const [midB, srv] = opts.native ? await nativePair() : await tcpPair();
  for (const s of [client, srv]) s.on('error', () => {});
  opts.before?.(midA, midB);
  const deadline = opts.handoffDeadlineMs === undefined ? {} : { handoffDeadlineMs: opts.handoffDeadlineMs };
  return { client, server: srv, relay: splice(midA, midB, { nativeAfter: opts.nativeAfter ?? 0, ...deadline }) };
}

/** Writes `data` honouring backpressure, then ends. */
function send(s: Duplex, data: Buffer): void {
  let off = 0;
  const pump = (): void => {
    while (off < data.length) {
      const chunk = data.subarray(off, off + 64 * 1024);
      off += chunk.length;
      if (!s.write(chunk)) return void s.once('drain', pump);
    }
    s.end();
  };
  pump();
}

describe.skipIf(!available)('native splice relay', () => {
  beforeAll(async () => {
    server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
      const r = waiting.get(s.remotePort!);
      if (r) {
        waiting.delete(s.remotePort!);
        r(s);
      } else early.set(s.remotePort!, s);
    });
    await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
    port = (server.address() as net.AddressInfo).port;
    tmp = tempDir();
    unixListener = await listenUnixNative(tmp.sock(), { onConnection: (s) => void unixAccepted.push(s as NativeStream) });
  });
  afterAll(async () => {
    await unixListener?.close();
    tmp?.cleanup();
    await new Promise<void>((r) => server.close(() => r()));
  });

  for (const native of [false, true]) {
    for (const midFlow of [false, true]) {
      const how = midFlow ? 'handed from the JS relay to the native one mid-flow, bytes in flight both ways' : 'native from the first byte';
      it(`copies > 1 MiB each way byte-exact, ${how} (TCP ↔ ${native ? 'NativeStream/AF_UNIX' : 'TCP'})`, async () => {
        const before = started();
        const f = await flow({ native, ...(midFlow ? { nativeAfter: NATIVE_AFTER } : {}) });
        const up = randomBytes(3 * 1024 * 1024 + 17);
        const down = randomBytes(2 * 1024 * 1024 + 5);
        const gotUp = readAll(f.server);
        const gotDown = readAll(f.client);
        send(f.client, up);
        send(f.server, down);
        expect(sha256(await gotUp)).toBe(sha256(up));
        expect(sha256(await gotDown)).toBe(sha256(down));
        expect(await f.relay.done).toEqual({ aToB: up.length, bToA: down.length, clean: true });
        expect(started()).toBe(before + 1);
      });
    }
  }

  for (const native of [false, true]) {
    it(`hands over a download whose request direction the JS relay already ended (${native ? 'NativeStream' : 'TCP'})`, async () => {
      const before = started();
      const f = await flow({ native, nativeAfter: NATIVE_AFTER });
      const gotRequest = readAll(f.server);
      f.client.end('go'); // request, FIN, then the long response: the JS relay passes the FIN on
      expect((await gotRequest).toString()).toBe('go');
      const down = randomBytes(3 * 1024 * 1024 + 7);
      const gotDown = readAll(f.client);
      send(f.server, down);
      expect(sha256(await gotDown)).toBe(sha256(down));
      expect(await f.relay.done).toEqual({ aToB: 2, bToA: down.length, clean: true });
      expect(started()).toBe(before + 1);
    });
  }

  it('after the hand-off mid-flow, the response sent after the client’s FIN still passes', async () => {
    const before = started();
    const f = await flow({ nativeAfter: NATIVE_AFTER });
    const request = randomBytes(NATIVE_AFTER + 100_000);
    const gotRequest = readAll(f.server);
    send(f.client, request);
    expect(sha256(await gotRequest)).toBe(sha256(request));
    const response = readAll(f.client);
    f.server.end('response after FIN');
    expect((await response).toString()).toBe('response after FIN');
    expect(await f.relay.done).toEqual({ aToB: request.length, bToA: 18, clean: true });
    expect(started()).toBe(before + 1);
  });

  it('leaves a small flow to the JS relay (no thread, pipes or dups for a short request)', async () => {
    const before = started();
    const f = await flow({ nativeAfter: NATIVE_AFTER });
    const gotRequest = readAll(f.server);
    f.client.end('GET / HTTP/1.1\r\n\r\n');
    expect((await gotRequest).length).toBe(18);
    const response = readAll(f.client);
    f.server.end('HTTP/1.1 200 OK\r\n\r\n');
    expect((await response).length).toBe(19);
    expect(await f.relay.done).toEqual({ aToB: 18, bToA: 19, clean: true });
    expect(started()).toBe(before);
  });

  it('passes a request, then the response sent after the client’s FIN (half-close)', async () => {
    const f = await flow();
    f.client.end('request');
    expect((await readAll(f.server)).toString()).toBe('request');
    const response = readAll(f.client);
    f.server.end('response after FIN');
    expect((await response).toString()).toBe('response after FIN');
    expect(await f.relay.done).toEqual({ aToB: 7, bToA: 18, clean: true });
  });

  it('passes the server’s FIN first, then the client’s late request (the other order)', async () => {
    const f = await flow({ native: true });
    f.server.end('banner');
    expect((await readAll(f.client)).toString()).toBe('banner');
    const request = readAll(f.server);
    f.client.end('late request');
    expect((await request).toString()).toBe('late request');
    expect(await f.relay.done).toEqual({ aToB: 12, bToA: 6, clean: true });
  });

  it('passes on first the bytes JS had already read and the writes JS had queued', async () => {
    const before = started();
    const f = await flow({
      before: (midA, midB) => {
        midA.unshift(Buffer.from('head-tail|')); // what a request-head parser read past the head
        midA.write('HTTP/1.1 200 Connection Established\r\n\r\n'); // a reply queued just before the splice
        midB.unshift(Buffer.from('frame-rest|'));
      },
    });
    const atServer = readAll(f.server);
    const atClient = readAll(f.client);
    f.client.end('body');
    f.server.end('answer');
    expect((await atServer).toString()).toBe('head-tail|body');
    expect((await atClient).toString()).toBe('HTTP/1.1 200 Connection Established\r\n\r\nframe-rest|answer');
    expect(await f.relay.done).toEqual({ aToB: 14, bToA: 17, clean: true });
    expect(started()).toBe(before + 1);
  });

  it('a reset on one side resets the other and reports the flow as not clean', async () => {
    const f = await flow();
    f.client.write('partial');
    await new Promise<void>((r) => f.server.once('data', () => r()));
    const serverClosed = closed(f.server);
    (f.client as net.Socket).resetAndDestroy();
    const err = await serverClosed;
    expect(err).toMatchObject({ code: 'ECONNRESET' });
    const r = await f.relay.done;
    expect(r.clean).toBe(false);
    expect(r.aToB).toBe(7);
  });

  it('destroy() (cancel) mid-flow ends the relay and resets both sides; counts() reads while running', async () => {
    const f = await flow({ native: true });
    let got = 0;
    f.server.on('data', (c: Buffer) => (got += c.length));
    const chunk = Buffer.alloc(100 * 1024, 1);
    f.client.write(chunk);
    while (got < chunk.length) await sleep(5);
    expect(f.relay.counts()).toEqual({ aToB: chunk.length, bToA: 0 }); // the relay still runs
    const clientClosed = closed(f.client);
    const serverEnded = ended(f.server);
    f.relay.destroy();
    expect(await clientClosed).toMatchObject({ code: 'ECONNRESET' }); // TCP side: a reset, not a FIN
    await serverEnded; // the AF_UNIX side cannot be reset: it is closed
    f.server.destroy();
    expect(await f.relay.done).toEqual({ aToB: chunk.length, bToA: 0, clean: false });
  });

  it('a side destroyed by someone else while the relay runs ends the relay and resets the other', async () => {
    const [client, midA] = await tcpPair();
    const [midB, srv] = await tcpPair();
    client.on('error', () => {});
    const s = splice(midA, midB);
    const clientClosed = closed(client);
    midB.destroy(); // e.g. the dialer closing its streams
    expect(await clientClosed).toMatchObject({ code: 'ECONNRESET' });
    expect((await s.done).clean).toBe(false);
    srv.destroy();
  });

  it('never passes more than 32 KiB to one splice() into the vsock-engine (AF_UNIX) socket', async () => {
    const f = await flow({ native: true });
    loadNative().resetSpliceStats();
    const data = randomBytes(4 * 1024 * 1024);
    const got = readAll(f.server);
    send(f.client, data); // TCP → relay → NativeStream: the capped direction
    f.server.end();
    expect(sha256(await got)).toBe(sha256(data));
    await f.relay.done;
    // Cut at exactly the limit: the pipe holds 512 KiB, so without the cut larger lengths would be asked for.
    expect(nativeSpliceStats()!.maxCappedWrite).toBe(32 * 1024);
  });

  it('runs 100 relays at once, byte-exact, and leaks no descriptor', async () => {
    const fdsBefore = openFds();
    const before = started();
    const flows = await Promise.all(Array.from({ length: 100 }, (_, i) => flow({ native: i % 2 === 1 })));
    expect(nativeSpliceStats()!.active).toBeGreaterThanOrEqual(100);
    await Promise.all(
      flows.map(async (f) => {
        const up = randomBytes(70_000);
        const down = randomBytes(50_000);
        const gotUp = readAll(f.server);
        const gotDown = readAll(f.client);
        send(f.client, up);
        send(f.server, down);
        expect(sha256(await gotUp)).toBe(sha256(up));
        expect(sha256(await gotDown)).toBe(sha256(down));
        expect(await f.relay.done).toEqual({ aToB: up.length, bToA: down.length, clean: true });
      }),
    );
    expect(started()).toBe(before + 100);
    for (const f of flows) {
      f.client.destroy();
      f.server.destroy();
    }
    await Promise.all(flows.flatMap((f) => [closed(f.client), closed(f.server)]));
    await sleep(50);
    expect(nativeSpliceStats()!.active).toBe(0);
    expect(openFds()).toBe(fdsBefore);
  });

  it('when the relay thread cannot start after the hand-off, JS reading resumes and the JS relay carries the flow', async () => {
    const native = loadNative();
    const real = native.spliceRelay;
    let refused = 0;
    // The addon's start() throwing (pthread_create EAGAIN) cannot be provoked as root: stand in for it.
    native.spliceRelay = (fdA, fdB, maxWrite) => {
      const r = real.call(native, fdA, fdB, maxWrite);
      return {
        start: () => {
          refused++;
          r.cancel();
          throw Object.assign(new Error('pthread_create EAGAIN'), { code: 'EAGAIN' });
        },
        counts: () => r.counts(),
        cancel: () => r.cancel(),
      };
    };
    try {
      for (const isNative of [false, true]) {
        const f = await flow({
          native: isNative,
          before: (midA, midB) => {
            midA.unshift(Buffer.from('early|'));
            midB.read(0); // a read outstanding at the hand-off, as after reading the dialer's status frame
          },
        });
        const up = randomBytes(300_000);
        const down = randomBytes(200_000);
        const gotUp = readAll(f.server);
        const gotDown = readAll(f.client);
        send(f.client, up);
        send(f.server, down);
        expect(sha256(await gotUp)).toBe(sha256(Buffer.concat([Buffer.from('early|'), up])));
        expect(sha256(await gotDown)).toBe(sha256(down));
        expect(await f.relay.done).toEqual({ aToB: up.length + 6, bToA: down.length, clean: true });
      }
      // handed over mid-flow with the request direction already ended, then the thread fails to start
      const g = await flow({ nativeAfter: NATIVE_AFTER });
      const gotRequest = readAll(g.server);
      g.client.end('go');
      expect((await gotRequest).toString()).toBe('go');
      const down = randomBytes(2 * 1024 * 1024);
      const gotDown = readAll(g.client);
      send(g.server, down);
      expect(sha256(await gotDown)).toBe(sha256(down));
      expect(await g.relay.done).toEqual({ aToB: 2, bToA: down.length, clean: true });
      // the last bytes and the EOF buffered at the hand-off: the hand-off reads both ('end' fires then), the
      // JS relay that takes over must still pass the FIN on
      const h = await flow({
        before: (midA) => {
          midA.unshift(Buffer.from('abc'));
          midA.push(null);
        },
      });
      expect((await readAll(h.server)).toString()).toBe('abc');
      h.server.end();
      h.client.resume();
      expect(await h.relay.done).toEqual({ aToB: 3, bToA: 0, clean: true });
    } finally {
      native.spliceRelay = real;
    }
    expect(refused).toBe(4);
    expect(nativeSpliceStats()!.active).toBe(0);
  });

  it('a hand-off whose write queue does not drain (a peer that writes everything before reading) leaves the flow to JS', async () => {
    const before = started();
    // 4 MiB of answer already queued toward the app at the hand-off: more than loopback takes while nobody reads
    const early = randomBytes(4 * 1024 * 1024);
    const f = await flow({ handoffDeadlineMs: 200, before: (midA) => void midA.write(early) });
    f.client.pause(); // the app writes its whole upload before it reads anything
    const up = randomBytes(8 * 1024 * 1024);
    const gotUp = readAll(f.server);
    send(f.client, up);
    expect(sha256(await gotUp)).toBe(sha256(up));
    const gotDown = readAll(f.client);
    f.client.resume();
    f.server.end();
    expect(sha256(await gotDown)).toBe(sha256(early));
    expect(await f.relay.done).toMatchObject({ aToB: up.length, clean: true });
    expect(started()).toBe(before);
  });

  it('when the addon refuses at a mid-flow hand-off (relay limit), the JS relay is re-attached and carries on', async () => {
    const native = loadNative();
    const real = native.spliceRelay;
    let refused = 0;
    native.spliceRelay = () => {
      refused++;
      throw Object.assign(new Error('spliceRelay: the limit of concurrent native relays is reached'), { code: 'ERR_SPLICE_RELAY_LIMIT' });
    };
    try {
      const f = await flow({ native: true, nativeAfter: NATIVE_AFTER });
      const up = randomBytes(3 * 1024 * 1024);
      const down = randomBytes(2 * 1024 * 1024);
      const gotUp = readAll(f.server);
      const gotDown = readAll(f.client);
      send(f.client, up);
      send(f.server, down);
      expect(sha256(await gotUp)).toBe(sha256(up));
      expect(sha256(await gotDown)).toBe(sha256(down));
      expect(await f.relay.done).toEqual({ aToB: up.length, bToA: down.length, clean: true });
      // and with a direction the first JS relay had already ended
      const g = await flow({ nativeAfter: NATIVE_AFTER });
      const gotRequest = readAll(g.server);
      g.client.end('go');
      expect((await gotRequest).toString()).toBe('go');
      const gotDown2 = readAll(g.client);
      send(g.server, down);
      expect(sha256(await gotDown2)).toBe(sha256(down));
      expect(await g.relay.done).toEqual({ aToB: 2, bToA: down.length, clean: true });
    } finally {
      native.spliceRelay = real;
    }
    expect(refused).toBe(2);
  });

  it('leaves a side that is not a kernel socket to the JS relay', async () => {
    const before = started();
    const [client, midA] = await tcpPair();
    const other = new PassThrough();
    const s = splice(midA, other);
    client.end('via js');
    expect((await readAll(other)).toString()).toBe('via js');
    other.end();
    client.resume();
    expect((await s.done).aToB).toBe(6);
    expect(started()).toBe(before);
  });

  it('refuses relays beyond its limit (the JS relay takes those), and a cancel before start gives all back', async () => {
    const native = loadNative();
    const [client, midA] = await tcpPair();
    const [midB, srv] = await tcpPair();
    const fdOf = (x: net.Socket): number => (x as unknown as { _handle: { fd: number } })._handle.fd;
    const fdsBefore = openFds();
    const { limit, active } = native.spliceStats();
    const prepared = Array.from({ length: limit - active }, () => native.spliceRelay(fdOf(midA), fdOf(midB), 32768));
    expect(native.spliceStats().active).toBe(limit);
    expect(() => native.spliceRelay(fdOf(midA), fdOf(midB), 32768)).toThrow(expect.objectContaining({ code: 'ERR_SPLICE_RELAY_LIMIT' }));
    for (const r of prepared) r.cancel();
    expect(native.spliceStats().active).toBe(active);
    expect(openFds()).toBe(fdsBefore);
    // the sockets were never touched: a flow over them still works
    const relay = splice(midA, midB, { nativeAfter: 0 });
    const got = readAll(srv);
    client.end('still fine');
    expect((await got).toString()).toBe('still fine');
    srv.end();
    client.resume();
    expect((await relay.done).clean).toBe(true);
  });

  it('the addon refuses a descriptor that is not a stream socket, before touching anything', async () => {
    const [client, midA] = await tcpPair();
    const fd = openSync('/dev/null', 'r');
    try {
      expect(() => loadNative().spliceRelay(fd, (midA as unknown as { _handle: { fd: number } })._handle.fd, 32768)).toThrow(
        expect.objectContaining({ code: 'EINVAL' }),
      );
    } finally {
      closeSync(fd);
    }
    client.destroy();
    midA.destroy();
  });

  it('a worker torn down while its relay runs leaves the process running (the relay thread is woken and joined)', async () => {
    // In a child process: before the fix the relay thread touched the freed threadsafe function and the whole
    // process died (SIGSEGV or abort) on most runs.
    const script = `
      import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
      import net from 'node:net';
      import { createRequire } from 'node:module';
      if (isMainThread) {
        for (let i = 0; i < 5; i++) {
          const w = new Worker(new URL(import.meta.url), { workerData: process.argv[2] });
          await new Promise((r) => w.once('message', r));
          await w.terminate();
        }
        await new Promise((r) => setTimeout(r, 200));
        console.log('survived');
      } else {
        const native = createRequire(import.meta.url)(workerData);
        const accepted = [];
        const srv = net.createServer((s) => accepted.push(s));
        await new Promise((r) => srv.listen(0, '127.0.0.1', r));
        const c1 = net.connect(srv.address().port, '127.0.0.1');
        const c2 = net.connect(srv.address().port, '127.0.0.1');
        while (accepted.length < 2) await new Promise((r) => setTimeout(r, 5));
        native.spliceRelay(accepted[0]._handle.fd, accepted[1]._handle.fd, 32768).start(() => {});
        c1.write('x');
        parentPort.postMessage('started');
      }`;
    const { spawnSync } = await import('node:child_process');
    const dir = tempDir();
    try {
      const file = `${dir.dir}/teardown.mjs`;
      (await import('node:fs')).writeFileSync(file, script);
      const r = spawnSync(process.execPath, [file, addonPath()], { encoding: 'utf8', timeout: 30_000 });
      expect({ status: r.status, signal: r.signal, stdout: r.stdout.trim() }).toEqual({ status: 0, signal: null, stdout: 'survived' });
    } finally {
      dir.cleanup();
    }
  });
});

// AF_UNIX throughput through the native addon (the vsock engine) vs net.Socket over a unix socket, same run.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { printTable, ratio } from './lib.ts';
import { nativeAvailable, nativeStats, loadNative } from '../../src/transport/native.ts';
import { connectUnixNative, listenUnixNative } from '../../src/transport/unix-native.ts';

const MiB = 1 << 20;
const TOTAL = 256 * MiB;

/** Sends TOTAL bytes client → server in `chunk`-sized writes; resolves with MiB/s at the receiver's 'end'. */
async function pump(client: Duplex, server: Duplex, chunkSize: number): Promise<number> {
  const chunk = Buffer.alloc(chunkSize, 0x5a);
  const t0 = performance.now();
  const done = new Promise<void>((resolve, reject) => {
    let got = 0;
    server.on('data', (d: Buffer) => (got += d.length));
    server.once('end', () => (got === TOTAL ? resolve() : reject(new Error(`got ${got} of ${TOTAL}`))));
  });
  let sent = 0;
  await new Promise<void>((resolve) => {
    const go = (): void => {
      while (sent < TOTAL) {
        sent += chunk.length;
        if (!client.write(chunk)) return void client.once('drain', go);
      }
      client.end();
      resolve();
    };
    go();
  });
  await done;
  return TOTAL / MiB / ((performance.now() - t0) / 1000);
}

async function nativePair(sock: string): Promise<{ client: Duplex; server: Duplex; close: () => Promise<void> }> {
  let accept!: (s: Duplex) => void;
  const accepted = new Promise<Duplex>((r) => (accept = r));
  const l = await listenUnixNative(sock, { onConnection: (s) => accept(s) });
  const client = await connectUnixNative(sock);
  const server = await accepted;
  client.resume();
  return { client, server, close: async () => (server.end(), await l.close()) };
}

async function netPair(sock: string): Promise<{ client: Duplex; server: Duplex; close: () => Promise<void> }> {
  let accept!: (s: Duplex) => void;
  const accepted = new Promise<Duplex>((r) => (accept = r));
  const srv = net.createServer({ allowHalfOpen: true }, (s) => accept(s));
  await new Promise<void>((r) => srv.listen(sock, r));
  const client = net.connect({ path: sock, allowHalfOpen: true });
  await new Promise<void>((r) => client.once('connect', r));
  const server = await accepted;
  client.resume();
  return { client, server, close: async () => (server.end(), await new Promise<void>((r) => srv.close(() => r()))) };
}

export default async function bench(): Promise<void> {
  if (!nativeAvailable()) {
    console.log('\n## native: skipped (the addon was not built)');
    return;
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-native-'));
  const rows: (string | number)[][] = [['256 MiB client → server over AF_UNIX', 'MiB/s', 'vs net.Socket', 'max write() B']];
  try {
    for (const chunkSize of [64 * 1024, MiB]) {
      let n = 0;
      const best = { net: 0, native: 0, maxWrite: 0 };
      for (let rep = 0; rep < 2; rep++) {
        const a = await netPair(path.join(dir, `n${n++}.sock`));
        best.net = Math.max(best.net, await pump(a.client, a.server, chunkSize));
        await a.close();
        loadNative().resetStats();
        const b = await nativePair(path.join(dir, `n${n++}.sock`));
        best.native = Math.max(best.native, await pump(b.client, b.server, chunkSize));
        await b.close();
        best.maxWrite = nativeStats().maxWrite;
      }
      rows.push([`net.Socket, ${chunkSize / 1024} KiB writes (baseline)`, best.net, '1.00×', 'n/a (libuv writev)']);
      rows.push([`native addon, ${chunkSize / 1024} KiB writes`, best.native, ratio(best.native, best.net), best.maxWrite]);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  printTable('native: AF_UNIX throughput, addon (32 KiB write cap) vs net.Socket', rows);
}

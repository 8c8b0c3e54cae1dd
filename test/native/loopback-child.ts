// Run by loopback.test.ts inside a fresh network namespace (`unshare --net`), never in the machine's own one.
// Prints one JSON line describing what happened.
import net from 'node:net';
import os from 'node:os';
import { bringUpLoopback, loadNative } from '../../src/transport/native.ts';

function tcpRoundTrip(): Promise<string> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((s) => s.pipe(s));
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      const c = net.connect({ host: '127.0.0.1', port });
      c.once('error', reject);
      c.end('loop');
      let got = '';
      c.on('data', (d: Buffer) => (got += d.toString()));
      c.on('close', () => {
        srv.close();
        resolve(got);
      });
    });
  });
}

function codeOf(err: unknown): string {
  return (err as { code?: string }).code ?? String(err);
}

const mode = process.argv[2];
const out: Record<string, unknown> = {};
if (mode === 'up') {
  out.before = await tcpRoundTrip().then(() => 'ok', codeOf);
  out.first = bringUpLoopback().changed;
  out.second = bringUpLoopback().changed;
  out.after = await tcpRoundTrip().catch(codeOf);
  out.lo = (os.networkInterfaces().lo ?? []).filter((a) => a.family === 'IPv4').map((a) => `${a.address}/${a.netmask}`);
} else if (mode === 'eperm') {
  if (process.setgid === undefined || process.setuid === undefined) throw new Error('setuid/setgid unavailable');
  // Load the addon while still root (as the agent does: it starts privileged): after the drop, uid 65534 may not
  // be able to read it at all (a checkout under a 0700 directory), which would test file modes, not CAP_NET_ADMIN.
  loadNative();
  process.setgid(65534);
  process.setuid(65534);
  try {
    out.result = bringUpLoopback();
  } catch (err) {
    out.code = codeOf(err);
    out.name = (err as Error).name;
    out.message = (err as Error).message;
  }
}
console.log(JSON.stringify(out));

// Run by gc.test.ts with --expose-gc: sockets dropped without close() are closed by the addon's finalizer,
// including one whose poll handle is active-then-stopped and one mid-connect.
import { readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { loadNative, POLL_READABLE } from '../../src/transport/native.ts';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');
// Socket fds by number → inode. Only sockets are compared: the loader (tsx/esbuild) opens and closes pipes and
// files of its own meanwhile, which made a raw fd count flaky.
const sockets = (): Map<string, string> => {
  const out = new Map<string, string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith('socket:')) out.set(fd, target);
    } catch {
      // closed between readdir and readlink
    }
  }
  return out;
};
const added = (from: Map<string, string>, to: Map<string, string>): number =>
  [...to].filter(([fd, target]) => from.get(fd) !== target).length;
const native = loadNative();
const dir = process.argv[2]!;
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

const before = sockets();
(() => {
  const l = native.listen({ family: 'unix', path: path.join(dir, 'gc.sock') });
  const c = native.connect({ family: 'unix', path: path.join(dir, 'gc.sock') });
  const a = l.accept();
  l.setCallback(() => {});
  l.poll(POLL_READABLE);
  l.poll(0); // a stopped (not closed) poll handle: the finalizer must still uv_close it
  void c;
  void a;
})();
const during = sockets();
for (let i = 0; i < 10; i++) {
  gc();
  await tick();
}
const after = sockets();
const s = native.stats();
console.log(JSON.stringify({ during: added(before, during), after: added(before, after), opened: s.opened, closed: s.closed }));

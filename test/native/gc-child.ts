// Run by gc.test.ts with --expose-gc: sockets dropped without close() are closed by the addon's finalizer,
// including one whose poll handle is active-then-stopped and one mid-connect.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { loadNative, POLL_READABLE } from '../../src/transport/native.ts';

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');
const fds = (): number => readdirSync('/proc/self/fd').length;
const native = loadNative();
const dir = process.argv[2]!;
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

const before = fds();
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
const during = fds();
for (let i = 0; i < 10; i++) {
  gc();
  await tick();
}
const after = fds();
const s = native.stats();
console.log(JSON.stringify({ before, during, after, opened: s.opened, closed: s.closed }));

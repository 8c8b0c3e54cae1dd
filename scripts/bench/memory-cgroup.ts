// A memory cgroup for a bench child, so that it runs with an enclave's memory as node sees it: node 20 sizes
// V8's heap (old generation and the young generation's semi-spaces) from uv_get_constrained_memory(), the cgroup's
// limit, when there is one, else from the machine's total memory (docs/performance.md, Memory).
// cgroup v1 (a `memory` hierarchy, as on the development VM) and v2 (`memory` enabled for the children of this
// process's cgroup) both work; the cgroup is made under this process's own, so whatever accounts for this process
// still accounts for the child. Needs root; `memoryCgroup` says why when it cannot make one.
import { readFile, rmdir, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface MemoryCgroup {
  dir: string;
  limitBytes: number;
  version: 1 | 2;
  /**
   * fork() options that start the child inside the cgroup before node starts (V8 reads the limit once, when the
   * isolate is made): a shell writes its own pid to cgroup.procs and execs node with `nodeArgs`.
   */
  forkVia(nodeArgs: string[]): { execPath: string; execArgv: string[] };
  /** Removes the cgroup once its processes have exited (retries while the kernel still counts them). */
  remove(): Promise<void>;
}

/** "4G", "512M", "4294967296" → bytes. */
export function parseMemorySize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMG]?)i?B?$/i.exec(text.trim());
  if (m === null) throw new Error(`not a memory size: ${JSON.stringify(text)} (e.g. 4G, 512M)`);
  const unit = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Math.round(Number(m[1]) * unit);
}

/** Makes the cgroup, or returns why it cannot (not root, no memory controller, read-only cgroupfs…). */
export async function memoryCgroup(limitBytes: number, name = `enclave-agent-bench-${process.pid}`): Promise<MemoryCgroup | { skipped: string }> {
  let own: string;
  try {
    own = await readFile('/proc/self/cgroup', 'utf8');
  } catch (err) {
    return { skipped: `no /proc/self/cgroup (${(err as Error).message})` };
  }
  const lines = own.split('\n').map((l) => l.split(':'));
  const v1 = lines.find((f) => f.length >= 3 && f[1]!.split(',').includes('memory'));
  const v2 = lines.find((f) => f.length >= 3 && f[0] === '0' && f[1] === '');
  let dir: string;
  let version: 1 | 2;
  let limitFile: string;
  if (v1 !== undefined) {
    version = 1;
    dir = path.join('/sys/fs/cgroup/memory', v1.slice(2).join(':'), name);
    limitFile = 'memory.limit_in_bytes';
  } else if (v2 !== undefined) {
    version = 2;
    const parent = path.join('/sys/fs/cgroup', v2.slice(2).join(':'));
    const subtree = await readFile(path.join(parent, 'cgroup.subtree_control'), 'utf8').catch(() => '');
    if (!subtree.split(/\s+/).includes('memory')) return { skipped: `cgroup v2: the memory controller is not enabled for children of ${parent} (cgroup.subtree_control)` };
    dir = path.join(parent, name);
    limitFile = 'memory.max';
  } else {
    return { skipped: 'no memory cgroup in /proc/self/cgroup' };
  }
  try {
    await mkdir(dir);
  } catch (err) {
    return { skipped: `cannot make ${dir}: ${(err as Error).message}` };
  }
  try {
    await writeFile(path.join(dir, limitFile), String(limitBytes));
  } catch (err) {
    await rmdir(dir).catch(() => undefined);
    return { skipped: `cannot set ${path.join(dir, limitFile)}: ${(err as Error).message}` };
  }
  const procs = path.join(dir, 'cgroup.procs');
  return {
    dir,
    limitBytes,
    version,
    forkVia: (nodeArgs) => ({ execPath: '/bin/sh', execArgv: ['-c', 'echo $$ > "$0" && exec "$@"', procs, process.execPath, ...nodeArgs] }),
    async remove() {
      for (let i = 0; ; i++) {
        try {
          await rmdir(dir);
          return;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
          if (i >= 50) throw new Error(`cannot remove ${dir}: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
  };
}

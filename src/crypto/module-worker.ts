// Starts a worker thread on a module that sits beside the caller's: `<name>.js` from dist/ or the bundle, or
// `<name>.ts` from a TypeScript checkout (tsx, vitest), where the thread first registers tsx's loader.
// It lives beside its first user, the decrypt pool: src/util must stay browser-safe. The thread starts without
// the process's --require/--import preloads (worker-preloads.ts): it starts after the app, which may have
// rewritten them.
import { access } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { withoutPreloads } from './worker-preloads.ts';

/** `base` is the caller's import.meta.url; `name` the module's file name without extension. */
export function spawnModuleWorker(base: string, name: string, workerOptions: WorkerOptions = {}): Worker {
  const options = { ...withoutPreloads(), ...workerOptions };
  if (!base.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, base), options);
  const api = path.join(path.dirname(createRequire(base).resolve('tsx/esm/api')), 'index.mjs');
  const entry = new URL(`./${name}.ts`, base).href;
  const boot = `import(${JSON.stringify(pathToFileURL(api).href)}).then((t) => { t.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { ...options, eval: true });
}

/** Whether the module spawnModuleWorker(base, name) starts is there: a check at boot for a thread started later. */
export async function moduleWorkerExists(base: string, name: string): Promise<boolean> {
  return access(fileURLToPath(new URL(`./${name}.${base.endsWith('.ts') ? 'ts' : 'js'}`, base))).then(
    () => true,
    () => false,
  );
}

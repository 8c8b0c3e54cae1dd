// Shared by the worker-services tests: the exposition as numbers, and a port that counts what it posts.
import type { MessagePort } from 'node:worker_threads';

/** `name{labels} value` lines of a Prometheus text exposition, keyed by everything before the value. */
export function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const cut = line.lastIndexOf(' ');
    out.set(line.slice(0, cut), Number(line.slice(cut + 1)));
  }
  return out;
}

/** The samples of one metric family (name and name_*), process metrics left out. */
export function family(text: string, name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of samples(text)) if (k === name || k.startsWith(`${name}{`) || k.startsWith(`${name}_`)) out[k] = v;
  return out;
}

/** Wraps `port` so its postMessage calls are counted (what crosses, not what is handed to the proxy). */
export function counting(port: MessagePort): { port: MessagePort; posts: unknown[] } {
  const posts: unknown[] = [];
  const post = port.postMessage.bind(port);
  port.postMessage = (v: unknown, transfer?: never) => {
    posts.push(v);
    post(v, transfer);
  };
  return { port, posts };
}

/** Resolves after `turns` event-loop turns (setImmediate), for messages in flight on an in-thread channel. */
export async function turns(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

/** Resolves when `check` holds, polling each turn (bounded: throws after `max` turns). */
export async function until(check: () => boolean | Promise<boolean>, max = 2_000): Promise<void> {
  for (let i = 0; i < max; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, i < 50 ? 0 : 5));
  }
  throw new Error('condition not reached');
}

// Which of Node's own modules each session thread of this process has loaded (its process.moduleLoadList), read
// inside the thread through the inspector's NodeWorker domain: what a thread compiled and holds, seen from the
// test without a hook in the agent. The tests start the threads from the TypeScript sources as an eval'd script
// (crypto/module-worker.ts), where `require` is a global: a session thread is the one whose workerData has its
// shared admission state.
import { Session } from 'node:inspector';

const EXPRESSION = `(() => {
  if (typeof require !== 'function') return null;
  const d = require('node:worker_threads').workerData;
  if (d === null || typeof d !== 'object' || !('admission' in d)) return null;
  const prefix = 'NativeModule ';
  return { index: d.index, modules: process.moduleLoadList.filter((m) => m.startsWith(prefix)).map((m) => m.slice(prefix.length)) };
})()`;

interface Reply {
  id?: number;
  result?: { result?: { value?: { index: number; modules: string[] } | null } };
  error?: { message: string };
}

/** Node's built-in modules ('tls', 'http', ...) loaded in each session thread, by its index (1..workers). */
export async function sessionThreadBuiltins(timeoutMs = 10_000): Promise<Map<number, string[]>> {
  const session = new Session();
  session.connect();
  const attached: string[] = [];
  const replies = new Map<string, (r: Reply) => void>();
  session.on('NodeWorker.attachedToWorker', ({ params }) => attached.push(params.sessionId));
  session.on('NodeWorker.receivedMessageFromWorker', ({ params }) => {
    const r = JSON.parse(params.message) as Reply;
    if (r.id === 1) replies.get(params.sessionId)?.(r);
  });
  const post = (method: string, params: object): Promise<void> => new Promise((resolve, reject) => session.post(method, params, (err) => (err === null ? resolve() : reject(err))));
  let timer: NodeJS.Timeout | undefined;
  try {
    // The threads already running are attached (and announced) before this answers.
    await post('NodeWorker.enable', { waitForDebuggerOnStart: false });
    const asked = attached.map(
      (sessionId) =>
        new Promise<Reply>((resolve, reject) => {
          replies.set(sessionId, resolve);
          post('NodeWorker.sendMessageToWorker', { sessionId, message: JSON.stringify({ id: 1, method: 'Runtime.evaluate', params: { expression: EXPRESSION, returnByValue: true } }) }).catch(reject);
        }),
    );
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer from every thread within ${timeoutMs} ms`)), timeoutMs)));
    const answers = await Promise.race([Promise.all(asked), timeout]);
    const out = new Map<number, string[]>();
    for (const a of answers) {
      if (a.error !== undefined) throw new Error(`Runtime.evaluate in a thread: ${a.error.message}`);
      const v = a.result?.result?.value;
      if (v !== undefined && v !== null) out.set(v.index, v.modules);
    }
    return out;
  } finally {
    clearTimeout(timer);
    session.disconnect();
  }
}

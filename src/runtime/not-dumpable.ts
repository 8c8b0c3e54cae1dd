// The agent's half of the app sandbox (die-with-agent.ts has the app's): with the agent non-dumpable
// (native/src/process.c) an app of the same user cannot open /proc/<agent>/mem, environ or fd nor ptrace it, and
// the wrapper takes CAP_SYS_PTRACE from the app so being root does not reopen /proc/<agent>/mem either. `run`
// calls it for an unsandboxed app too (a warning if it cannot): the keys are in this process all the same.
import { loadNative } from '../transport/native.ts';
import { RuntimeError } from './errors.ts';

interface ProcessBinding {
  notDumpable?: () => void;
}

/** PR_SET_DUMPABLE 0 on this process; RUNTIME_NO_SANDBOX when the addon cannot. */
export function makeAgentNotDumpable(): void {
  let fn: (() => void) | undefined;
  try {
    fn = (loadNative() as unknown as ProcessBinding).notDumpable;
  } catch (err) {
    throw new RuntimeError('RUNTIME_NO_SANDBOX', `the native addon is not available (${(err as { code?: string }).code ?? 'error'})`, { cause: err });
  }
  if (fn === undefined) throw new RuntimeError('RUNTIME_NO_SANDBOX', 'the native addon has no notDumpable (rebuild it: node scripts/build-native.mjs)');
  try {
    fn();
  } catch (err) {
    throw new RuntimeError('RUNTIME_NO_SANDBOX', `prctl(PR_SET_DUMPABLE, 0) failed (${(err as { code?: string }).code ?? 'error'})`, { cause: err });
  }
}

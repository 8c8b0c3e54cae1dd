// Node options that hand the agent's memory to whoever shares its loopback or can signal it: the inspector (any
// local connection runs code in the agent), a heap snapshot on a signal or near the heap limit (written to the
// working directory, keys included), a diagnostic report on a signal, an uncaught exception or a fatal error (the
// agent's environment, credentials included: what a flood that crashed the agent would leave behind). The app
// `run` starts shares the loopback and, as root, can signal the agent and read what it writes: with a sandboxed
// app, `run` refuses to start it while the agent runs with any of these.
import { optionName, splitNodeOptions } from '../crypto/worker-preloads.ts';

/** --inspect-brk-node: Node's undocumented --inspect-brk (command line only), the inspector all the same. */
const UNSAFE = ['--inspect', '--inspect-brk', '--inspect-brk-node', '--inspect-wait', '--heapsnapshot-signal', '--heapsnapshot-near-heap-limit', '--report-on-signal', '--report-uncaught-exception', '--report-on-fatalerror'];

/** The unsafe options among the agent's command-line node options and its NODE_OPTIONS, by name (values left out). */
export function unsafeNodeOptions(execArgv: readonly string[] = process.execArgv, nodeOptions: string | undefined = process.env.NODE_OPTIONS): string[] {
  const found = new Set<string>();
  for (const arg of [...execArgv, ...splitNodeOptions(nodeOptions ?? '')]) {
    const name = optionName(arg);
    if (UNSAFE.includes(name)) found.add(name);
  }
  return [...found];
}

// The agent's worker threads (session threads, the decrypt pool, which is handed every private key) start long
// after the app, and Node starts each one with the modules the process was preloaded with (--require, --import,
// --loader, from the command line or NODE_OPTIONS), loaded again from their files at that moment. A preload the
// operator gave the agent is often the app's own file (an APM or OpenTelemetry set-up beside the app's code): a
// root app could rewrite it and run its code inside the agent. The main thread ran it at boot, before the app;
// the worker threads run without it: the command line's node options are not passed to them (Node would refuse
// the per-process ones there anyway), and NODE_OPTIONS reaches them with its preloads taken out.

/** The node options that load a module into every thread, as separate or `=` arguments. */
const PRELOAD_OPTIONS = new Set(['-r', '--require', '--import', '--loader', '--experimental-loader']);

/** NODE_OPTIONS split as Node splits it: spaces between arguments, "…" groups, \ escapes inside quotes. */
export function splitNodeOptions(text: string): string[] {
  const args: string[] = [];
  let inString = false;
  let startNew = true;
  for (let i = 0; i < text.length; i++) {
    let c = text[i]!;
    if (c === '\\' && inString && i + 1 < text.length) c = text[++i]!;
    else if (c === ' ' && !inString) {
      startNew = true;
      continue;
    } else if (c === '"') {
      inString = !inString;
      continue;
    }
    if (startNew) args.push(c);
    else args[args.length - 1] += c;
    startNew = false;
  }
  return args;
}

/** `nodeOptions` (a NODE_OPTIONS value) without its preloads, each argument quoted as Node reads it back. */
export function nodeOptionsWithoutPreloads(nodeOptions: string): string {
  const kept: string[] = [];
  const args = splitNodeOptions(nodeOptions);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!PRELOAD_OPTIONS.has(optionName(arg))) {
      kept.push(`"${arg.replace(/[\\"]/g, '\\$&')}"`);
      continue;
    }
    if (!arg.includes('=')) i++; // its value is the next argument
  }
  return kept.join(' ');
}

/** A node option's name as Node reads it: before any `=`, `_` the same as `-` (`--experimental_loader`). */
export function optionName(arg: string): string {
  return arg.split('=', 1)[0]!.replace(/_/g, '-');
}

/** The Worker options that start a thread of the agent without the process's preloads (see the file comment). */
export function withoutPreloads(env: NodeJS.ProcessEnv = process.env): { execArgv: string[]; env: NodeJS.ProcessEnv } {
  const workerEnv = { ...env };
  if (workerEnv.NODE_OPTIONS !== undefined) workerEnv.NODE_OPTIONS = nodeOptionsWithoutPreloads(workerEnv.NODE_OPTIONS);
  return { execArgv: [], env: workerEnv };
}

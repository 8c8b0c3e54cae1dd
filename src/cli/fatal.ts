// The CLI's one policy for errors nothing handled (a rejected promise nobody awaited, a throw from a callback):
// one line on stderr naming the error's code, then exit 70 (EX_SOFTWARE: an internal error, distinct from a
// command's own 1 and 2). Never silent, never running on in an unknown state; in `run`, the supervisor that
// started the agent sees a non-zero exit. The message is the error's own (errors carry no secrets by policy).

export const FATAL_EXIT_CODE = 70;

/** `enclave-agent: fatal: <what>: <CODE>: <message>` and the stack below it, for any thrown value. */
export function fatalLine(what: string, reason: unknown): string {
  const e = reason as { code?: unknown; message?: unknown; stack?: unknown } | null | undefined;
  const code = typeof e?.code === 'string' ? e.code : 'UNEXPECTED';
  const message = typeof e?.message === 'string' ? e.message : String(reason);
  const stack = typeof e?.stack === 'string' ? `\n${e.stack.split('\n').slice(1).join('\n')}` : '';
  return `enclave-agent: fatal: ${what}: ${code}: ${message}${stack}`;
}

/** Installs the handlers (once per process). `exit` and `write` are injectable for tests. */
export function installFatalHandlers(opts: { write?: (text: string) => void; exit?: (code: number) => void } = {}): void {
  const write = opts.write ?? ((text: string) => process.stderr.write(`${text}\n`));
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const die = (what: string) => (reason: unknown) => {
    try {
      write(fatalLine(what, reason));
    } finally {
      exit(FATAL_EXIT_CODE);
    }
  };
  process.on('unhandledRejection', die('unhandled promise rejection'));
  process.on('uncaughtException', die('uncaught exception'));
}

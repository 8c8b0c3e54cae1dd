export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Reads all of standard input (for `-` arguments). */
  stdin: () => Promise<Uint8Array>;
}

export interface CliCommand {
  /** Words that select it: ['start'] or ['attestation', 'inspect']. */
  readonly path: readonly string[];
  readonly summary: string;
  /** Full --help text. */
  readonly help: string;
  /** Returns the exit code. Throw CliUsageError for bad flags; any AgentError prints as one line. */
  run(args: string[], io: CliIo): Promise<number>;
}

export class CliUsageError extends Error {
  override name = 'CliUsageError';
}

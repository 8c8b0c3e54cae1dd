import type { Writable } from 'node:stream';

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Where bytes go as they are (a response body), with back-pressure. Default process.stdout. */
  rawOut?: Writable;
  /** Reads all of standard input (for `-` arguments). */
  stdin: () => Promise<Uint8Array>;
}

/** What a command file exports as `command`; its path and summary live in src/cli/commands.ts. */
export interface CliCommand {
  /** Full --help text. */
  readonly help: string;
  /** Returns the exit code. Throw CliUsageError for bad flags; any AgentError prints as one line. */
  run(args: string[], io: CliIo): Promise<number>;
}

export class CliUsageError extends Error {
  override name = 'CliUsageError';
}

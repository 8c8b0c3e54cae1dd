// Flag helpers shared by the local-stack commands (start, fetch, attest, pcrs): node:util parseArgs with
// every failure turned into a CliUsageError, port and integer flags, and where enclave.toml comes from.
import { existsSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CliUsageError } from './types.ts';

type Options = NonNullable<ParseArgsConfig['options']>;
/** Spelled out so the build can emit a declaration (node's own result types are not exported). */
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: boolean; strict: true }>>;

/** parseArgs (strict) whose errors are usage errors. */
export function parseFlags<O extends Options>(args: string[], options: O, allowPositionals = false): Parsed<O> {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }
}

/** An integer flag within [min, max]. */
export function intFlag(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new CliUsageError(`${flag} expects an integer, found "${text}"`);
  const n = Number(text);
  if (n < min || n > max) throw new CliUsageError(`${flag} expects ${min}..${max}, found ${n}`);
  return n;
}

/** A TCP port flag (0 = pick a free port), or `fallback` when the flag is absent. */
export function portFlag(flag: string, text: string | undefined, fallback: number): number {
  return text === undefined ? fallback : intFlag(flag, text, 0, 65535);
}

/**
 * The enclave.toml to load: --config, else $ENCLAVE_AGENT_CONFIG, else ./enclave.toml when it exists, else
 * none (every default) — the same rule as `enclave-agent run`.
 */
export function resolveConfigPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const chosen = flag ?? env.ENCLAVE_AGENT_CONFIG;
  if (chosen !== undefined) {
    if (!existsSync(chosen)) throw new CliUsageError(`--config: ${chosen} does not exist`);
    return chosen;
  }
  return existsSync('enclave.toml') ? 'enclave.toml' : undefined;
}

/** Quotes a shell word only when it needs it (for the copy-pasteable lines start prints). */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

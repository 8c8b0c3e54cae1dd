// Flag helpers shared by the local-stack commands (start, fetch, attest, pcrs): node:util parseArgs with
// every failure turned into a CliUsageError, port and integer flags, and where enclave.toml comes from.
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AttestationError } from '../attestation/errors.ts';
import { parseTrustAnchor } from '../attestation/x509.ts';
import { isLoopbackHost } from '../host/listen.ts';
import { fromBase64 } from '../util/bytes.ts';
import { didYouMean } from '../util/suggest.ts';
import { CliUsageError } from './types.ts';

type Options = NonNullable<ParseArgsConfig['options']>;
/** Spelled out so the build can emit a declaration (node's own result types are not exported). */
type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: boolean; strict: true }>>;

/** parseArgs (strict) whose errors are usage errors. */
export function parseFlags<O extends Options>(args: string[], options: O, allowPositionals = false): Parsed<O> {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (err) {
    const known = Object.entries(options).flatMap(([name, o]) => [`--${name}`, ...(o.short === undefined ? [] : [`-${o.short}`])]);
    throw new CliUsageError(clarifyUsageMessage((err as Error).message, known));
  }
}

/**
 * node's parseArgs "Unknown option '--x'. To specify a positional argument starting with a '-', … as in '-- "--x"'"
 * quotes unevenly and suggests nothing: this says `unknown option "--x" (did you mean "--y"?)` instead, keeping
 * any text a command appended. Other messages pass unchanged.
 */
export function clarifyUsageMessage(message: string, knownFlags: Iterable<string>): string {
  const m = /^Unknown option '(-[^']*)'(?:\. To specify a positional argument starting with a '-', place it at the end of the command after '--', as in '-- "\1")?(.*)$/s.exec(message);
  if (m === null) return message;
  return `unknown option "${m[1]!}"${didYouMean(m[1]!, knownFlags)}${m[2]!}`;
}

/** The flags a command's --help text names (--long and -s), for suggestions. */
export function flagsInHelp(help: string): string[] {
  return [...new Set(help.match(/(?<![\w-])--?[A-Za-z0-9][\w-]*/g) ?? [])];
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
 * A host service the enclave reaches (credentials, egress dialer, log sink) over tcp: loopback only, since whoever
 * reaches the port gets what it serves (or feeds it). `text` is the flag's value as given.
 */
export function loopbackOnly(flag: string, what: string, host: string, text: string): void {
  if (!isLoopbackHost(host)) throw new CliUsageError(`${flag}: over tcp ${what} listens on loopback only (127.0.0.1, [::1], localhost), found "${text}": use vsock or unix:/path`);
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

/** --root files as PEM text, each checked to be a certificate (a usage error, exit 2, when it is not). */
export function rootsFromFlags(files: string[] | undefined): string[] | undefined {
  return files?.map((f) => {
    if (!existsSync(f)) throw new CliUsageError(`--root: ${f} does not exist`);
    const pem = readFileSync(f, 'utf8');
    try {
      parseTrustAnchor(pem);
    } catch (err) {
      if (err instanceof AttestationError) throw new CliUsageError(`--root: ${f}: ${err.message}`);
      throw err;
    }
    return pem;
  });
}

/** The pinning flags of the commands that verify an enclave (fetch, proxy): parsed by pinsFromFlags. */
export const PIN_FLAGS = {
  pcrs: { type: 'string', multiple: true },
  pcr0: { type: 'string' },
  pcr1: { type: 'string' },
  pcr2: { type: 'string' },
  pcr8: { type: 'string' },
  root: { type: 'string', multiple: true },
  debug: { type: 'boolean', default: false },
} as const;

/** --key: an ev: public key given directly, a 33-byte compressed point in standard base64. */
export function publicKeyFlag(text: string): Uint8Array {
  let key: Uint8Array;
  try {
    key = fromBase64(text);
  } catch {
    throw new CliUsageError('--key is not standard base64');
  }
  if (key.length !== 33) throw new CliUsageError(`--key must be a 33-byte compressed point, found ${key.length} bytes`);
  return key;
}

/** Quotes a shell word only when it needs it (for the copy-pasteable lines start prints). */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

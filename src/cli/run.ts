import { readFileSync } from 'node:fs';
import { AgentError } from '../errors.ts';
import { COMMANDS, type CommandEntry } from './commands.ts';
import { didYouMean } from '../util/suggest.ts';
import { clarifyUsageMessage, flagsInHelp } from './flags.ts';
import { CliUsageError, type CliIo } from './types.ts';
import { printable } from '../util/printable.ts';

const defaultIo: CliIo = {
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
  stdin: async () => {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return new Uint8Array(Buffer.concat(chunks));
  },
};

function listCommands(commands: readonly CommandEntry[]): string {
  const width = Math.max(...commands.map((c) => c.path.join(' ').length), 4);
  return commands.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`).join('\n');
}

function usage(commands: readonly CommandEntry[]): string {
  const lines = [listCommands(commands)];
  return ['Usage: enclave-agent <command> [options]', '       enclave-agent --version', '', 'Commands:', ...lines, '', 'Run `enclave-agent <command> --help` for details.'].join('\n');
}

/** Compiled in by scripts/build-bundle.mjs (the Docker layer's single file has no package.json beside it). */
declare const __ENCLAVE_AGENT_VERSION__: string | undefined;

/** The package's version: package.json is two levels up from src/cli/ and from dist/cli/ alike. */
export function packageVersion(): string {
  if (typeof __ENCLAVE_AGENT_VERSION__ === 'string') return __ENCLAVE_AGENT_VERSION__;
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** Picks the command whose path is the longest prefix of argv. */
function findCommand(commands: readonly CommandEntry[], argv: string[]): CommandEntry | undefined {
  let best: CommandEntry | undefined;
  for (const c of commands) {
    if (c.path.every((w, i) => argv[i] === w) && (!best || c.path.length > best.path.length)) best = c;
  }
  return best;
}

export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const commands = COMMANDS;
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.out(usage(commands));
    return argv.length === 0 ? 2 : 0;
  }
  if (argv[0] === '--version' || argv[0] === '-V' || argv[0] === 'version') {
    io.out(packageVersion());
    return 0;
  }
  const entry = findCommand(commands, argv);
  if (!entry) {
    // A group word alone (`keys`, `attestation`) or with an unknown subcommand: list what it has.
    const group = commands.filter((c) => c.path.length > 1 && c.path[0] === argv[0]);
    if (group.length > 0) {
      const asked = argv[1] === undefined || argv[1] === '--help' || argv[1] === '-h';
      const sub = asked ? '' : `unknown subcommand "${argv[1]}"${didYouMean(argv[1]!, group.map((c) => c.path[1]!))}\n\n`;
      const text = `${sub}Usage: enclave-agent ${argv[0]} <subcommand> [options]\n\nSubcommands:\n${listCommands(group)}\n\nRun \`enclave-agent ${argv[0]} <subcommand> --help\` for details.`;
      if (asked) io.out(text);
      else io.err(`enclave-agent ${argv[0]}: ${text}`);
      return argv[1] === '--help' || argv[1] === '-h' ? 0 : 2;
    }
    const word = argv[0]!;
    io.err(`enclave-agent: unknown command "${word}"${didYouMean(word, new Set(commands.map((c) => c.path[0]!)))}\n\n${usage(commands)}`);
    return 2;
  }
  const command = { ...(await entry.load()).command, path: entry.path };
  const args = argv.slice(entry.path.length);
  // Only flags before `--` are ours: `run -- app --help` passes --help to the app.
  const own = args.includes('--') ? args.slice(0, args.indexOf('--')) : args;
  if (own.includes('--help') || own.includes('-h')) {
    io.out(command.help);
    return 0;
  }
  try {
    return await command.run(args, io);
  } catch (err) {
    if (err instanceof CliUsageError) {
      io.err(`enclave-agent ${command.path.join(' ')}: ${clarifyUsageMessage(err.message, flagsInHelp(command.help))} (see --help)`);
      return 2;
    }
    if (err instanceof AgentError) {
      // Messages may quote a peer (a certificate subject, a server's error text).
      io.err(`enclave-agent ${command.path.join(' ')}: ${err.code}: ${printable(err.message)}`);
      return 1;
    }
    const message = err instanceof Error ? err.message : String(err);
    io.err(`enclave-agent ${command.path.join(' ')}: unexpected error: ${message}`);
    return 1;
  }
}

/**
 * `enclave-agent <command>`: a thin dispatcher. Each command lives in src/cli/<name>.ts and exports
 * `command: CliCommand`; this file only finds it, runs it, and turns errors into one clear line.
 */
import { runCli } from './cli/run.ts';

process.exitCode = await runCli(process.argv.slice(2));

/**
 * `enclave-agent <command>`: a thin dispatcher. Each command lives in src/cli/<name>.ts and exports
 * `command: CliCommand`; this file only finds it, runs it, and turns errors into one clear line.
 */
import './attestation/ecdsa-node.ts'; // node:crypto ECDSA for attestation checks (ecdsa.ts says why)
import { installFatalHandlers } from './cli/fatal.ts';
import { dropLauncherEnv } from './cli/launcher-env.ts';
import { runCli } from './cli/run.ts';

// The launcher's allocator setting is for this process, not for the app `run` starts (launcher-env.ts).
dropLauncherEnv();

// First, so even a failure while a command loads is reported with its code and exits non-zero (src/cli/fatal.ts).
installFatalHandlers();
process.exitCode = await runCli(process.argv.slice(2));

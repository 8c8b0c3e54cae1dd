import type { CliCommand } from './types.ts';

/** Every command of the CLI. Add one line per command file. */
export async function loadCommands(): Promise<CliCommand[]> {
  const modules = await Promise.all([
    // commands register here, e.g. import('./attestation-inspect.ts'),
    import('./attestation-inspect.ts'),
    import('./bridge.ts'),
    import('./keys-public.ts'),
    import('./encrypt.ts'),
    import('./run-command.ts'),
    import('./start.ts'),
    import('./pcrs.ts'),
    import('./fetch.ts'),
    import('./attest.ts'),
  ] as Promise<{ command: CliCommand }>[]);
  return modules.map((m) => m.command);
}

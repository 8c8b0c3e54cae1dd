// Settings the Docker layer's launcher (docker/enclave-agent.sh) gives the agent's own process only. glibc reads
// MALLOC_ARENA_MAX when the process starts; the launcher sets it (unless the operator did) and says so with
// ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX=1, and the agent removes both from its environment at once, so the app it
// starts gets the environment it was given, not the agent's allocator tuning.

export const UNSET_MARKER = 'ENCLAVE_AGENT_UNSET_MALLOC_ARENA_MAX';

/** Drops the launcher's MALLOC_ARENA_MAX (and its marker) from `env`; an operator's own value stays. */
export function dropLauncherEnv(env: NodeJS.ProcessEnv = process.env): void {
  if (env[UNSET_MARKER] === undefined) return;
  if (env[UNSET_MARKER] === '1') delete env.MALLOC_ARENA_MAX;
  delete env[UNSET_MARKER];
}

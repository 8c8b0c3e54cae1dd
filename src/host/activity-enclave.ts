// What the page's Enclave view shows: name, mode and PCRs come from whoever starts the page (the local stack
// knows them; `enclave-agent logs` reads enclave.toml and a --pcrs FILE such as `enclave-agent pcrs` or
// nitro-cli writes); when the agent started and how often its app restarted come from the agent's own
// operational log lines as the sink receives them ('runtime started', 'app started', 'restarting app').

export interface EnclaveInfo {
  name: string | null;
  mode: string | null;
  pcrs: Record<string, string> | null;
  /** Where the PCRs came from ("local stack", "--pcrs FILE"), null when unknown. */
  pcrsSource: string | null;
  /** When the agent logged 'runtime started' (ms since the epoch), null until seen. */
  startedAt: number | null;
  /** App restarts the supervisor logged since the agent started; null until seen. */
  restarts: number | null;
}

export interface EnclaveTracker {
  readonly info: EnclaveInfo;
  /** Looks at one operational log line (parsed). */
  observe(record: Record<string, unknown>): void;
}

function timeOf(record: Record<string, unknown>): number {
  const t = record.time;
  if (typeof t === 'number' && Number.isFinite(t)) return t;
  if (typeof t === 'string' && Number.isFinite(Date.parse(t))) return Date.parse(t);
  return Date.now();
}

export function createEnclaveTracker(initial: Partial<EnclaveInfo> = {}): EnclaveTracker {
  const info: EnclaveInfo = { name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null, ...initial };
  return {
    info,
    observe(record) {
      const msg = record.msg;
      if (msg === 'runtime started') {
        info.startedAt = timeOf(record);
        info.restarts = 0;
        if (typeof record.mode === 'string') info.mode = record.mode.slice(0, 32);
      } else if (msg === 'restarting app' && typeof record.restart === 'number' && Number.isFinite(record.restart)) {
        info.restarts = record.restart;
      } else if (msg === 'app started' && typeof record.restarts === 'number' && Number.isFinite(record.restarts)) {
        info.restarts = record.restarts;
      }
    },
  };
}

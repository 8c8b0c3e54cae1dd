// Which sandbox `run` starts the app in (native/src/die-with-parent.c; README "Egress", the app's sandbox). On by
// default, for every app: the keys live in the agent, and an app outside the sandbox running as root reads them
// (CAP_SYS_PTRACE overrides the agent's non-dumpable flag) and has the NSM attest what it likes. [app] sandbox =
// false is the explicit opt-out.
import type { Config } from '../config.ts';

export interface AppSandboxChoice {
  /** The supervisor's `sandbox` option. */
  sandbox: 'required' | 'if-available' | 'off';
  /** The sandboxed app may open vsock sockets ([egress] app_vsock). */
  allowVsock: boolean;
  /** Why the app must not start without its sandbox (sandbox 'required'): the refusal says it. */
  why?: string;
}

/** The sandbox for `config`'s app under an agent of user `uid` (undefined: no uids on this platform). */
export function appSandboxChoice(config: Config, uid: number | undefined): AppSandboxChoice {
  const allowVsock = config.egress.app_vsock;
  if (!config.app.sandbox) return { sandbox: 'off', allowVsock: true };
  if (config.egress.enabled && !allowVsock) return { sandbox: 'required', allowVsock, why: '[egress] is enabled and the app must not reach the host around it' };
  if (uid === 0) return { sandbox: 'required', allowVsock, why: "the agent runs as root, and a root app outside its sandbox could read the agent's memory (its keys) and use the NSM" };
  // An unprivileged app cannot ptrace the non-dumpable agent nor open /dev/nsm (root's): the sandbox where it can be had.
  return { sandbox: 'if-available', allowVsock };
}

/**
 * `run`'s line when the supervisor refused to start the app without its sandbox (RUNTIME_NO_SANDBOX): why the
 * sandbox was required (when it was), what stopped it, and the way out that fits — build the wrapper, or (past
 * the wrapper's read-only directories) one node_modules — or the opt-out.
 */
export function noSandboxLine(choice: AppSandboxChoice, config: Config, message: string, tooManyDirs: boolean): string {
  const optOut = config.egress.enabled && !config.egress.app_vsock ? '[app] sandbox = false with [egress] app_vsock = true' : '[app] sandbox = false';
  const fix = tooManyDirs ? "install the agent and its dependencies into one node_modules (no links)" : '`node scripts/build-native.mjs` builds the addon and its sandbox wrapper';
  return `${choice.why === undefined ? '' : `${choice.why}, but `}${message} (${fix}; to run the app with the agent's privileges instead, set ${optOut})`;
}

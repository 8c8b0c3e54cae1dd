// Transparent mode's packet rules, installed by `run` as root at boot, inside the enclave (EGRESS.md §3.3,
// verified in a network namespace). The enclave has only `lo`: a default route over it with source 127.0.0.1
// lets connect() to any address proceed so the REDIRECT can catch it.
//   nat ENCLAVE_EGRESS:   loopback → RETURN; DNS (udp, tcp 53) → the stub; other TCP → the transparent port
//   filter ENCLAVE_EGRESS_OUT: loopback → RETURN; everything else (UDP other than DNS, ICMP, ...) → REJECT
//   ip6tables: nothing leaves but loopback (IPv6 egress is off)
// The agent's own traffic needs no exemption: it reaches the host over vsock, never over TCP/IP.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { EgressError } from './errors.ts';

const run = promisify(execFile);
export const NAT_CHAIN = 'ENCLAVE_EGRESS';
export const FILTER_CHAIN = 'ENCLAVE_EGRESS_OUT';

export interface TransparentRulesOptions {
  transparentPort: number;
  dnsPort: number;
}

/** The commands, in order (exported so the README and tests show exactly what runs). */
export function transparentRuleCommands(o: TransparentRulesOptions): string[][] {
  return [
    ['ip', 'link', 'set', 'lo', 'up'],
    ['ip', 'route', 'replace', 'default', 'dev', 'lo', 'src', '127.0.0.1'],
    ['iptables', '-w', '-t', 'nat', '-N', NAT_CHAIN],
    ['iptables', '-w', '-t', 'nat', '-A', NAT_CHAIN, '-d', '127.0.0.0/8', '-j', 'RETURN'],
    ['iptables', '-w', '-t', 'nat', '-A', NAT_CHAIN, '-p', 'udp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(o.dnsPort)],
    ['iptables', '-w', '-t', 'nat', '-A', NAT_CHAIN, '-p', 'tcp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(o.dnsPort)],
    ['iptables', '-w', '-t', 'nat', '-A', NAT_CHAIN, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(o.transparentPort)],
    ['iptables', '-w', '-t', 'nat', '-A', 'OUTPUT', '-j', NAT_CHAIN],
    ['iptables', '-w', '-N', FILTER_CHAIN],
    ['iptables', '-w', '-A', FILTER_CHAIN, '-d', '127.0.0.0/8', '-j', 'RETURN'],
    ['iptables', '-w', '-A', FILTER_CHAIN, '-j', 'REJECT'],
    ['iptables', '-w', '-A', 'OUTPUT', '-j', FILTER_CHAIN],
    ['ip6tables', '-w', '-A', 'OUTPUT', '!', '-o', 'lo', '-j', 'REJECT'],
  ];
}

/** Removes what an earlier run installed (each may fail: nothing to remove). */
export function cleanupRuleCommands(): string[][] {
  return [
    ['iptables', '-w', '-t', 'nat', '-D', 'OUTPUT', '-j', NAT_CHAIN],
    ['iptables', '-w', '-t', 'nat', '-F', NAT_CHAIN],
    ['iptables', '-w', '-t', 'nat', '-X', NAT_CHAIN],
    ['iptables', '-w', '-D', 'OUTPUT', '-j', FILTER_CHAIN],
    ['iptables', '-w', '-F', FILTER_CHAIN],
    ['iptables', '-w', '-X', FILTER_CHAIN],
    ['ip6tables', '-w', '-D', 'OUTPUT', '!', '-o', 'lo', '-j', 'REJECT'],
  ];
}

/**
 * Installs the rules as root; fails naming the command. Idempotent: an agent restarted in the same enclave
 * first removes the rules a previous run left, so they are never doubled and never fail on "chain exists".
 */
export async function installTransparentRules(o: TransparentRulesOptions): Promise<void> {
  for (const [cmd, ...args] of cleanupRuleCommands()) await run(cmd!, args, { timeout: 10_000 }).catch(() => {});
  for (const [cmd, ...args] of transparentRuleCommands(o)) {
    try {
      await run(cmd!, args, { timeout: 10_000 });
    } catch (err) {
      const e = err as { stderr?: string; code?: string | number };
      const why = (e.stderr ?? '').trim().split('\n')[0] || String(e.code ?? err);
      throw new EgressError('EGRESS_SETUP_FAILED', `transparent egress: \`${[cmd, ...args].join(' ')}\` failed: ${why}`, { cause: err });
    }
  }
}

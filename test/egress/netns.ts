// Network namespaces for the transparent-mode test (root only): "enc" with nothing but `lo` (the enclave:
// the agent installs its own rules there), and "net" reached from the root namespace over a veth pair
// (where the allowed servers live; the host dialer runs in the root namespace, like the parent instance).
// "enc" also gets a direct veth link to "net" (IPv4 and IPv6), a path a real enclave does not have: with it,
// what transparent mode must not let out (UDP other than DNS, IPv6) would reach "net" but for the agent's
// rules, so a test that sees nothing arrive proves the rules, not a missing route.
// Unique names per run; remove() deletes both namespaces, which takes their veth ends and rules with them.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Netns {
  enc: string;
  net: string;
  /** 198.18.N.1 (root side), 198.18.N.10 and .11 (in `net`). */
  hostIp: string;
  serverIp: string;
  otherIp: string;
  /** The direct enc ↔ net link: "net"'s end, 198.19.N.10 and fd5e:N::10 ("enc" has .2 and ::2). */
  linkIp: string;
  linkIp6: string;
  /** Runs a command inside `ns` to completion. */
  exec(ns: string, cmd: string[], opts?: { env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Starts a long-running command inside `ns`. */
  spawn(ns: string, cmd: string[], opts?: { env?: NodeJS.ProcessEnv }): ChildProcess;
  remove(): Promise<void>;
}

export async function createNetns(): Promise<Netns> {
  const id = randomBytes(3).toString('hex');
  const subnet = `198.18.${randomInt(1, 255)}`;
  const enc = `egenc-${id}`;
  const net = `egnet-${id}`;
  const vRoot = `egr${id}`;
  const vNet = `egn${id}`;
  const vEncLink = `ege${id}`;
  const vNetLink = `egl${id}`;
  const n = randomInt(1, 255);
  const ns: Netns = {
    enc,
    net,
    hostIp: `${subnet}.1`,
    serverIp: `${subnet}.10`,
    otherIp: `${subnet}.11`,
    linkIp: `198.19.${n}.10`,
    linkIp6: `fd5e:${n.toString(16)}::10`,
    async exec(where, cmd, opts = {}) {
      return new Promise((resolve) => {
        execFile('ip', ['netns', 'exec', where, ...cmd], { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 30_000 }, (err, stdout, stderr) => {
          const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1;
          resolve({ code, stdout, stderr });
        });
      });
    },
    spawn(where, cmd, opts = {}) {
      return spawn('ip', ['netns', 'exec', where, ...cmd], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    },
    async remove() {
      await run('ip', ['netns', 'del', enc]).catch(() => {});
      await run('ip', ['netns', 'del', net]).catch(() => {});
      await run('ip', ['link', 'del', vRoot]).catch(() => {});
    },
  };
  try {
    const steps: string[][] = [
      ['netns', 'add', enc],
      ['netns', 'add', net],
      ['link', 'add', vRoot, 'type', 'veth', 'peer', 'name', vNet],
      ['link', 'set', vNet, 'netns', net],
      ['addr', 'add', `${ns.hostIp}/24`, 'dev', vRoot],
      ['link', 'set', vRoot, 'up'],
      ['-n', net, 'addr', 'add', `${ns.serverIp}/24`, 'dev', vNet],
      ['-n', net, 'addr', 'add', `${ns.otherIp}/24`, 'dev', vNet],
      ['-n', net, 'link', 'set', vNet, 'up'],
      ['-n', net, 'link', 'set', 'lo', 'up'],
      ['link', 'add', vEncLink, 'type', 'veth', 'peer', 'name', vNetLink],
      ['link', 'set', vEncLink, 'netns', enc],
      ['link', 'set', vNetLink, 'netns', net],
      ['-n', enc, 'addr', 'add', `198.19.${n}.2/24`, 'dev', vEncLink],
      ['-n', enc, '-6', 'addr', 'add', `fd5e:${n.toString(16)}::2/64`, 'dev', vEncLink, 'nodad'],
      ['-n', enc, 'link', 'set', vEncLink, 'up'],
      // With a second interface, 127.0.0.1 is bindable only once lo is up (the agent binds its DNS stub there
      // before its rules bring lo up; a real enclave has nothing but lo).
      ['-n', enc, 'link', 'set', 'lo', 'up'],
      ['-n', net, 'addr', 'add', `198.19.${n}.10/24`, 'dev', vNetLink],
      ['-n', net, '-6', 'addr', 'add', `fd5e:${n.toString(16)}::10/64`, 'dev', vNetLink, 'nodad'],
      ['-n', net, 'link', 'set', vNetLink, 'up'],
    ];
    for (const s of steps) await run('ip', s);
  } catch (err) {
    await ns.remove();
    throw err;
  }
  return ns;
}

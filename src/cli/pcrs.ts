/**
 * `enclave-agent pcrs [--config F] [--app-port N] [--debug] [--json|--toml]`: the PCRs the local simulator will
 * report for the current config — exactly what `enclave-agent start` pins (a test checks the equality).
 *
 * The simulated identity is derived from what is run (src/attestation/simulator.ts turns it into PCRs):
 *   agentVersion  the enclave-agent version                                   → PCR1 (and PCR0)
 *   app           "demo" for the built-in demo app, else "127.0.0.1:<app port>" → PCR2 (and PCR0)
 *   config        the bytes of enclave.toml without its [attestation] table    → PCR0
 *                 (nor trailing whitespace)
 * [attestation] holds the measurements clients expect, so it is not itself measured: pasting the printed PCRs
 * into it does not change them.
 */
import { readFileSync } from 'node:fs';
import { simulatorPcrs, type SimulatorIdentity } from '../attestation/simulator.ts';
import { loadConfig } from '../config.ts';
import { isDemoApp } from '../runtime/demo-app.ts';
import { AGENT_VERSION } from '../runtime/nsm.ts';
import { probePort } from '../runtime/wait-for-port.ts';
import { toHex } from '../util/bytes.ts';
import { parseFlags, portFlag, resolveConfigPath } from './flags.ts';
import type { CliCommand } from './types.ts';

/** What `start` forwards to: the built-in demo app, or an app already listening on 127.0.0.1:<port>. */
export type LocalApp = { kind: 'demo'; /** a demo app (another start's) already answers on the port */ running?: boolean } | { kind: 'port'; port: number };

export type PcrHex = { PCR0: string; PCR1: string; PCR2: string; PCR8: string };

/**
 * Removes the [attestation] table (and top-level `attestation.…` / `attestation = {…}` keys) from TOML text, and
 * trailing whitespace (appending the table after a blank line must not change the rest either).
 */
export function withoutAttestationTable(text: string): string {
  const out: string[] = [];
  let inAttestation = false;
  let inAnyTable = false;
  for (const line of text.split('\n')) {
    // Trimmed first, then one greedy run that cannot overlap its neighbours: linear in the line's length.
    const header = /^\[\[?([^\]]*)\]\]?(?:\s*#.*)?$/.exec(line.trim());
    if (header) {
      inAnyTable = true;
      const name = header[1]!.trim();
      inAttestation = name === 'attestation' || name.startsWith('attestation.');
    }
    if (inAttestation) continue;
    if (!inAnyTable && /^\s*attestation\s*[.=]/.test(line)) continue;
    out.push(line);
  }
  const kept = out.join('\n').trimEnd();
  return kept === '' ? '' : kept + '\n';
}

/** The identity the simulator measures for this config text (undefined = no config file) and app. */
export function localIdentity(configText: string | undefined, app: LocalApp): SimulatorIdentity {
  return {
    agentVersion: AGENT_VERSION,
    app: app.kind === 'demo' ? 'demo' : `127.0.0.1:${app.port}`,
    config: configText === undefined ? '' : withoutAttestationTable(configText),
  };
}

/**
 * Which app `start` uses for `appPort`: port 0 → the demo on a free port; something answering there → that app
 * (unless it is a demo app another `start` runs, which is still "demo"); nothing → the demo on that port.
 */
export async function chooseLocalApp(appPort: number): Promise<LocalApp> {
  if (appPort === 0) return { kind: 'demo' };
  if (!(await probePort('127.0.0.1', appPort, 1_000))) return { kind: 'demo' };
  return (await isDemoApp(appPort)) ? { kind: 'demo', running: true } : { kind: 'port', port: appPort };
}

/** PCR0/1/2/8 as hex, the shape `--pcrs FILE` reads. */
export function pcrHex(identity: SimulatorIdentity, debug: boolean): PcrHex {
  const p = simulatorPcrs(identity, debug);
  return { PCR0: toHex(p[0]), PCR1: toHex(p[1]), PCR2: toHex(p[2]), PCR8: toHex(p[8]) };
}

export function readConfigText(configPath: string | undefined): string | undefined {
  return configPath === undefined ? undefined : readFileSync(configPath, 'utf8');
}

const HELP = `Usage: enclave-agent pcrs [--config FILE] [--app-port N] [--debug] [--json | --toml]

Prints the PCRs the local NSM simulator reports for the current config: the values \`enclave-agent start\`
prints and clients pin. They derive from the agent version (PCR1), the app (PCR2: "demo" for the built-in
demo app, else 127.0.0.1:<app port>), and enclave.toml without its [attestation] table (PCR0). PCR8 is
all zero (unsigned image). Debug mode (debug = true or --debug): PCR0/1/2/8 all zero, as on hardware.

Options:
  --config FILE   enclave.toml. Default: $ENCLAVE_AGENT_CONFIG, else ./enclave.toml if it exists.
  --app-port N    The app port start would use (default [app] port); decides demo vs. your app the way
                  start does: something answering there that is not the demo app is your app.
  --debug         Debug-mode enclave.
  --json          {"PCR0": "<hex>", "PCR1": ..., "PCR2": ..., "PCR8": ...} (the --pcrs FILE format)
  --toml          An [attestation] table to paste into enclave.toml (for \`enclave-agent attest\`).`;

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    const { values } = parseFlags(args, {
      config: { type: 'string' },
      'app-port': { type: 'string' },
      debug: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      toml: { type: 'boolean', default: false },
    });
    const configPath = resolveConfigPath(values.config);
    const config = loadConfig(configPath);
    const appPort = portFlag('--app-port', values['app-port'], config.app.port);
    const app = await chooseLocalApp(appPort);
    const pcrs = pcrHex(localIdentity(readConfigText(configPath), app), config.debug || values.debug);
    if (values.json) {
      io.out(JSON.stringify(pcrs));
    } else if (values.toml) {
      io.out('[attestation]');
      for (const [k, v] of Object.entries(pcrs)) io.out(`${k} = "${v}"`);
    } else {
      for (const [k, v] of Object.entries(pcrs)) io.out(`${k}  ${v}`);
      const appText = app.kind === 'demo' ? `demo app${appPort === 0 ? '' : ` (nothing else answers on 127.0.0.1:${appPort})`}` : `127.0.0.1:${appPort}`;
      io.out(`(simulated: agent ${AGENT_VERSION}, app ${appText}, config ${configPath ?? '(defaults)'}${config.debug || values.debug ? ', debug mode' : ''})`);
    }
    return 0;
  },
};

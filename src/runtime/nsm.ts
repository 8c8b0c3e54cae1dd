// Which NSM the runtime talks to: the real /dev/nsm (inside a Nitro Enclave) or the simulator (everywhere
// else: `enclave-agent start`, tests, `run --nsm simulator`).
import { existsSync } from 'node:fs';
import { createDeviceNsm } from '../attestation/nsm-device.ts';
import { nativeNsmIoctl } from '../attestation/nsm-native.ts';
import type { Nsm } from '../attestation/nsm.ts';
import { loadNative, NativeUnavailableError } from '../transport/native.ts';
import { RuntimeError } from './errors.ts';

export const NSM_DEVICE_PATH = '/dev/nsm';
/** Stands in for the kernel/bootstrap measurement in simulated PCR1. */
export const AGENT_VERSION = '0.1.0';

export type NsmChoice =
  | { kind: 'device'; path?: string }
  | {
      kind: 'simulator';
      /** The simulator's CA lives here (created on first use). */
      stateDir: string;
      /** Simulated PCR2: the app (its command line). */
      app: string;
      /** Simulated PCR0 input: the bytes of enclave.toml. */
      config: Uint8Array | string;
      debug?: boolean;
    };

/** True when this process looks like it runs inside a Nitro Enclave (the NSM device exists). */
export function insideEnclave(devicePath = NSM_DEVICE_PATH): boolean {
  return existsSync(devicePath);
}

/**
 * Opens the NSM. The device needs the native addon and the device node; either missing is one clear
 * RuntimeError (RUNTIME_NSM_UNAVAILABLE) rather than a failure at the first attestation.
 */
export async function openNsm(choice: NsmChoice): Promise<Nsm> {
  if (choice.kind === 'simulator') {
    // Imported here: an agent on /dev/nsm never needs the simulator (its certificate minting, its state files).
    const { createNsmSimulator } = await import('../attestation/simulator.ts');
    return createNsmSimulator({
      stateDir: choice.stateDir,
      identity: { agentVersion: AGENT_VERSION, app: choice.app, config: choice.config },
      debug: choice.debug === true,
    });
  }
  const path = choice.path ?? NSM_DEVICE_PATH;
  try {
    loadNative();
  } catch (err) {
    const reason = err instanceof NativeUnavailableError ? err.message.replace(/^.*?the native addon was not built /, '') : String(err);
    throw new RuntimeError('RUNTIME_NSM_UNAVAILABLE', `${path} is unavailable: the native addon was not built ${reason}`, { cause: err });
  }
  if (!existsSync(path)) {
    throw new RuntimeError('RUNTIME_NSM_UNAVAILABLE', `${path} not found: this is not a Nitro Enclave (use --nsm simulator outside one)`);
  }
  return createDeviceNsm(nativeNsmIoctl(path));
}

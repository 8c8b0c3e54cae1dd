// The boot warning of `run` for keyrings that are not fit for production: one line on stderr and in the log.
import path from 'node:path';
import type { Config } from '../config.ts';
import { DEV_KEY_FILE } from '../crypto/keyring.ts';

/** The warning for this config's keyring source, or null when there is nothing to warn about. */
export function keyringWarning(config: Config, stateDir: string): string | null {
  switch (config.keyring.source) {
    case 'dev':
      return (
        `[keyring] source = "dev": the ev: keys live and die with this enclave (${path.join(stateDir, DEV_KEY_FILE)}); ` +
        'values encrypted now will not decrypt after a restart or on another replica. Development only: use [keyring] source = "kms" in production.'
      );
    case 'sealed-file':
      return (
        '[keyring] source = "sealed-file" is development-only: its unseal key comes from the host ($ENCLAVE_AGENT_UNSEAL_KEY_FILE), ' +
        'so whoever runs the parent instance can open the keyring. Use [keyring] source = "kms" in production.'
      );
    default:
      return null;
  }
}

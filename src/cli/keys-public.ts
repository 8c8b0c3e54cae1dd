/**
 * `enclave-agent keys public [--state-dir D] [--json]`: prints the enclave's ev: public keys (compressed
 * points, base64) — the values clients give to Evervault SDKs as `pk:<base64>`. Uses the development key
 * file <state dir>/keys.json, creating it on first use exactly as the agent would.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { devKeySource, loadKeyring } from '../crypto/keyring.ts';
import { toBase64 } from '../util/bytes.ts';
import { CliUsageError, type CliCommand } from './types.ts';

/** The state directory: --state-dir, else $ENCLAVE_AGENT_STATE_DIR, else ./.state (relative to the cwd). */
export function resolveStateDir(flag: string | undefined): string {
  return path.resolve(flag ?? process.env.ENCLAVE_AGENT_STATE_DIR ?? '.state');
}

const HELP = `Usage: enclave-agent keys public [--state-dir D] [--json]

Prints the enclave's ev: public keys (33-byte compressed points, standard base64) and their key ids.
Clients use them as Evervault SDK keys: new Evervault(appId, 'pk:' + <p256>, { curve: 'prime256v1' }),
or the secp256k1 key with the SDK's default curve.

Options:
  --state-dir D   Directory holding keys.json. Default: $ENCLAVE_AGENT_STATE_DIR, else ./.state.
                  The key file is created (mode 0600) if it does not exist yet.
  --json          {"p256": "<base64>", "secp256k1": "<base64>"}`;

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    let values: { 'state-dir'?: string; json?: boolean };
    try {
      ({ values } = parseArgs({ args, options: { 'state-dir': { type: 'string' }, json: { type: 'boolean' } }, allowPositionals: false, strict: true }));
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    const keyring = await loadKeyring(devKeySource(resolveStateDir(values['state-dir'])));
    const pub = keyring.publicKeys();
    if (values.json) {
      io.out(JSON.stringify({ p256: toBase64(pub.p256), secp256k1: toBase64(pub.secp256k1) }));
    } else {
      io.out(`p256       ${toBase64(pub.p256)}  (key id ${keyring.keyIds.p256})`);
      io.out(`secp256k1  ${toBase64(pub.secp256k1)}  (key id ${keyring.keyIds.secp256k1})`);
    }
    return 0;
  },
};

/**
 * `enclave-agent encrypt <json|-> [--key <base64 point> | --state-dir D] [--role R] [--curve p256|secp256k1]`:
 * encrypts every string/number/boolean value of a JSON document into ev: values, as POST /encrypt does,
 * and prints the result.
 */
import { parseArgs } from 'node:util';
import type { EvCurve } from '../crypto/ev-kdf.ts';
import { encryptJsonText } from '../crypto/json-encrypt.ts';
import { devKeySource, loadKeyring } from '../crypto/keyring.ts';
import { publicKeyFlag } from './flags.ts';
import { resolveStateDir } from './keys-public.ts';
import { CliUsageError, type CliCommand } from './types.ts';

const HELP = `Usage: enclave-agent encrypt <json|-> [--key <base64> | --state-dir D] [--role R] [--curve p256|secp256k1]

Encrypts every string, number and boolean value of a JSON document (null, keys and layout are kept) and
prints the document with ev: values. "-" reads the JSON from standard input.

Options:
  --key <base64>   Recipient public key: a 33-byte compressed point of the --curve, standard base64
                   (as printed by "enclave-agent keys public"). Without it, the keys in --state-dir are used.
  --state-dir D    Directory holding keys.json. Default: $ENCLAVE_AGENT_STATE_DIR, else ./.state.
  --role R         Data role (^[a-z0-9-]{1,20}$): produces QkTC / S0lS values.
  --curve C        p256 (default: Tk9D / QkTC) or secp256k1 (RFVC / S0lS).`;

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    let values: { key?: string; 'state-dir'?: string; role?: string; curve?: string };
    let positionals: string[];
    try {
      ({ values, positionals } = parseArgs({
        args,
        options: { key: { type: 'string' }, 'state-dir': { type: 'string' }, role: { type: 'string' }, curve: { type: 'string' } },
        allowPositionals: true,
        strict: true,
      }));
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    if (positionals.length !== 1) throw new CliUsageError(`expected one JSON argument (or "-"), found ${positionals.length}`);
    const curve = values.curve ?? 'p256';
    if (curve !== 'p256' && curve !== 'secp256k1') throw new CliUsageError(`--curve must be p256 or secp256k1, found "${curve}"`);
    if (values.key !== undefined && values['state-dir'] !== undefined) throw new CliUsageError('give --key or --state-dir, not both');
    const input = positionals[0] === '-' ? new TextDecoder().decode(await io.stdin()) : positionals[0]!;
    try {
      JSON.parse(input);
    } catch {
      throw new CliUsageError('the argument is not valid JSON (quote strings: \'"text"\')');
    }
    let key: Uint8Array | Awaited<ReturnType<typeof loadKeyring>>;
    if (values.key !== undefined) {
      key = publicKeyFlag(values.key);
    } else {
      key = await loadKeyring(devKeySource(resolveStateDir(values['state-dir'])));
    }
    const out = encryptJsonText(input, key, { curve: curve as EvCurve, ...(values.role !== undefined ? { role: values.role } : {}) });
    io.out(out.json);
    return 0;
  },
};

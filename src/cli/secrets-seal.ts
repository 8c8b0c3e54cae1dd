/**
 * `enclave-agent secrets seal NAME`: reads a secret from standard input (never from the command line, where
 * `ps` and shell history would keep it), encrypts it into an `ev:` value for the enclave's public keys — or,
 * with --kms-key-id, into a KMS-sealed `kms:` value — and prints the value and the [secrets] line to paste
 * into enclave.toml.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.ts';
import type { EvCurve } from '../crypto/ev-kdf.ts';
import { devKeySource, loadKeyring, type PublicKeys } from '../crypto/keyring.ts';
import { arnRegion } from '../crypto/kms-secret-format.ts';
import { MAX_SECRET_BYTES, SECRET_NAME, sealSecret, type SecretInput } from '../crypto/secrets.ts';
import { parseSealedKeyring } from '../crypto/sealed-keyring.ts';
import { publicKeyFlag } from './flags.ts';
import { resolveStateDir } from './keys-public.ts';
import { KMS_TIMEOUT_OPTION, kmsTimeoutFlag, kmsTimeoutHelp } from './kms-timeout-flag.ts';
import { CliUsageError, type CliCommand } from './types.ts';

const HELP = `Usage: enclave-agent secrets seal NAME [--key <base64> | --state-dir D] [--config FILE] [--curve C] [--type T]
       enclave-agent secrets seal NAME --kms-key-id ARN --region R [--endpoint URL] [--kms-timeout-ms MS] [--type T]

Reads the secret's value from standard input (a single trailing newline is dropped), encrypts it into an ev:
value for the enclave's public key with the reserved data role enclave-secret, and prints two lines: the ev:
value, and the line to paste under [secrets] in enclave.toml:  NAME = "ev:…". \`run\` decrypts it once the
keyring is open and passes the plaintext to the app as the environment variable NAME, and nowhere else: the
request pipeline and the local API's /decrypt refuse values with that role, so a client that copies the line
from enclave.toml into a request gets nothing. The value is never a command-line
argument: those show in \`ps\` and in shell history.

  printf '%s' "$DB_PASSWORD" | enclave-agent secrets seal DB_PASSWORD --key <p256 public key>

NAME is an environment variable name: [A-Z_][A-Z0-9_]*.

Which keys (the enclave that will run the app must hold the private half):
  --key <base64>   the enclave's public key, a 33-byte compressed point of --curve, as printed by
                   "enclave-agent keys public", "keys seal", or "start --json" (publicKeys)
  --state-dir D    the development keyring in D/keys.json ([keyring] source = "dev"); the default when
                   --key is not given: $ENCLAVE_AGENT_STATE_DIR, else ./.state
  --config FILE    enclave.toml: with [keyring] source = "kms", the public keys recorded in its sealed-keyring
                   file ([keyring] file, written by "keys seal"); "sealed-file" needs --key
                   (default: $ENCLAVE_AGENT_CONFIG, else ./enclave.toml if it exists)

KMS-sealed instead (a kms: value; needs [keyring] source = "kms" in the same region):
  --kms-key-id ARN a symmetric KMS key whose policy releases Decrypt to the attested enclave (the keyring's
                   key will do); the value is AES-256-GCM under a data key from KMS GenerateDataKey, with your
                   own AWS credentials (the standard chain) — your role needs kms:GenerateDataKey only. The
                   enclave opens it at boot with KMS Decrypt and an attestation document, like the keyring.
                   Bound to NAME: under another variable name it does not open. Up to 64 KiB.
  --region R       AWS region of the key
  --endpoint URL   https:// endpoint instead of kms.<region>.amazonaws.com (VPC endpoints, tests)
${kmsTimeoutHelp(19)}

Options:
  --curve C        p256 (default) or secp256k1
  --type T         string (default), number or boolean: the app receives the same text either way`;

const TYPES = ['string', 'number', 'boolean'] as const;

/** The public keys `keys seal` recorded in the sealed-keyring file ([keyring] source = "kms"): no KMS call needed. */
function sealedFilePublicKeys(file: string): PublicKeys {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CliUsageError(`[keyring] file: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'EIO'})`);
  }
  return parseSealedKeyring(text).publicKeys;
}

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    let values: { key?: string; 'state-dir'?: string; config?: string; curve?: string; type?: string; 'kms-key-id'?: string; region?: string; endpoint?: string; 'kms-timeout-ms'?: string };
    let positionals: string[];
    try {
      ({ values, positionals } = parseArgs({
        args,
        options: {
          key: { type: 'string' },
          'state-dir': { type: 'string' },
          config: { type: 'string' },
          curve: { type: 'string' },
          type: { type: 'string' },
          'kms-key-id': { type: 'string' },
          region: { type: 'string' },
          endpoint: { type: 'string' },
          ...KMS_TIMEOUT_OPTION,
        },
        allowPositionals: true,
        strict: true,
      }));
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    if (positionals.length !== 1) {
      throw new CliUsageError(`expected one argument, the variable NAME (the value comes from standard input), found ${positionals.length}`);
    }
    const name = positionals[0]!;
    if (!SECRET_NAME.test(name)) throw new CliUsageError(`NAME must be an environment variable name ([A-Z_][A-Z0-9_]*), found "${name.slice(0, 64)}"`);
    const curve = values.curve ?? 'p256';
    if (curve !== 'p256' && curve !== 'secp256k1') throw new CliUsageError(`--curve must be p256 or secp256k1, found "${curve}"`);
    const type = values.type ?? 'string';
    if (!(TYPES as readonly string[]).includes(type)) throw new CliUsageError(`--type must be string, number or boolean, found "${type}"`);
    if (values.key !== undefined && values['state-dir'] !== undefined) throw new CliUsageError('give --key or --state-dir, not both');
    const kmsKeyId = values['kms-key-id'];
    if (kmsKeyId !== undefined) {
      for (const f of ['key', 'state-dir', 'config', 'curve'] as const) if (values[f] !== undefined) throw new CliUsageError(`--${f} is for ev: values; a KMS-sealed value (--kms-key-id) uses the KMS key only`);
      const region = values.region;
      if (!region || !/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/.test(region)) throw new CliUsageError(`--region must be an AWS region such as eu-west-1${region ? `, found "${region.slice(0, 40)}"` : ''}`);
      const inArn = arnRegion(kmsKeyId);
      if (inArn !== null && inArn !== region) throw new CliUsageError(`--kms-key-id is a key in ${inArn}, --region is ${region}`);
      if (values.endpoint !== undefined && !/^https:\/\/[^\s/]+\/?$/.test(values.endpoint)) throw new CliUsageError('--endpoint must be https://host[:port]');
    } else if (values.region !== undefined || values.endpoint !== undefined || values['kms-timeout-ms'] !== undefined) {
      throw new CliUsageError('--region, --endpoint and --kms-timeout-ms go with --kms-key-id (a KMS-sealed value)');
    }
    const kmsTimeoutMs = kmsTimeoutFlag(values['kms-timeout-ms']); // checked before stdin is read or KMS called

    // ev: values: the enclave's public keys (a KMS-sealed value needs none: KMS seals it, below).
    let key: Uint8Array | PublicKeys | null = null;
    if (kmsKeyId !== undefined) {
      key = null;
    } else if (values.key !== undefined) {
      key = publicKeyFlag(values.key);
    } else {
      const configPath = values.config ?? process.env.ENCLAVE_AGENT_CONFIG ?? (existsSync('enclave.toml') ? 'enclave.toml' : undefined);
      const k = loadConfig(configPath).keyring;
      if (k.source === 'kms' && values['state-dir'] === undefined) {
        key = sealedFilePublicKeys(k.file!);
      } else if (k.source !== 'dev') {
        throw new CliUsageError(`[keyring] source = "${k.source}": give the enclave's public key with --key (printed by "keys public" or "start --json")`);
      } else {
        key = (await loadKeyring(devKeySource(resolveStateDir(values['state-dir'])))).publicKeys();
      }
    }

    const raw = await io.stdin();
    if (raw.length > MAX_SECRET_BYTES) throw new CliUsageError(`the value on standard input is ${raw.length} bytes; an environment variable secret is at most ${MAX_SECRET_BYTES}`);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      throw new CliUsageError('the value on standard input is not UTF-8 text');
    }
    text = text.replace(/\r?\n$/, '');
    if (text.length === 0) throw new CliUsageError('no value on standard input (pipe it in: printf %s "$VALUE" | enclave-agent secrets seal NAME)');
    if (text.includes('\0')) throw new CliUsageError('the value holds a NUL character, which an environment variable cannot carry');
    let value: SecretInput = text;
    if (type === 'number') {
      if (!/^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(text) || !Number.isFinite(Number(text))) throw new CliUsageError('--type number: the value on standard input is not a JSON number');
      value = { jsonNumber: text };
    } else if (type === 'boolean') {
      if (text !== 'true' && text !== 'false') throw new CliUsageError('--type boolean: the value on standard input must be true or false');
      value = text === 'true';
    }
    const sealed =
      kmsKeyId !== undefined
        ? await (await import('../crypto/kms-secrets.ts')).sealKmsSecret(name, text, { keyId: kmsKeyId, region: values.region!, requestTimeoutMs: kmsTimeoutMs, ...(values.endpoint ? { endpoint: values.endpoint } : {}) })
        : sealSecret(value, key!, curve as EvCurve);
    io.out(sealed);
    io.out(`${name} = "${sealed}"`);
    return 0;
  },
};

/**
 * `enclave-agent keys rotate --in FILE --out FILE [--kms-key-id ARN] [--endpoint URL] [--drop-oldest] [--json]`:
 * a new current ev: key pair on top of a sealed keyring; the older pairs stay in the file for decryption.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { MAX_KEY_GENERATIONS } from '../crypto/keyring.ts';
import { rotateSealedKeyring } from '../crypto/kms-seal.ts';
import { toBase64 } from '../util/bytes.ts';
import { KMS_TIMEOUT_OPTION, kmsTimeoutFlag, kmsTimeoutHelp } from './kms-timeout-flag.ts';
import { CliUsageError, type CliCommand } from './types.ts';

const HELP = `Usage: enclave-agent keys rotate --in FILE --out FILE [--kms-key-id ARN] [--endpoint URL] [--drop-oldest] [--kms-timeout-ms MS] [--json]

Adds a fresh ev: key pair (P-256 and secp256k1) to the sealed keyring in FILE and writes the result to --out:
the new pair becomes the current one (/encrypt uses it; its public keys are the ones to give clients), and the
older pairs stay, still sealed, for decryption only — values encrypted to them keep decrypting. An ev: value
does not name its key, so the enclave tries the pairs newest first; a keyring keeps at most ${MAX_KEY_GENERATIONS} pairs.

The new pair is sealed under a new data key from KMS GenerateDataKey with your own AWS credentials (the
standard chain). The older pairs are carried over as they are: your role needs kms:GenerateDataKey only, never
kms:Decrypt. The enclave decrypts one data key per pair at boot, with the same key policy.

Put the new file in the image in place of the old one (a new image: add its PCRs to the key policy).

Options:
  --in FILE          The current sealed keyring (written by "keys seal" or "keys rotate"; version 1 or 2)
  --out FILE         Where to write the rotated keyring (refused if it exists)
  --kms-key-id ARN   The KMS key for the new pair (default: the file's); same region as the file
  --endpoint URL     https:// endpoint instead of kms.<region>.amazonaws.com (VPC endpoints, tests)
  --drop-oldest      Leave the oldest pair out (needed when the file holds ${MAX_KEY_GENERATIONS}): values encrypted to it
                     stop decrypting
${kmsTimeoutHelp(21)}
  --json             {"file", "keyId", "region", "publicKeys", "retiredPublicKeys": [newest first], "dropped"}

TLS to KMS is verified against Node's bundled roots (and NODE_EXTRA_CA_CERTS).`;

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    let values: { in?: string; out?: string; 'kms-key-id'?: string; endpoint?: string; 'drop-oldest'?: boolean; 'kms-timeout-ms'?: string; json?: boolean };
    try {
      ({ values } = parseArgs({
        args,
        options: { in: { type: 'string' }, out: { type: 'string' }, 'kms-key-id': { type: 'string' }, endpoint: { type: 'string' }, 'drop-oldest': { type: 'boolean' }, ...KMS_TIMEOUT_OPTION, json: { type: 'boolean' } },
        allowPositionals: false,
        strict: true,
      }));
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    if (!values.in) throw new CliUsageError('--in FILE is required (the current sealed keyring)');
    if (!values.out) throw new CliUsageError('--out FILE is required');
    if (values.endpoint !== undefined && !/^https:\/\/[^\s/]+\/?$/.test(values.endpoint)) throw new CliUsageError('--endpoint must be https://host[:port]');
    if (values['kms-key-id'] === '') throw new CliUsageError('--kms-key-id must not be empty');
    const timeout = kmsTimeoutFlag(values['kms-timeout-ms']);
    let previous: string;
    try {
      previous = await readFile(values.in, 'utf8');
    } catch (err) {
      throw new CliUsageError(`--in ${values.in}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'EIO'})`);
    }

    const r = await rotateSealedKeyring({
      previous,
      ...(values['kms-key-id'] ? { keyId: values['kms-key-id'] } : {}),
      ...(values.endpoint ? { endpoint: values.endpoint } : {}),
      dropOldest: values['drop-oldest'] === true,
      requestTimeoutMs: timeout,
    });
    try {
      await writeFile(values.out, r.text, { flag: 'wx', mode: 0o644 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new CliUsageError(code === 'EEXIST' ? `--out ${values.out} exists: refusing to replace a sealed keyring (write to a new file, then move it)` : `cannot write ${values.out}: ${code}`);
    }
    const b64 = (k: { p256: Uint8Array; secp256k1: Uint8Array }) => ({ p256: toBase64(k.p256), secp256k1: toBase64(k.secp256k1) });
    const head = JSON.parse(r.text) as { kms: { keyId: string; region: string } };
    const dropped = r.dropped === null ? null : b64(r.dropped.publicKeys);
    if (values.json) {
      io.out(JSON.stringify({ file: values.out, keyId: head.kms.keyId, region: head.kms.region, publicKeys: b64(r.publicKeys), retiredPublicKeys: r.retired.map(b64), dropped }));
      return 0;
    }
    const pub = b64(r.publicKeys);
    io.out(`rotated keyring written to ${values.out} (KMS key ${head.kms.keyId}, ${head.kms.region}); ${r.retired.length + 1} key pairs`);
    io.out(`current    p256       ${pub.p256}  (key id ${r.keyIds.p256})`);
    io.out(`           secp256k1  ${pub.secp256k1}  (key id ${r.keyIds.secp256k1})`);
    r.retired.forEach((k, i) => io.out(`retired ${i + 1}  p256 ${toBase64(k.p256)}  secp256k1 ${toBase64(k.secp256k1)}  (decrypt only)`));
    if (dropped !== null) io.out(`dropped    p256 ${dropped.p256}  secp256k1 ${dropped.secp256k1}  (values encrypted to it no longer decrypt)`);
    io.out('');
    io.out('Give clients the current public keys. Put the new file in the image in place of the old one; the new image has new PCRs: add them to the key policy before rolling it out.');
    return 0;
  },
};

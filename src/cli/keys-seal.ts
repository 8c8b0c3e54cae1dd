/**
 * `enclave-agent keys seal --kms-key-id ARN --region R --out FILE [--endpoint URL] [--pcrs FILE] [--json]`:
 * the operator side of `[keyring] source = "kms"`. Makes a fresh keyring, seals it under a KMS data key
 * (GenerateDataKey with the operator's own AWS credentials: the standard chain), writes the sealed-keyring file
 * and prints the public keys and a key-policy template whose Decrypt statement requires this image's PCRs.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { sealNewKeyring } from '../crypto/kms-seal.ts';
import { toBase64 } from '../util/bytes.ts';
import { KMS_TIMEOUT_OPTION, kmsTimeoutFlag, kmsTimeoutHelp } from './kms-timeout-flag.ts';
import { CliUsageError, type CliCommand } from './types.ts';

const HELP = `Usage: enclave-agent keys seal --kms-key-id ARN --region R --out FILE [--endpoint URL] [--pcrs FILE] [--kms-timeout-ms MS] [--json]

Makes a fresh ev: keyring (P-256 and secp256k1), obtains a data key from AWS KMS GenerateDataKey with your own
AWS credentials (the standard chain: environment, ~/.aws, SSO, instance role), encrypts the keyring with it and
writes FILE: the data key's CiphertextBlob, the encrypted keyring, key id, region and format version. FILE holds
nothing usable without KMS; enclaves open it with [keyring] source = "kms", file = FILE, region = R. Your role
needs kms:GenerateDataKey only, never kms:Decrypt.

Prints the public keys (give them to clients) and a key policy: GenerateDataKey for the operator, Decrypt only
for an enclave whose attestation document carries the PCRs given with --pcrs (a JSON file {"PCR0","PCR1","PCR2"}
as \`enclave-agent pcrs\`, \`start\` or nitro-cli build-enclave print them); placeholders without --pcrs.

Options:
  --kms-key-id ARN   A symmetric KMS key (its ARN: the policy template names its account)
  --region R         AWS region of the key
  --out FILE         Where to write the sealed keyring (refused if it exists)
  --endpoint URL     https:// endpoint instead of kms.<region>.amazonaws.com (VPC endpoints, tests)
  --pcrs FILE        PCR0/1/2 for the policy's kms:RecipientAttestation conditions
${kmsTimeoutHelp(21)}
  --json             {"file", "keyId", "region", "publicKeys": {"p256", "secp256k1"}, "keyPolicy"}

TLS to KMS is verified against Node's bundled roots (and NODE_EXTRA_CA_CERTS).`;

interface Pcrs {
  PCR0: string;
  PCR1: string;
  PCR2: string;
}

async function readPcrs(file: string): Promise<Pcrs> {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new CliUsageError(`--pcrs ${file}: ${(err as NodeJS.ErrnoException).code ?? 'not JSON'}`);
  }
  const out = {} as Pcrs;
  for (const k of ['PCR0', 'PCR1', 'PCR2'] as const) {
    const v = j[k];
    if (typeof v !== 'string' || !/^[0-9a-fA-F]{96}$/.test(v)) throw new CliUsageError(`--pcrs ${file}: ${k} must be 96 hex characters`);
    out[k] = v.toLowerCase();
  }
  if (/^0+$/.test(out.PCR0)) throw new CliUsageError(`--pcrs ${file}: PCR0 is all zero (a debug-mode enclave, whose memory the host can read): refusing to write a policy that releases keys to it`);
  return out;
}

/** The key policy: the operator seals, only the attested image decrypts; no un-attested Decrypt path. */
export function keyPolicyTemplate(keyArn: string, pcrs: Pcrs | null): object {
  const account = /^arn:aws[a-z-]*:kms:[^:]+:(\d{12}):key\//.exec(keyArn)?.[1] ?? '<ACCOUNT_ID>';
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Sid: 'KeyAdministration',
        Effect: 'Allow',
        Principal: { AWS: `arn:aws:iam::${account}:root` },
        Action: ['kms:DescribeKey', 'kms:GetKeyPolicy', 'kms:ScheduleKeyDeletion', 'kms:CancelKeyDeletion'],
        Resource: '*',
      },
      // PutKeyPolicy refuses a policy that would not let its caller change it again (unless told to bypass that
      // check, which would freeze the PCR list for good): one named role may, and it is the one principal that
      // can widen Decrypt. Apply the policy as that role; guard it as the key itself.
      {
        Sid: 'KeyPolicyAdministration',
        Effect: 'Allow',
        Principal: { AWS: `arn:aws:iam::${account}:role/<KEY_POLICY_ADMIN_ROLE>` },
        Action: ['kms:PutKeyPolicy', 'kms:GetKeyPolicy', 'kms:DescribeKey'],
        Resource: '*',
      },
      { Sid: 'OperatorSeals', Effect: 'Allow', Principal: { AWS: `arn:aws:iam::${account}:role/<OPERATOR_ROLE>` }, Action: ['kms:GenerateDataKey'], Resource: '*' },
      {
        Sid: 'EnclaveAttestedDecrypt',
        Effect: 'Allow',
        Principal: { AWS: `arn:aws:iam::${account}:role/<ENCLAVE_PARENT_INSTANCE_ROLE>` },
        Action: ['kms:Decrypt'],
        Resource: '*',
        Condition: {
          StringEqualsIgnoreCase: {
            'kms:RecipientAttestation:PCR0': pcrs?.PCR0 ?? '<PCR0: 96 hex>',
            'kms:RecipientAttestation:PCR1': pcrs?.PCR1 ?? '<PCR1: 96 hex>',
            'kms:RecipientAttestation:PCR2': pcrs?.PCR2 ?? '<PCR2: 96 hex>',
          },
        },
      },
    ],
  };
}

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    let values: { 'kms-key-id'?: string; region?: string; out?: string; endpoint?: string; pcrs?: string; 'kms-timeout-ms'?: string; json?: boolean };
    try {
      ({ values } = parseArgs({
        args,
        options: { 'kms-key-id': { type: 'string' }, region: { type: 'string' }, out: { type: 'string' }, endpoint: { type: 'string' }, pcrs: { type: 'string' }, ...KMS_TIMEOUT_OPTION, json: { type: 'boolean' } },
        allowPositionals: false,
        strict: true,
      }));
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    const keyId = values['kms-key-id'];
    const region = values.region;
    const out = values.out;
    if (!keyId) throw new CliUsageError('--kms-key-id ARN is required');
    if (!region || !/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/.test(region)) throw new CliUsageError(`--region must be an AWS region such as eu-west-1${region ? `, found "${region.slice(0, 40)}"` : ''}`);
    if (!out) throw new CliUsageError('--out FILE is required');
    if (values.endpoint !== undefined && !/^https:\/\/[^\s/]+\/?$/.test(values.endpoint)) throw new CliUsageError('--endpoint must be https://host[:port]');
    const timeout = kmsTimeoutFlag(values['kms-timeout-ms']);
    const pcrs = values.pcrs === undefined ? null : await readPcrs(values.pcrs);

    const sealed = await sealNewKeyring({ keyId, region, requestTimeoutMs: timeout, ...(values.endpoint ? { endpoint: values.endpoint } : {}) });
    try {
      await writeFile(out, sealed.text, { flag: 'wx', mode: 0o644 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new CliUsageError(code === 'EEXIST' ? `--out ${out} exists: refusing to replace a sealed keyring (values encrypted to it would no longer decrypt)` : `cannot write ${out}: ${code}`);
    }
    const publicKeys = { p256: toBase64(sealed.publicKeys.p256), secp256k1: toBase64(sealed.publicKeys.secp256k1) };
    const policy = keyPolicyTemplate(keyId, pcrs);
    if (values.json) {
      io.out(JSON.stringify({ file: out, keyId, region, publicKeys, keyPolicy: policy }));
      return 0;
    }
    io.out(`sealed keyring written to ${out} (KMS key ${keyId}, ${region})`);
    io.out(`p256       ${publicKeys.p256}  (key id ${sealed.keyIds.p256})`);
    io.out(`secp256k1  ${publicKeys.secp256k1}  (key id ${sealed.keyIds.secp256k1})`);
    io.out('');
    io.out(`Key policy (replace the <…> placeholders${pcrs ? '' : ', and give --pcrs for the PCR values'}; grant no other Decrypt):`);
    io.out(JSON.stringify(policy, null, 2));
    io.out('');
    io.out(`enclave.toml:\n[keyring]\nsource = "kms"\nfile = "${out}"\nregion = "${region}"`);
    return 0;
  },
};

// --kms-timeout-ms, shared by the operator commands that call KMS GenerateDataKey (keys seal, keys rotate, secrets
// seal --kms-key-id): the option, its help lines and its parsing, so the three cannot drift apart. No SDK import
// here: secrets seal loads the AWS SDK only for a KMS-sealed value.
import { DEFAULT_KMS_CALL_TIMEOUT_MS } from '../crypto/kms-deadline.ts';
import { intFlag } from './flags.ts';

/** The parseArgs option. */
export const KMS_TIMEOUT_OPTION = { 'kms-timeout-ms': { type: 'string' } } as const;

export const MIN_KMS_TIMEOUT_MS = 100;
export const MAX_KMS_TIMEOUT_MS = 600_000;

/** The option's lines in a command's --help (`indent`: the column its description starts at). */
export function kmsTimeoutHelp(indent: number): string {
  const pad = ' '.repeat(indent);
  return [
    '  --kms-timeout-ms MS',
    `${pad}Each KMS call, the SDK's retries included, must be answered within MS (default`,
    `${pad}${DEFAULT_KMS_CALL_TIMEOUT_MS}; ${MIN_KMS_TIMEOUT_MS}..${MAX_KMS_TIMEOUT_MS}): an endpoint or proxy that accepts and never answers fails the`,
    `${pad}command with KMS_UNREACHABLE "no answer within MS ms" instead of hanging it`,
  ].join('\n');
}

/** The flag's value in ms (the default when absent); a CliUsageError, before any KMS call, when it is not valid. */
export function kmsTimeoutFlag(text: string | undefined): number {
  return text === undefined ? DEFAULT_KMS_CALL_TIMEOUT_MS : intFlag('--kms-timeout-ms', text, MIN_KMS_TIMEOUT_MS, MAX_KMS_TIMEOUT_MS);
}

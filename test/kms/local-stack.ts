// A local stack (`start`) that opens its keyring through the KMS test server, on free ports, quiet.
import pino from 'pino';
import { startLocalStack, type LocalStack } from '../../src/cli/start.ts';
import type { KmsTestServer } from './kms-server.ts';

export function startKmsStack(configPath: string, stateDir: string, kms: KmsTestServer, credentials: { accessKeyId: string; secretAccessKey: string }): Promise<LocalStack> {
  return startLocalStack({
    configPath,
    stateDir,
    bridgePort: 0,
    opsPort: 0,
    agentPort: 0,
    controlPort: 0,
    appPort: 0,
    apiPort: 0,
    debug: false,
    logger: pino({ enabled: false }),
    kms: { credentials, extraCa: [kms.caPem], backoffMs: 10, attempts: 2 },
  });
}

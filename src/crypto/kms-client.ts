// The KMS client: @aws-sdk/client-kms (SigV4, the JSON protocol), with an HTTPS agent that goes through the
// in-enclave egress proxy when one is given (kms-tunnel.ts) or straight out otherwise (operator tools, the
// local stack). Retries are ours (kms-keyring.ts: a fresh attestation document per attempt), so the SDK's are off.
// Its answers are read with a size cap (kms-response-cap.ts).
import https from 'node:https';
import tls from 'node:tls';
import { KMSClient } from '@aws-sdk/client-kms';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider, MiddlewareStack } from '@smithy/types';
import { ConnectTunnelAgent } from './kms-tunnel.ts';
import { capKmsResponses } from './kms-response-cap.ts';

export interface KmsClientOptions {
  region: string;
  /** https://… (VPC endpoints, tests). Default: the SDK's kms.<region>.amazonaws.com. */
  endpoint?: string | null;
  /** The in-enclave explicit egress proxy; absent = connect directly. */
  proxy?: { host: string; port: number } | null;
  /** Extra trusted roots (PEM) beside Node's bundled ones and NODE_EXTRA_CA_CERTS. */
  extraCa?: string[];
  /** Default: the standard AWS credential chain (env, shared files, SSO, IMDS…). */
  credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /** Per-request timeout (the SDK's connection and request timeouts; the CONNECT answer's through a proxy). */
  requestTimeoutMs?: number;
  /** SDK attempts per call (default 1: callers retry). */
  maxAttempts?: number;
}

export function createKmsClient(o: KmsClientOptions): { client: KMSClient; close(): void } {
  const httpsAgent = o.proxy
    ? new ConnectTunnelAgent({ proxy: o.proxy, connectTimeoutMs: o.requestTimeoutMs ?? 10_000, ...(o.extraCa === undefined ? {} : { extraCa: o.extraCa }) })
    : new https.Agent({ keepAlive: true, ...(o.extraCa && o.extraCa.length > 0 ? { ca: [...tls.rootCertificates, ...o.extraCa] } : {}) });
  const client = new KMSClient({
    region: o.region,
    ...(o.endpoint ? { endpoint: o.endpoint } : {}),
    ...(o.credentials === undefined ? {} : { credentials: o.credentials }),
    maxAttempts: o.maxAttempts ?? 1,
    requestHandler: { httpsAgent, connectionTimeout: o.requestTimeoutMs ?? 10_000, requestTimeout: o.requestTimeoutMs ?? 10_000 },
  });
  capKmsResponses(client.middlewareStack as unknown as MiddlewareStack<object, object>);
  return {
    client,
    close() {
      client.destroy();
      httpsAgent.destroy();
    },
  };
}

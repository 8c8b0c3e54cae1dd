// A fake EC2 instance metadata service on loopback speaking IMDSv2 as EC2 does: PUT /latest/api/token (with the
// TTL header) gives a session token; the role listing and the role's credentials need that token (401 without).
// Each credentials GET hands out a new key pair (as a rotation would), expiring when `expiresInMs()` says.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export const ROLE = 'enclave-parent-role';

export interface FakeImds {
  readonly endpoint: string;
  readonly counts: { token: number; role: number; credentials: number; unauthorized: number };
  /** Every key pair handed out, in order. */
  readonly issued: { AccessKeyId: string; SecretAccessKey: string; Token: string; Expiration: string }[];
  expiresInMs: () => number;
  close(): Promise<void>;
}

export async function startFakeImds(expiresInMs: () => number = () => 3_600_000): Promise<FakeImds> {
  const tokens = new Set<string>();
  const counts = { token: 0, role: 0, credentials: 0, unauthorized: 0 };
  const issued: FakeImds['issued'] = [];
  const state = { expiresInMs };
  const server = http.createServer((req, res) => {
    if (req.method === 'PUT' && req.url === '/latest/api/token') {
      if (req.headers['x-aws-ec2-metadata-token-ttl-seconds'] === undefined) {
        res.writeHead(400).end();
        return;
      }
      counts.token++;
      const t = randomBytes(16).toString('base64');
      tokens.add(t);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(t);
      return;
    }
    const token = req.headers['x-aws-ec2-metadata-token'];
    if (typeof token !== 'string' || !tokens.has(token)) {
      counts.unauthorized++;
      res.writeHead(401).end();
      return;
    }
    if (req.method === 'GET' && req.url === '/latest/meta-data/iam/security-credentials/') {
      counts.role++;
      res.writeHead(200, { 'content-type': 'text/plain' }).end(ROLE);
      return;
    }
    if (req.method === 'GET' && req.url === `/latest/meta-data/iam/security-credentials/${ROLE}`) {
      counts.credentials++;
      const c = {
        AccessKeyId: `ASIA${randomBytes(8).toString('hex').toUpperCase()}`,
        SecretAccessKey: randomBytes(30).toString('base64'),
        Token: `IQoJ${randomBytes(200).toString('base64')}`,
        Expiration: new Date(Date.now() + state.expiresInMs()).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      };
      issued.push(c);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ Code: 'Success', LastUpdated: new Date().toISOString(), Type: 'AWS-HMAC', ...c }));
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts,
    issued,
    get expiresInMs() {
      return state.expiresInMs;
    },
    set expiresInMs(f) {
      state.expiresInMs = f;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Leaves only the instance-metadata link of the AWS default credential chain able to answer, pointed at `imds`:
 * no AWS_* keys, no profile or config file (paths under `dir` that do not exist), no ECS.
 */
export function onlyImdsCredentials(imds: FakeImds, dir: string): void {
  for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
  process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(dir, 'no-credentials');
  process.env.AWS_CONFIG_FILE = path.join(dir, 'no-config');
  process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = imds.endpoint;
}

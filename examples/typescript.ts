// The client SDK from TypeScript (type-checked against the package's .d.ts with moduleResolution node16 and
// bundler). Errors carry a typed `code`; an attestation failure rejects before anything is sent.
import { readFileSync } from 'node:fs';
import { ClientError, connect, type Client, type PcrPins } from 'enclave-agent/client/node';

interface Echo {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export async function echo(url: string, stateDir: string, payload: unknown): Promise<Echo> {
  const pcrs = JSON.parse(readFileSync(`${stateDir}/pcrs.json`, 'utf8')) as PcrPins;
  let client: Client;
  try {
    client = await connect(url, { pcrs, roots: [readFileSync(`${stateDir}/nsm-simulator/nsm-ca/root.pem`, 'utf8')] });
  } catch (err) {
    if (err instanceof ClientError && err.code === 'CLIENT_ATTESTATION_FAILED') {
      throw new Error(`not the enclave we pinned: ${err.message}`, { cause: err });
    }
    throw err;
  }
  try {
    return await client.json<Echo>('/echo', { method: 'POST', json: payload });
  } finally {
    await client.close();
  }
}

const [url = 'ws://127.0.0.1:8443/', stateDir = '.state'] = process.argv.slice(2);
const answer = await echo(url, stateDir, { hello: 'enclave' });
console.log(answer.body);

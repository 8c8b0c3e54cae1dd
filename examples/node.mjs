// The client SDK from plain Node (ESM): attest the enclave, then send requests through the encrypted channel.
// Against the local stack (`npx enclave-agent start` in the same directory):
//   node node.mjs [ws://127.0.0.1:8443/] [.state]
import { readFileSync } from 'node:fs';
import { connect } from 'enclave-agent/client/node';

const [url = 'ws://127.0.0.1:8443/', stateDir = '.state'] = process.argv.slice(2);

const client = await connect(url, {
  // The PCRs to pin: `start` writes them to <state dir>/pcrs.json. For a real enclave, nitro-cli's measurements.
  pcrs: JSON.parse(readFileSync(`${stateDir}/pcrs.json`, 'utf8')),
  // The simulator's root certificate. Omit `roots` for a real enclave: the default is the AWS Nitro root G1.
  roots: [readFileSync(`${stateDir}/nsm-simulator/nsm-ca/root.pem`, 'utf8')],
});
try {
  console.log('attested enclave module', client.attestation.moduleId);
  const res = await client.fetch('/echo', { method: 'POST', json: { hello: 'enclave' } });
  console.log(res.status, await res.json());
} finally {
  await client.close();
}

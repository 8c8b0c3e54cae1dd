// The client SDK from CommonJS: Node ≥ 20.19 loads the ESM package through require().
//   node node-require.cjs [ws://127.0.0.1:8443/] [.state]
const { readFileSync } = require('node:fs');
const { connect } = require('enclave-agent/client/node');

const [url = 'ws://127.0.0.1:8443/', stateDir = '.state'] = process.argv.slice(2);

async function main() {
  const client = await connect(url, {
    pcrs: JSON.parse(readFileSync(`${stateDir}/pcrs.json`, 'utf8')),
    roots: [readFileSync(`${stateDir}/nsm-simulator/nsm-ca/root.pem`, 'utf8')],
  });
  try {
    const greeting = await client.json('/');
    console.log(greeting);
  } finally {
    await client.close();
  }
}

main().catch((err) => {
  console.error(err.code ?? '', err.message);
  process.exit(1);
});

// The client SDK in a browser, through a bundler (esbuild, Vite, webpack...): `enclave-agent/client` resolves to
// the browser-safe build (the portable @noble Noise suite, the page's WebSocket and WebCrypto; no Node built-ins).
//   npx esbuild browser.js --bundle --format=esm --platform=browser --outfile=bundle.js
import { connect } from 'enclave-agent/client';

/**
 * Attests the enclave behind `url`, then posts `payload` to /echo. `pcrs` are the values to pin (for the local
 * stack, the contents of .state/pcrs.json); `rootPem` is the simulator's root certificate (.state/nsm-simulator/
 * nsm-ca/root.pem) — leave it out for a real enclave, whose documents chain to the AWS Nitro root G1.
 */
export async function echoThroughEnclave(url, pcrs, payload, rootPem) {
  const client = await connect(url, { pcrs, ...(rootPem ? { roots: [rootPem] } : {}) });
  try {
    const res = await client.fetch('/echo', { method: 'POST', json: payload });
    return { status: res.status, body: await res.json(), moduleId: client.attestation.moduleId };
  } finally {
    await client.close();
  }
}

// A relay on the way to KMS that accepts and then says nothing must not hang the boot: each Decrypt attempt has a
// deadline (requestTimeoutMs) and the retries are bounded, so the keyring load fails with KMS_UNREACHABLE naming
// KMS. The relay stands in for the egress proxy and the host behind it: it answers CONNECT 200 and then sends
// nothing (TLS never completes), or does not answer the CONNECT at all.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator, simulatorPcrs, type NsmSimulator } from '../../src/attestation/simulator.ts';
import { kmsKeySource } from '../../src/crypto/kms-keyring.ts';
import { sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { toHex } from '../../src/util/bytes.ts';
import { KmsTestServer, attestedPolicy } from './kms-server.ts';

const credentials = { accessKeyId: 'AKIDKMSTESTSERVER01', secretAccessKey: 'kms-test-server-secret-not-a-real-key' };
const identity = { agentVersion: 'test', app: 'kms-silent-relay-test', config: '' };

/** A proxy that reads everything and answers at most a CONNECT 200, then nothing; counts its connections. */
async function startSilentRelay(answerConnect: boolean): Promise<{ port: number; connections: () => number; close(): Promise<void> }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('error', () => {});
    s.once('close', () => sockets.delete(s));
    let head = '';
    const onData = (c: Buffer): void => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onData);
      s.resume(); // the ClientHello and anything after it: read, never answered
      if (answerConnect) s.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

let dir: string;
let nsm: NsmSimulator;
let kms: KmsTestServer;
let sealedFile: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kms-silent-relay-'));
  nsm = await createNsmSimulator({ stateDir: path.join(dir, 'nsm'), identity });
  kms = await KmsTestServer.start({ credentials, roots: [nsm.rootPem] });
  const pcrs = simulatorPcrs(identity);
  const keyId = kms.createKey(attestedPolicy({ PCR0: toHex(pcrs[0]), PCR1: toHex(pcrs[1]), PCR2: toHex(pcrs[2]) }));
  const sealed = await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
  sealedFile = path.join(dir, 'keyring.sealed.json');
  writeFileSync(sealedFile, sealed.text);
});
afterAll(async () => {
  await kms?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('KMS through a relay that accepts and goes silent', () => {
  it.each([
    ['answers CONNECT 200, then sends nothing', true],
    ['never answers the CONNECT', false],
  ])('%s: each attempt ends at its deadline, the load fails with KMS_UNREACHABLE', { timeout: 20_000 }, async (_what, answerConnect) => {
    const relay = await startSilentRelay(answerConnect);
    const retries: string[] = [];
    try {
      const err = await kmsKeySource({
        file: sealedFile,
        region: kms.region,
        endpoint: `https://kms.${kms.region}.amazonaws.com`,
        nsm,
        proxy: { host: '127.0.0.1', port: relay.port },
        credentials,
        attempts: 2,
        backoffMs: 1,
        requestTimeoutMs: 300,
        onRetry: (_n, reason) => retries.push(reason),
      })
        .load()
        .catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'KMS_UNREACHABLE', message: expect.stringMatching(/^KMS in .* did not answer Decrypt after 2 attempts: no answer within 300 ms$/) });
      expect(retries).toEqual(['no answer within 300 ms']);
      expect(relay.connections()).toBe(2);
    } finally {
      await relay.close();
    }
  });
});

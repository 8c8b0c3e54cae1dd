// Boot to ready with the KMS keyring against the test KMS (test/kms/kms-server.ts: loopback TLS, SigV4 checked,
// the Recipient document verified, the envelope built by `openssl cms`), beside the dev keyring, in one run:
// startAgentRuntime() until it resolves (keyring open, listeners bound), then close; median of 10 each.
// The KMS row includes an RSA-2048 key generation, an NSM document, a TLS handshake and the test server's own
// work (verification + an `openssl cms` process per call), which real KMS does elsewhere: an upper bound for
// the agent's share; the network round trip to a real region is not in it.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { configFromObject } from '../../src/config.ts';
import { sealNewKeyring } from '../../src/crypto/kms-seal.ts';
import { startAgentRuntime } from '../../src/runtime/agent.ts';
import { KmsTestServer, attestedPolicy } from '../../test/kms/kms-server.ts';
import { printRows, spreadOf, type BenchRow } from './lib.ts';

const ROUNDS = Number(process.env.BENCH_KMS_BOOT_ROUNDS ?? 10);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export default async function bench(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-kms-boot-'));
  const credentials = { accessKeyId: 'AKIDBENCHKMSBOOT001', secretAccessKey: 'bench-kms-boot-not-a-real-key' };
  const identity = { agentVersion: 'bench', app: 'kms-boot', config: '' };
  const nsm = await createNsmSimulator({ stateDir: path.join(dir, 'nsm'), identity });
  const kms = await KmsTestServer.start({ credentials, roots: [nsm.rootPem] });
  try {
    const pcr = (i: number) => Buffer.from(nsm.pcrs[i]!).toString('hex');
    const keyId = kms.createKey(attestedPolicy({ PCR0: pcr(0), PCR1: pcr(1), PCR2: pcr(2) }));
    const sealed = await sealNewKeyring({ keyId, region: kms.region, endpoint: kms.endpoint, extraCa: [kms.caPem], credentials });
    const file = path.join(dir, 'keyring.sealed.json');
    writeFileSync(file, sealed.text);
    const configs = {
      dev: configFromObject({}),
      kms: configFromObject({ keyring: { source: 'kms', file, region: kms.region, endpoint: kms.endpoint } }),
    };
    const boot = async (which: 'dev' | 'kms'): Promise<number> => {
      const t0 = performance.now();
      const rt = await startAgentRuntime({
        config: configs[which],
        listen: { kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0, opsPort: 0 },
        nsm,
        stateDir: path.join(dir, 'state'),
        apiPort: 0,
        processMetrics: false,
        kms: { credentials, extraCa: [kms.caPem] },
      });
      const ms = performance.now() - t0;
      await rt.close();
      return ms;
    };
    await boot('dev'); // creates keys.json; later dev boots read it, as a restart does
    await boot('kms');
    const dev: number[] = [];
    const kmsMs: number[] = [];
    const rsa: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      dev.push(await boot('dev'));
      kmsMs.push(await boot('kms'));
      const t0 = performance.now();
      generateKeyPairSync('rsa', { modulusLength: 2048 });
      rsa.push(performance.now() - t0);
    }
    const base = median(dev);
    const rows: BenchRow[] = [
      { name: 'boot to ready, [keyring] source = "dev" (baseline)', figure: base, unit: 'ms', rounds: ROUNDS, spread: spreadOf(dev) },
      { name: 'boot to ready, [keyring] source = "kms" (test KMS, loopback TLS)', figure: median(kmsMs), unit: 'ms', baseline: base, ratio: median(kmsMs) / base, rounds: ROUNDS, spread: spreadOf(kmsMs) },
      { name: '  of which: RSA-2048 recipient key generation', figure: median(rsa), unit: 'ms', rounds: ROUNDS, spread: spreadOf(rsa) },
    ];
    printRows(`kms-boot: agent boot to ready, median of ${ROUNDS}`, rows);
  } finally {
    await kms.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await bench();

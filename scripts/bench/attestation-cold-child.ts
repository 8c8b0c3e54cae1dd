// One cold sample for ./attestation.ts, in a fresh process: nothing is imported or run before the verifier, so the
// first verification pays what a client's first connection pays (lazy module init, WebCrypto set-up, an
// unoptimised JIT). Args: <src dir> <fixtures dir> [node|webcrypto]: `node` first installs node:crypto's ECDSA as
// the Node SDK, CLI and agent do (when that src has it). Prints {importMs, coldMs, coldCpuMs, warmMs} as JSON.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as Verify from '../../src/attestation/verify.ts';

const [srcDir, fixtures, backend = 'node'] = process.argv.slice(2) as [string, string, string?];
const index = JSON.parse(readFileSync(join(fixtures, 'index.json'), 'utf8')) as { documents: { file: string; verify_at: string; pcr0: string; pcr1: string; pcr2: string }[] };
const f = index.documents.find((d) => d.file.startsWith('marlin'))!;
const doc = new Uint8Array(readFileSync(join(fixtures, f.file)));
const exp = { now: new Date(f.verify_at), pcrs: { PCR0: f.pcr0, PCR1: f.pcr1, PCR2: f.pcr2 } };

const t0 = performance.now();
const nodeBackend = join(srcDir, 'attestation/ecdsa-node.ts');
if (backend === 'node' && existsSync(nodeBackend)) await import(pathToFileURL(nodeBackend).href);
const { verifyAttestation } = (await import(pathToFileURL(join(srcDir, 'attestation/verify.ts')).href)) as typeof Verify;
const t1 = performance.now();
const c1 = process.cpuUsage();
await verifyAttestation(doc, exp);
const t2 = performance.now();
const c2 = process.cpuUsage(c1);
await verifyAttestation(doc, exp);
const t3 = performance.now();
// CPU (user + system, every thread: WebCrypto verifies on the libuv pool) is far less sensitive to other load than wall time.
process.stdout.write(JSON.stringify({ importMs: t1 - t0, coldMs: t2 - t1, coldCpuMs: (c2.user + c2.system) / 1000, warmMs: t3 - t2 }));

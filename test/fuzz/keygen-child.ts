// Child process of the "keeps generating ephemeral keys under GC pressure" test (handshake.fuzz.test.ts):
// generates argv[2] X25519 ephemerals with the node suite, as every session does, while allocating enough to
// keep the young generation collecting (the parent runs this with --max-semi-space-size=1). A deadlock in key
// generation shows as this process never exiting; the parent kills it at its timeout.
import { nodePrimitives } from '../../src/noise/suite-node.ts';

const n = Number(process.argv[2] ?? 20_000);
let junk: unknown[] = [];
for (let i = 0; i < n; i++) {
  const d = nodePrimitives.generatePrivateKey();
  if (nodePrimitives.x25519PublicKey(d).length !== 32) throw new Error('bad public key');
  junk.push({ i, s: 'x'.repeat(i % 50) });
  if (junk.length > 200) junk = [];
}
console.log(`generated ${n}`);

// Runs a Stack in its own process (for tests whose environment, e.g. happy-dom, must not host the agent and the
// bridge): prints one JSON line { url, pins, rootPem } and closes everything when stdin ends.
import { startStack } from './stack.ts';

const stack = await startStack();
process.stdout.write(`${JSON.stringify({ url: stack.url, pins: stack.pins, rootPem: stack.sim.rootPem })}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  void stack.close().then(() => process.exit(0));
});

// Memory of an agent whose clients send requests and never read. A child process runs the agent alone (a
// responder on a Unix socket: small socket buffers, like vsock) in front of an app answering 60,000 bytes per
// Data request; 200 clients each send 32 Data requests and stop reading. Rows, each in a fresh child:
//   before: unbounded        no queued-output budget, no write-stall timeout (what the agent did before)
//   after: defaults          max_queued_bytes 256 MiB, write_stall_timeout_ms 30 s
//   after: 64 MiB budget     a smaller budget
// Figures: the agent's RSS before the clients connect, once every request is answered or refused (after a
// full GC), and the bytes it holds queued toward the clients (its own accounting; peak in brackets). The
// write-stall timeout ends the non-reading sessions later; this bench measures what they hold meanwhile.
// Env: BENCH_SESSIONS (default 200), BENCH_REQUESTS (per session, default 32: each request in flight holds an
// app connection, two descriptors in the agent's process — 200 × 64 would pass this machine's 20,000-fd limit
// and turn replies into connect errors).
// Run: npx tsx scripts/bench/run.ts non-reading-sessions
import { openNonReaders, settle, startChildAgent } from '../../test/responder/fixtures/non-reading-clients.ts';

const MiB = 2 ** 20;
const mib = (n: number): string => (n / MiB).toFixed(0);

export default async function main(): Promise<void> {
  const sessions = Number(process.env.BENCH_SESSIONS ?? 200);
  const requests = Number(process.env.BENCH_REQUESTS ?? 32);
  const rows: { name: string; limits: Record<string, number> }[] = [
    { name: 'before: unbounded', limits: { maxQueuedBytes: 2 ** 50, writeStallTimeoutMs: 2 ** 31 - 1 } },
    { name: 'after: defaults', limits: {} },
    { name: 'after: 64 MiB budget', limits: { maxQueuedBytes: 64 * MiB } },
  ];
  console.log(`\n## ${sessions} sessions that never read (${requests} Data requests each, 60,000-byte replies)\n`);
  console.log('| limits | RSS before (MiB) | RSS held (MiB) | queued (MiB) [peak] | app replies | requests refused / replies replaced by Error |');
  console.log('| --- | --: | --: | --: | --: | --: |');
  for (const row of rows) {
    const agent = await startChildAgent({ ...row.limits, maxSessions: 1024 });
    const before = await agent.stats(true);
    const clients = await openNonReaders(agent.path, sessions, requests).catch(async (err: unknown) => {
      await agent.stop();
      throw err;
    });
    try {
      // Every request answered by the app (or refused), nothing moving any more.
      const held = await settle(() => agent.stats(), (a, b) => b.appOpen === 0 && a.peakQueuedBytes === b.peakQueuedBytes && a.overBudget === b.overBudget, 1000, 120_000);
      const gc = await agent.stats(true);
      console.log(`| ${row.name} | ${mib(before.rss)} | ${mib(gc.rss)} | ${mib(held.queuedBytes)} [${mib(held.peakQueuedBytes)}] | ${held.appReplies} | ${held.overBudget} |`);
    } finally {
      for (const c of clients) c.socket.destroy();
      await agent.stop();
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();

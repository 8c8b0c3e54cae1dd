// The page's reader, in a worker thread: its own read-only connection to the activity database (WAL lets it
// read while the sink writes), so a slow query — an aggregate over a week of traffic — never holds the event
// loop that receives the agent's records. Answers one message at a time: { id, op, arg } → { id, result } or
// { id, error }.
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { getRecord, listRecords, traffic, type ListQuery, type TrafficQuery } from './activity-queries.ts';

export type ReaderRequest =
  | { id: number; op: 'list'; arg: ListQuery }
  | { id: number; op: 'get'; arg: number }
  | { id: number; op: 'traffic'; arg: TrafficQuery };

export type ReaderReply = { id: number; result: unknown } | { id: number; error: string };

const { file } = workerData as { file: string };
const db = new Database(file, { readonly: true, fileMustExist: true });
db.pragma('query_only = ON');

function answer(req: ReaderRequest): unknown {
  switch (req.op) {
    case 'list':
      return listRecords(db, req.arg);
    case 'get':
      return getRecord(db, req.arg);
    case 'traffic':
      return traffic(db, req.arg);
  }
}

parentPort!.on('message', (req: ReaderRequest) => {
  let reply: ReaderReply;
  try {
    reply = { id: req.id, result: answer(req) };
  } catch (err) {
    reply = { id: req.id, error: (err as Error).message };
  }
  parentPort!.postMessage(reply);
});
parentPort!.postMessage({ id: 0, result: 'ready' } satisfies ReaderReply);

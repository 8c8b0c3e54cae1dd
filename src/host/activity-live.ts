// The live tail: Server-Sent Events carrying each stored batch (summaries, no headers) to the pages that
// listen. The sink must never wait for a browser: a page whose connection is backed up (more than
// MAX_BUFFERED bytes unsent) misses batches — counted, and told with a `gap` event once it catches up, so the
// page reloads its listing instead of showing a hole as if nothing happened. A batch goes out as events of
// about EVENT_CHARS each, and a page backed up part-way through misses the rest: a whole batch at once (2,000
// records whose paths a client chose: ~25 MB) was queued for every page that had stopped reading.
// Connections are bounded, in all and per client address (an IPv6 /64 counting as one): each holds a socket and up
// to MAX_BUFFERED bytes, and whoever has the page's token (or reaches a loopback page) could open them without end.
// Past a bound the answer is not taken over: the caller refuses it (activity-server.ts), and it is counted.
import type { ServerResponse } from 'node:http';
import { ClientSessions } from '../responder/admission.ts';
import { clientKey } from '../util/ip-bytes.ts';
import type { ActivitySummary } from './activity-store.ts';

const MAX_BUFFERED = 256 * 1024;
const EVENT_CHARS = 64 * 1024;
const KEEPALIVE_MS = 15_000;
/** Live connections at once (a page holds one; a browser opens at most 6 to one server over HTTP/1.1). */
export const DEFAULT_MAX_LIVE_CLIENTS = 64;
/** Of those, from one client address (every tab of one browser, or everyone behind one SSH tunnel). */
export const DEFAULT_MAX_LIVE_PER_CLIENT = 16;

export interface LiveTailOptions {
  maxClients?: number;
  maxPerClient?: number;
}

/** Why a connection was not taken: the bound on all of them, or on its client address's. */
export type LiveRefusal = 'max-clients' | 'max-per-client';

interface Client {
  res: ServerResponse;
  /** Batches missed since the last one delivered. */
  missed: number;
}

export interface LiveTail {
  /**
   * Takes over the response: headers (`headers` beside the event stream's own), then events until the page goes
   * away, and returns null; or, at a bound, leaves the response untouched, counts it and says which bound.
   * `remote`: the client's address (counted per address, an IPv6 /64 as one).
   */
  attach(res: ServerResponse, headers?: Readonly<Record<string, string>>, remote?: string): LiveRefusal | null;
  publish(rows: ActivitySummary[]): void;
  readonly clients: number;
  /** Batches not sent to some page because its connection was backed up. */
  readonly missedBatches: number;
  /** Connections refused at a bound, since start. */
  readonly refused: number;
  close(): void;
}

/** `records` events of the rows in order, each an array of whole rows of about EVENT_CHARS at most. */
function recordEvents(rows: ActivitySummary[]): string[] {
  const events: string[] = [];
  let part: string[] = [];
  let chars = 0;
  const end = (): void => {
    events.push(`event: records\ndata: [${part.join(',')}]\n\n`);
    part = [];
    chars = 0;
  };
  for (const r of rows) {
    const json = JSON.stringify(r);
    if (part.length > 0 && chars + json.length > EVENT_CHARS) end();
    part.push(json);
    chars += json.length + 1;
  }
  end();
  return events;
}

export function createLiveTail(opts: LiveTailOptions = {}): LiveTail {
  const maxClients = opts.maxClients ?? DEFAULT_MAX_LIVE_CLIENTS;
  const perClient = new ClientSessions(opts.maxPerClient ?? DEFAULT_MAX_LIVE_PER_CLIENT);
  const clients = new Set<Client>();
  let missedBatches = 0;
  let refused = 0;
  const keepalive = setInterval(() => {
    for (const c of clients) if (c.res.writableLength < MAX_BUFFERED) c.res.write(': keepalive\n\n');
  }, KEEPALIVE_MS);
  keepalive.unref();

  return {
    attach(res, headers = {}, remote = '') {
      if (clients.size >= maxClients) {
        refused++;
        return 'max-clients';
      }
      const key = clientKey(remote);
      if (!perClient.claim(key)) {
        refused++;
        return 'max-per-client';
      }
      res.writeHead(200, {
        ...headers,
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      res.write('retry: 2000\n\n');
      const client: Client = { res, missed: 0 };
      clients.add(client);
      res.once('close', () => {
        if (clients.delete(client)) perClient.release(key);
      });
      return null;
    },
    publish(rows) {
      if (clients.size === 0 || rows.length === 0) return;
      const events = recordEvents(rows);
      for (const c of clients) {
        if (c.res.writableLength > MAX_BUFFERED) {
          c.missed++;
          missedBatches++;
          continue;
        }
        if (c.missed > 0) {
          c.res.write(`event: gap\ndata: ${c.missed}\n\n`);
          c.missed = 0;
        }
        for (const e of events) {
          if (c.res.writableLength > MAX_BUFFERED) {
            c.missed++;
            missedBatches++;
            break;
          }
          c.res.write(e);
        }
      }
    },
    get clients() {
      return clients.size;
    },
    get missedBatches() {
      return missedBatches;
    },
    get refused() {
      return refused;
    },
    close() {
      clearInterval(keepalive);
      for (const c of clients) c.res.end();
      clients.clear();
    },
  };
}

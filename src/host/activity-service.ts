// The activity store, its reader, the live tail and (optionally) the page's server, put together the one way
// both `enclave-agent logs --db` and `enclave-agent start` use them: lines or records in, the page out.
import type { Logger } from 'pino';
import type { LogSink } from '../http/log-sink.ts';
import { createEnclaveTracker, type EnclaveInfo, type EnclaveTracker } from './activity-enclave.ts';
import { createLiveTail } from './activity-live.ts';
import { parseLine } from './activity-record.ts';
import { openActivityReader } from './activity-reader.ts';
import { checkBound, startActivityServer, type ActivityServer } from './activity-server.ts';
import { openActivityStore, type ActivityStore } from './activity-store.ts';

export interface ActivityServiceOptions {
  file: string;
  retainDays?: number;
  retainRows?: number;
  /** Serve the page; absent: store only. */
  ui?: ActivityUiOptions;
  ops?: string | null;
  enclave?: Partial<EnclaveInfo>;
  sinkStats?: () => object;
  logger?: Logger;
}

/** Where and how the page is served: its token (or the token's file), and its bounds (activity-server.ts's defaults). */
export interface ActivityUiOptions {
  host: string;
  port: number;
  token?: string;
  tokenFile?: string;
  maxConnections?: number;
  /** Live-tail connections at once, and from one client address (activity-live.ts). */
  maxLive?: number;
  maxLivePerAddress?: number;
  sessionIdleMs?: number;
  sessionLifetimeMs?: number;
}

export interface ActivityService {
  readonly store: ActivityStore;
  readonly enclave: EnclaveTracker;
  /** The page's URL, null without `ui`. */
  readonly url: string | null;
  /**
   * One line from the agent's stream (already checked to be a JSON object): a transaction record goes to the
   * store (true), an operational line is looked at for the Enclave view and left to the caller (false).
   */
  takeLine(text: string): boolean;
  /** The same for a line the sink already parsed. */
  takeRecord(record: Record<string, unknown>): boolean;
  /** A LogSink for an in-process agent (the local stack). */
  sink(): LogSink;
  /** Sets the ops endpoint the page reads (known only once the agent is up, in the local stack). */
  setOps(url: string | null): void;
  close(): Promise<void>;
}

export async function startActivityService(opts: ActivityServiceOptions): Promise<ActivityService> {
  const { maxLive, maxLivePerAddress } = opts.ui ?? {};
  checkBound('maxLive', maxLive);
  checkBound('maxLivePerAddress', maxLivePerAddress);
  const store = openActivityStore({
    file: opts.file,
    ...(opts.retainDays === undefined ? {} : { retainDays: opts.retainDays }),
    ...(opts.retainRows === undefined ? {} : { retainRows: opts.retainRows }),
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
  });
  const enclave = createEnclaveTracker(opts.enclave);
  const live = createLiveTail({ ...(maxLive === undefined ? {} : { maxClients: maxLive }), ...(maxLivePerAddress === undefined ? {} : { maxPerClient: maxLivePerAddress }) });
  store.onInserted((rows) => live.publish(rows));
  const reader = openActivityReader(opts.file);
  // Starts the reader's worker now, so the page's first query does not wait for it.
  reader.list({ limit: 1 }).catch(() => {});
  let server: ActivityServer | null = null;
  let ops = opts.ops ?? null;
  if (opts.ui !== undefined) {
    try {
      server = await startActivityServer({
        ...opts.ui,
        store,
        reader,
        live,
        enclave: () => enclave.info,
        ...(opts.sinkStats === undefined ? {} : { sinkStats: opts.sinkStats }),
        ops: () => ops,
        ...(opts.logger === undefined ? {} : { logger: opts.logger }),
      });
    } catch (err) {
      await reader.close();
      store.close();
      throw err;
    }
  }
  const takeRecord = (record: Record<string, unknown>): boolean => {
    if (store.addRecord(record) !== 'other') return true;
    enclave.observe(record);
    return false;
  };
  return {
    store,
    enclave,
    url: server?.url ?? null,
    takeRecord,
    takeLine(text) {
      const record = parseLine(text);
      return record === null ? false : takeRecord(record);
    },
    sink() {
      return {
        write: (record) => void takeRecord(record as Record<string, unknown>),
        writeBatch: (records) => {
          for (const r of records) takeRecord(r as Record<string, unknown>);
        },
        close: () => new Promise<void>((resolve) => resolve(store.flush())),
      };
    },
    setOps(url) {
      ops = url;
    },
    async close() {
      await server?.close();
      await reader.close();
      store.close();
    },
  };
}

/** Both sinks get every record (the local stack: its stderr lines and the activity store). */
export function teeLogSink(a: LogSink, b: LogSink): LogSink {
  return {
    write(record) {
      a.write(record);
      b.write(record);
    },
    async close() {
      await Promise.all([a.close(), b.close()]);
    },
  };
}

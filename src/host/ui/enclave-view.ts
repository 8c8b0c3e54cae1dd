// The enclave: name, mode, PCRs (from whoever started the page: the local stack, or --pcrs FILE), uptime and
// app restarts (from the agent's own log lines), and the store's, sink's and live tail's counters — drops and
// refusals included.
import { api, type StatusReply } from './api.ts';
import { clear, fmtDuration, h } from './dom.ts';

export function enclaveView(onError: (err: unknown) => void): { root: HTMLElement; show(): void; hide(): void } {
  const body = h('div', { id: 'enclave' });
  const root = h('section', { id: 'view-enclave', class: 'view hidden' }, body);
  const field = (k: string, v: string, id?: string): HTMLElement => h('div', { class: 'field', ...(id === undefined ? {} : { id }) }, h('span', { class: 'k' }, k), h('span', { class: 'v mono' }, v));

  const refresh = async (): Promise<void> => {
    try {
      const [e, s]: [Awaited<ReturnType<typeof api.enclave>>, StatusReply] = await Promise.all([api.enclave(), api.status()]);
      clear(body);
      body.append(
        h('h3', {}, 'Enclave'),
        field('name', e.name ?? 'unknown', 'e-name'),
        field('mode', e.mode ?? 'unknown', 'e-mode'),
        field('uptime', e.uptimeS === null ? 'unknown (no "runtime started" line received yet)' : fmtDuration(e.uptimeS), 'e-uptime'),
        field('app restarts', e.restarts === null ? 'unknown' : String(e.restarts), 'e-restarts'),
        h('h3', {}, `PCRs${e.pcrsSource === null ? '' : ` (from ${e.pcrsSource})`}`),
        e.pcrs === null
          ? h('p', { class: 'muted' }, 'not known: give enclave-agent logs --pcrs FILE')
          : h('table', { class: 'headers', id: 'e-pcrs' }, h('tbody', {}, ...Object.entries(e.pcrs).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'mono pcr' }, v))))),
        h('h3', {}, 'Store'),
        field('rows stored', String(s.store.rows), 's-rows'),
        field('inserted since start', String(s.store.inserted)),
        field('dropped', String(s.store.dropped), 's-dropped'),
        field('not a valid record', String(s.store.rejected)),
        field('expired by retention', String(s.store.expired)),
        field('retention', `${s.store.retainDays} days, ${s.store.retainRows} rows`),
        field('live tail', `${s.live.clients} page(s), ${s.live.missedBatches} batch(es) skipped for slow pages, ${s.live.refused ?? 0} connection(s) refused (too many)`, 's-live'),
        s.sink === null
          ? ''
          : field('log sink', `${s.sink.lines ?? 0} lines, ${s.sink.invalid ?? 0} not JSON, ${s.sink.oversized ?? 0} too long, ${s.sink.connections ?? 0} connections, ${s.sink.refused ?? 0} refused, ${s.sink.foreignPeers ?? 0} from other enclaves, ${s.sink.webRequests ?? 0} HTTP requests (both closed unread), ${s.sink.silent ?? 0} silent (closed to make room)`, 's-sink'),
      );
    } catch (err) {
      onError(err);
    }
  };
  let timer: number | null = null;
  return {
    root,
    show() {
      root.classList.remove('hidden');
      void refresh();
      timer ??= window.setInterval(() => void refresh(), 5000);
    },
    hide() {
      root.classList.add('hidden');
      if (timer !== null) window.clearInterval(timer);
      timer = null;
    },
  };
}

// Activity: the transaction records, newest first, a page at a time ("Older" follows the keyset cursor);
// search by request id (exact) and path (prefix); filters by status class, method and time range; a record's
// detail with its (masked) headers; the live tail (SSE) prepends new records that match the filters, and can
// be paused.
import type { ActivityDetail } from '../activity-queries.ts';
import type { ActivitySummary } from '../activity-store.ts';
import { api, Unauthorized } from './api.ts';
import { clear, fmtBytes, fmtMs, fmtTime, h, statusClass } from './dom.ts';
import { probeLive } from './live-refusal.ts';

const MAX_SHOWN = 500;
const RANGES: [string, number][] = [['all time', 0], ['last 15 min', 15 * 60_000], ['last hour', 3_600_000], ['last 24 h', 86_400_000], ['last 7 days', 7 * 86_400_000]];

function select(id: string, options: [string, string][]): HTMLSelectElement {
  return h('select', { id }, ...options.map(([value, label]) => h('option', { value }, label)));
}

export function activityView(onError: (err: unknown) => void, onRecords: () => void = () => {}): { root: HTMLElement; show(): void; hide(): void } {
  const txid = h('input', { id: 'q-txid', type: 'search', placeholder: 'request id (exact)', autocomplete: 'off', spellcheck: 'false' });
  const path = h('input', { id: 'q-path', type: 'search', placeholder: 'path prefix, e.g. /pay', autocomplete: 'off', spellcheck: 'false' });
  const status = select('q-status', [['', 'any status'], ['2xx', '2xx'], ['3xx', '3xx'], ['4xx', '4xx'], ['5xx', '5xx'], ['none', 'no response']]);
  const method = select('q-method', [['', 'any method'], ...['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'].map((m): [string, string] => [m, m])]);
  const range = select('q-range', RANGES.map(([label, ms]): [string, string] => [String(ms), label]));
  const search = h('button', { id: 'q-search', type: 'submit' }, 'Search');
  const liveBtn = h('button', { id: 'live-toggle', type: 'button', class: 'live' }, 'Pause live');
  const liveState = h('span', { id: 'live-state', class: 'muted' }, 'live: connecting');
  const form = h('form', { class: 'filters' }, txid, path, status, method, range, search, liveBtn, liveState);

  const tbody = h('tbody', { id: 'rows' });
  const table = h(
    'table',
    { class: 'records' },
    h('thead', {}, h('tr', {}, ...['Time', 'Request id', 'Method', 'Path', 'Status', 'Duration', 'In', 'Out', 'Client', 'Decrypted'].map((c) => h('th', {}, c)))),
    tbody,
  );
  const older = h('button', { id: 'older', type: 'button', class: 'hidden' }, 'Older');
  const empty = h('p', { id: 'empty', class: 'muted' }, 'No records match.');
  const detail = h('aside', { id: 'detail', class: 'detail hidden' });
  const root = h('section', { id: 'view-activity', class: 'view' }, form, h('div', { class: 'split' }, h('div', { class: 'list' }, table, empty, older), detail));

  let next: string | null = null;
  let shown = 0;
  let paused = false;
  let source: EventSource | null = null;
  /** The countdown to the next try after a refusal. */
  let retry: number | undefined;
  /** Records may have come and gone while the tail was refused: the listing is read again once it opens. */
  let reloadOnOpen = false;
  let filters = new URLSearchParams();
  let selected: number | null = null;
  /** Live rows that arrived while a fresh listing was on its way (it may have been read before them). */
  let arrivedDuringLoad: ActivitySummary[] | null = null;

  const currentFilters = (): URLSearchParams => {
    const p = new URLSearchParams();
    if (txid.value.trim()) p.set('txid', txid.value.trim());
    if (path.value) p.set('path', path.value);
    if (status.value) p.set('status', status.value);
    if (method.value) p.set('method', method.value);
    const span = Number(range.value);
    if (span > 0) p.set('from', String(Date.now() - span));
    return p;
  };
  const matches = (r: ActivitySummary): boolean => {
    const t = filters.get('txid');
    const p = filters.get('path');
    const s = filters.get('status');
    const m = filters.get('method');
    const from = filters.get('from');
    return (!t || r.txid === t) && (!p || r.path.startsWith(p)) && (!s || statusClass(r.status) === s) && (!m || r.method === m) && (!from || r.ts >= Number(from));
  };

  const row = (r: ActivitySummary): HTMLTableRowElement => {
    const tr = h(
      'tr',
      { 'data-id': String(r.id), 'data-txid': r.txid, class: `s${statusClass(r.status)}` },
      h('td', { class: 'time' }, fmtTime(r.ts)),
      h('td', { class: 'mono' }, r.txid),
      h('td', {}, r.method),
      h('td', { class: 'mono path' }, r.path),
      h('td', { class: 'status' }, r.status === 0 ? '—' : String(r.status)),
      h('td', { class: 'num' }, fmtMs(r.elapsedMs)),
      h('td', { class: 'num' }, fmtBytes(r.bytesIn)),
      h('td', { class: 'num' }, fmtBytes(r.bytesOut)),
      h('td', { class: 'mono' }, r.remoteIp ?? ''),
      h('td', { class: 'num' }, String(r.decryptedFields)),
    );
    tr.addEventListener('click', () => void openDetail(r.id));
    if (r.id === selected) tr.classList.add('selected');
    return tr;
  };

  const headerTable = (title: string, headers: Record<string, string | string[]>): HTMLElement =>
    h(
      'div',
      {},
      h('h4', {}, title),
      h('table', { class: 'headers' }, h('tbody', {}, ...Object.entries(headers).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'mono' }, Array.isArray(v) ? v.join(', ') : v))))),
    );

  const openDetail = async (id: number): Promise<void> => {
    selected = id;
    for (const tr of Array.from(tbody.rows)) tr.classList.toggle('selected', tr.getAttribute('data-id') === String(id));
    let d: ActivityDetail;
    try {
      d = await api.record(id);
    } catch (err) {
      onError(err);
      return;
    }
    clear(detail);
    detail.classList.remove('hidden');
    const close = h('button', { type: 'button', class: 'close' }, '×');
    close.addEventListener('click', () => {
      detail.classList.add('hidden');
      selected = null;
    });
    const field = (k: string, v: string): HTMLElement => h('div', { class: 'field' }, h('span', { class: 'k' }, k), h('span', { class: 'v mono' }, v));
    detail.append(
      close,
      h('h3', {}, `${d.method} ${d.path}`),
      field('request id', d.txid),
      field('time', fmtTime(d.ts)),
      field('status', d.status === 0 ? 'no response' : String(d.status)),
      field('duration', fmtMs(d.elapsedMs)),
      field('bytes in / out', `${fmtBytes(d.bytesIn)} / ${fmtBytes(d.bytesOut)}`),
      field('client', d.remoteIp ?? '–'),
      field('type', d.type),
      field('session', d.sessionId),
      field('decrypted fields', String(d.decryptedFields)),
      field('user agent', d.userAgent ?? '–'),
      d.error === null ? '' : field('error', d.error),
      headerTable('Request headers (masked by the agent)', d.requestHeaders),
      headerTable('Response headers (masked by the agent)', d.responseHeaders),
    );
  };

  const prependLive = (r: ActivitySummary): void => {
    if (!matches(r) || tbody.querySelector(`tr[data-id="${r.id}"]`) !== null) return;
    tbody.prepend(row(r));
    shown++;
  };

  const load = async (append: boolean): Promise<void> => {
    if (!append) {
      filters = currentFilters();
      arrivedDuringLoad = [];
    }
    const p = new URLSearchParams(filters);
    p.set('limit', '50');
    if (append && next !== null) p.set('before', next);
    try {
      const res = await api.records(p);
      if (!append) {
        clear(tbody);
        shown = 0;
      }
      for (const r of res.records) tbody.append(row(r));
      shown += res.records.length;
      if (!append && arrivedDuringLoad !== null) {
        for (const r of arrivedDuringLoad) prependLive(r);
        arrivedDuringLoad = null;
      }
      next = res.next;
      older.classList.toggle('hidden', next === null);
      empty.classList.toggle('hidden', shown > 0);
    } catch (err) {
      arrivedDuringLoad = null;
      onError(err);
    }
  };

  const stopRetry = (): void => {
    window.clearInterval(retry);
    retry = undefined;
  };
  /** Refused (EventSource gave up): say why, and try again when the server said to. */
  const refused = async (es: EventSource): Promise<void> => {
    const probe = await probeLive('/api/live');
    if (source !== es) return; // paused, or reconnected, meanwhile
    reloadOnOpen = true;
    if (probe.kind === 'open') return connect();
    if (probe.kind === 'unauthorized') {
      liveState.textContent = 'live: session expired — sign in again';
      return onError(new Unauthorized());
    }
    let left = probe.retryS;
    const tick = (): void => {
      if (left <= 0) return connect();
      liveState.textContent = `live: ${probe.reason} — retrying in ${left} s`;
      left--;
    };
    tick();
    retry = window.setInterval(tick, 1000);
  };
  const connect = (): void => {
    stopRetry();
    source?.close();
    const es = new EventSource('/api/live');
    source = es;
    es.addEventListener('open', () => {
      liveState.textContent = 'live';
      if (reloadOnOpen) {
        reloadOnOpen = false;
        void load(false);
      }
    });
    es.addEventListener('error', () => {
      // CONNECTING: the stream broke and EventSource tries again by itself. CLOSED: an answer other than 200.
      if (es.readyState === EventSource.CLOSED) void refused(es);
      else liveState.textContent = 'live: reconnecting';
    });
    es.addEventListener('records', (e) => {
      const rows = JSON.parse((e as MessageEvent<string>).data) as ActivitySummary[];
      // Batches arrive oldest first; the table is newest first.
      arrivedDuringLoad?.push(...rows);
      for (const r of rows) prependLive(r);
      while (tbody.rows.length > MAX_SHOWN) tbody.lastElementChild?.remove();
      onRecords();
      empty.classList.toggle('hidden', shown > 0);
    });
    // The server skipped batches while this page's connection was backed up: reload rather than show a hole.
    es.addEventListener('gap', () => void load(false));
  };
  const setPaused = (p: boolean): void => {
    paused = p;
    liveBtn.textContent = p ? 'Resume live' : 'Pause live';
    liveBtn.classList.toggle('paused', p);
    if (p) {
      stopRetry();
      source?.close();
      source = null;
      liveState.textContent = 'live: paused';
    } else {
      void load(false);
      connect();
    }
  };

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void load(false);
  });
  for (const s of [status, method, range]) s.addEventListener('change', () => void load(false));
  older.addEventListener('click', () => void load(true));
  liveBtn.addEventListener('click', () => setPaused(!paused));

  let started = false;
  return {
    root,
    show() {
      root.classList.remove('hidden');
      if (!started) {
        started = true;
        void load(false);
        if (!paused) connect();
      }
    },
    hide() {
      root.classList.add('hidden');
    },
  };
}

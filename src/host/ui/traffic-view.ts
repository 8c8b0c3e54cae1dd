// Traffic: requests/s, p50/p95/p99 latency and error rate over the selected range, aggregated by the server
// in SQL (one point per bucket), drawn with uPlot; and the agent's health and a few metrics from its ops
// endpoint when reachable.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { TrafficPoint, TrafficResult } from '../activity-queries.ts';
import { api } from './api.ts';
import { clear, fmtMs, h } from './dom.ts';

const RANGES: [string, number][] = [['last 15 min', 15 * 60_000], ['last hour', 3_600_000], ['last 6 h', 6 * 3_600_000], ['last 24 h', 86_400_000], ['last 7 days', 7 * 86_400_000]];
const REFRESH_MS = 5000;

interface Chart {
  el: HTMLElement;
  plot: uPlot | null;
}

export function trafficView(onError: (err: unknown) => void): { root: HTMLElement; show(): void; hide(): void } {
  const range = h('select', { id: 't-range' }, ...RANGES.map(([label, ms]) => h('option', { value: String(ms) }, label)));
  range.value = String(15 * 60_000);
  const totals = h('div', { id: 't-totals', class: 'totals' });
  const charts = {
    rps: { el: h('div', { id: 'chart-rps', class: 'chart' }), plot: null } as Chart,
    latency: { el: h('div', { id: 'chart-latency', class: 'chart' }), plot: null } as Chart,
    errors: { el: h('div', { id: 'chart-errors', class: 'chart' }), plot: null } as Chart,
  };
  const ops = h('div', { id: 'ops', class: 'ops' });
  const root = h(
    'section',
    { id: 'view-traffic', class: 'view hidden' },
    h('div', { class: 'filters' }, h('label', {}, 'Range ', range)),
    totals,
    h('h3', {}, 'Requests per second'),
    charts.rps.el,
    h('h3', {}, 'Latency (p50, p95, p99)'),
    charts.latency.el,
    h('h3', {}, 'Error rate (5xx and no response)'),
    charts.errors.el,
    h('h3', {}, 'Agent health and metrics'),
    ops,
  );

  const draw = (c: Chart, data: uPlot.AlignedData, series: uPlot.Series[], yLabel: string, dots = true): void => {
    const width = Math.max(300, c.el.clientWidth || root.clientWidth - 40);
    c.plot?.destroy();
    // How many buckets hold data (what the test checks was drawn).
    c.el.setAttribute('data-points', String(Array.from(data[1]!, (v) => v).filter((v) => v !== null && v !== undefined && v !== 0).length));
    c.plot = new uPlot(
      {
        width,
        height: 180,
        // Charts with gaps (no latency without requests) get points: a bucket between two quiet ones is a dot.
        series: [{}, ...series.map((x) => ({ ...x, points: { show: dots, size: 5, fill: x.stroke as string } }))],
        axes: [{}, { label: yLabel, size: 60 }],
        scales: { x: { time: true } },
        legend: { live: false },
        cursor: { show: true },
      },
      data,
      c.el,
    );
  };

  const render = (t: TrafficResult): void => {
    // The database returns only buckets with requests; the charts show the whole range, quiet buckets as
    // zero requests and no latency (a gap, not a line drawn across it).
    const byT = new Map(t.points.map((p) => [p.t, p]));
    const points: (TrafficPoint | { t: number; requests: 0; errors: 0; p50: null; p95: null; p99: null })[] = [];
    for (let at = t.from; at < t.to; at += t.bucketMs) points.push(byT.get(at) ?? { t: at, requests: 0, errors: 0, p50: null, p95: null, p99: null });
    const xs = points.map((p) => p.t / 1000);
    const perSec = t.bucketMs / 1000;
    draw(charts.rps, [xs, points.map((p) => p.requests / perSec)], [{ label: 'req/s', stroke: '#2f6fde', fill: 'rgba(47,111,222,0.15)', width: 2 }], 'req/s', false);
    draw(
      charts.latency,
      [xs, points.map((p) => p.p50), points.map((p) => p.p95), points.map((p) => p.p99)],
      [
        { label: 'p50 ms', stroke: '#2a9d55', width: 2 },
        { label: 'p95 ms', stroke: '#e0a100', width: 2 },
        { label: 'p99 ms', stroke: '#d04040', width: 2 },
      ],
      'ms',
    );
    draw(charts.errors, [xs, points.map((p) => (p.requests === 0 ? null : (100 * p.errors) / p.requests))], [{ label: 'error %', stroke: '#d04040', fill: 'rgba(208,64,64,0.15)', width: 2 }], '%');
    clear(totals);
    const span = (t.to - t.from) / 1000;
    const item = (k: string, v: string, id: string): HTMLElement => h('div', { class: 'stat', id }, h('span', { class: 'k' }, k), h('span', { class: 'v' }, v));
    totals.append(
      item('requests', String(t.total.requests), 't-requests'),
      item('avg req/s', (t.total.requests / span).toFixed(2), 't-rps'),
      item('p50', fmtMs(t.total.p50), 't-p50'),
      item('p95', fmtMs(t.total.p95), 't-p95'),
      item('p99', fmtMs(t.total.p99), 't-p99'),
      item('error rate', t.total.requests === 0 ? '–' : `${((100 * t.total.errors) / t.total.requests).toFixed(2)} %`, 't-errors'),
      item('bucket', `${t.bucketMs / 1000} s`, 't-bucket'),
    );
  };

  const renderOps = async (): Promise<void> => {
    const o = await api.ops();
    clear(ops);
    if (!o.reachable) {
      ops.append(h('p', { class: 'muted', id: 'ops-state' }, o.url === null ? 'ops endpoint: not configured (--ops URL)' : `ops endpoint ${o.url}: unreachable (${o.error ?? 'no answer'})`));
      return;
    }
    ops.append(h('p', { id: 'ops-state' }, `ops endpoint ${o.url}: reachable, /health → ${o.healthStatus ?? '?'}`));
    ops.append(h('pre', { class: 'mono health' }, typeof o.health === 'string' ? o.health : JSON.stringify(o.health, null, 2)));
    if (o.metrics !== undefined) {
      ops.append(h('table', { class: 'headers' }, h('tbody', {}, ...Object.entries(o.metrics).map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', { class: 'mono' }, String(v)))))));
    }
  };

  const refresh = async (): Promise<void> => {
    const to = Date.now();
    const from = to - Number(range.value);
    try {
      render(await api.traffic(from, to, 120));
      await renderOps();
    } catch (err) {
      onError(err);
    }
  };

  let timer: number | null = null;
  range.addEventListener('change', () => void refresh());
  return {
    root,
    show() {
      root.classList.remove('hidden');
      void refresh();
      timer ??= window.setInterval(() => void refresh(), REFRESH_MS);
    },
    hide() {
      root.classList.add('hidden');
      if (timer !== null) window.clearInterval(timer);
      timer = null;
    },
  };
}

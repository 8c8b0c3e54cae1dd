// The activity page: plain DOM and TypeScript (no framework: three views and a table do not need one),
// bundled by esbuild with uPlot into one script and one stylesheet. Views switch by the URL hash.
import './styles.css';
import { activityView } from './activity-view.ts';
import { api, Unauthorized } from './api.ts';
import { h } from './dom.ts';
import { enclaveView } from './enclave-view.ts';
import { trafficView } from './traffic-view.ts';

const VIEWS = ['activity', 'traffic', 'enclave'] as const;
type ViewName = (typeof VIEWS)[number];

/** Set once this tab has been signed in: a later 401 means its session ended, not that it never had one. */
const SIGNED_IN = 'ea-activity-signed-in';

function loginForm(): HTMLElement {
  const input = h('input', { id: 'token', type: 'password', placeholder: 'token (the logs command: --ui-token-file or $ENCLAVE_AGENT_UI_TOKEN)', autocomplete: 'current-password' });
  const ended = sessionStorage.getItem(SIGNED_IN) !== null;
  const msg = h('p', { class: 'muted', id: 'login-msg' }, ended ? 'Session expired (or the token changed) — sign in again.' : 'This page needs the token it was started with.');
  const form = h('form', { class: 'login', id: 'login' }, h('h2', {}, 'enclave-agent activity'), msg, input, h('button', { type: 'submit' }, 'Open'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void api.login(input.value).then((ok) => {
      if (ok) location.reload();
      else msg.textContent = 'Wrong token.';
    });
  });
  return form;
}

async function main(): Promise<void> {
  try {
    if ((await api.status()).token) sessionStorage.setItem(SIGNED_IN, '1');
  } catch (err) {
    if (err instanceof Unauthorized) {
      document.body.append(loginForm());
      return;
    }
    throw err;
  }
  const banner = h('div', { id: 'banner', class: 'banner hidden' });
  const onError = (err: unknown): void => {
    if (err instanceof Unauthorized) return location.reload();
    banner.textContent = err instanceof Error ? err.message : String(err);
    banner.classList.remove('hidden');
  };
  let counting = false;
  const counters = async (): Promise<void> => {
    if (counting) return;
    counting = true;
    try {
      const s = await api.status();
      drops.textContent = `${s.store.rows} stored · ${s.store.dropped} dropped`;
      drops.classList.toggle('warn', s.store.dropped > 0);
    } catch (err) {
      onError(err);
    } finally {
      counting = false;
    }
  };
  const drops = h('span', { id: 'drops', class: 'badge' });
  const views = { activity: activityView(onError, () => void counters()), traffic: trafficView(onError), enclave: enclaveView(onError) };
  const tabs = h('nav', {}, ...VIEWS.map((v) => h('a', { href: `#${v}`, id: `tab-${v}` }, v[0]!.toUpperCase() + v.slice(1))));
  document.body.append(h('header', {}, h('h1', {}, 'enclave-agent'), tabs, drops), banner, ...VIEWS.map((v) => views[v].root));

  const route = (): void => {
    const name = (VIEWS as readonly string[]).includes(location.hash.slice(1)) ? (location.hash.slice(1) as ViewName) : 'activity';
    for (const v of VIEWS) {
      document.getElementById(`tab-${v}`)!.classList.toggle('active', v === name);
      if (v === name) views[v].show();
      else views[v].hide();
    }
  };
  window.addEventListener('hashchange', route);
  route();

  void counters();
  window.setInterval(() => void counters(), 5000);
}

void main();

// The activity page's server: content types and a strict CSP with no inline script or style, the token rule
// (required off loopback; constant-time login → HttpOnly session cookie that the API and the live tail need),
// the loopback Host check, validated parameters, the live tail (SSE), and `enclave-agent logs --db --ui`
// end to end: lines over the sink's socket land in the database and on the page, operational lines stay on
// stdout and feed the Enclave view.
import http from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseLogsArgs, serveLogs } from '../../src/cli/logs.ts';
import { CliUsageError, type CliIo } from '../../src/cli/types.ts';
import { CONTENT_SECURITY_POLICY, startActivityServer } from '../../src/host/activity-server.ts';
import { startActivityService, type ActivityService } from '../../src/host/activity-service.ts';
import { createLiveTail } from '../../src/host/activity-live.ts';
import { ActivityReaderError, openActivityReader } from '../../src/host/activity-reader.ts';
import { openActivityStore } from '../../src/host/activity-store.ts';
import { createHeaderMasker, trxLine } from '../../src/http/stages/trx-log.ts';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function tmpDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ea-activity-srv-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A fresh activity store and a reader of it, both closed after the test. */
async function storeAndReader(): Promise<{ store: ReturnType<typeof openActivityStore>; reader: ReturnType<typeof openActivityReader> }> {
  const dir = await tmpDir();
  const store = openActivityStore({ file: path.join(dir, 'a.db') });
  cleanup.push(() => store.close());
  const reader = openActivityReader(path.join(dir, 'a.db'));
  cleanup.push(() => reader.close());
  return { store, reader };
}

const mask = createHeaderMasker();
function line(i: number, status = 200): string {
  return trxLine(
    {
      txid: `req-${i}`, startedAt: Date.now() - 1000 + i, elapsedMs: 2, sessionId: 's', type: 'HTTP', method: 'GET', url: `/items/${i}`, status,
      bytesIn: 1, bytesOut: 2, remoteIp: '192.0.2.1', requestHeaders: ['Host', 'app', 'Cookie', 'sid=1'], responseHeaders: [], decryptedFields: 0, error: undefined,
    },
    mask,
  );
}

/** A service with its page (so `url` is set). */
async function service(extra: Partial<Parameters<typeof startActivityService>[0]> = {}): Promise<ActivityService & { url: string }> {
  const s = await startActivityService({ file: path.join(await tmpDir(), 'a.db'), ui: { host: '127.0.0.1', port: 0 }, ...extra });
  cleanup.push(() => s.close());
  if (s.url === null) throw new Error('the page did not start');
  return s as ActivityService & { url: string };
}

/** A raw GET with chosen headers (fetch will not send a Host of our choosing). */
function rawGet(url: string, headers: Record<string, string>): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
    });
    req.on('error', reject);
  });
}

describe('activity page server', () => {
  it('serves the shell, script and stylesheet with their content types and a strict CSP; the shell has no inline script or style', async () => {
    const s = await service();
    const page = await fetch(s.url);
    const html = await page.text();
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
    expect(CONTENT_SECURITY_POLICY).toMatch(/default-src 'self'/);
    expect(CONTENT_SECURITY_POLICY).not.toMatch(/unsafe-inline|unsafe-eval|https?:/);
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(html).toMatch(/<script type="module" src="\/app\.js"><\/script>/);
    expect(html.match(/<script/g)).toHaveLength(1);
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=/);
    const js = await fetch(`${s.url}app.js`);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    const code = await js.text();
    expect(code).toContain('/api/records');
    expect(code).not.toMatch(/https?:\/\/(?!www\.w3\.org)[a-z]/i);
    const css = await fetch(`${s.url}app.css`);
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
    expect(await css.text()).toContain('.uplot');
  });

  it('refuses a Host that is not a loopback name when there is no token (DNS rebinding)', async () => {
    const s = await service();
    expect((await rawGet(`${s.url}api/status`, { host: 'attacker.example' })).status).toBe(403);
    expect((await rawGet(`${s.url}api/status`, { host: `localhost:${new URL(s.url).port}` })).status).toBe(200);
  });

  it('judges the listen address and the Host by one loopback rule: an address, not a name that looks like one', async () => {
    // "127.999.0.1" is no IPv4 address: listening on it resolves it as a name (DNS), so it must not count as
    // loopback and spare the page its token. Failed before: the CLI took it without --ui-token.
    const args = (ui: string): string[] => ['--listen', 'tcp:127.0.0.1:0', '--db', 'x.db', '--ui', ui];
    expect(() => parseLogsArgs(args('127.999.0.1:8090'), {})).toThrow(/needs a token of 16\+ characters/);
    for (const ui of ['127.0.0.1:8090', '127.8.9.10:8090', 'localhost:8090', '[::1]:8090']) expect(parseLogsArgs(args(ui), {}).ui, ui).toMatchObject({ port: 8090 });
    const { store, reader } = await storeAndReader();
    const base = { port: 0, store, reader, live: createLiveTail(), enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }) };
    await expect(startActivityServer({ ...base, host: '127.999.0.1' })).rejects.toMatchObject({ code: 'ACTIVITY_SERVER_TOKEN_REQUIRED' });
    // The Host header, by the same rule.
    const s = await service();
    const port = new URL(s.url).port;
    for (const host of [`127.0.0.1:${port}`, `127.1.2.3:${port}`, `localhost:${port}`, `[::1]:${port}`, 'localhost']) expect((await rawGet(`${s.url}api/status`, { host })).status, host).toBe(200);
    for (const host of [`127.999.0.1:${port}`, `127.0.0.1.attacker.example:${port}`, `localhost.attacker.example`, `[::2]:${port}`]) expect((await rawGet(`${s.url}api/status`, { host })).status, host).toBe(403);
  });

  it('answers a bad parameter with 400 and a code, never a query', async () => {
    const s = await service();
    for (const q of ['status=9xx', 'limit=0', 'limit=abc', 'before=1;drop', 'method=get', 'from=-5']) {
      const r = await fetch(`${s.url}api/records?${q}`);
      expect(r.status, q).toBe(400);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('BAD_REQUEST');
    }
    expect((await fetch(`${s.url}api/records/999`)).status).toBe(404);
    expect((await fetch(`${s.url}api/records`, { method: 'DELETE' })).status).toBe(405);
  });

  it('needs a token off loopback; with one, the API and the live tail answer only after a constant-time login sets the cookie', async () => {
    const { store, reader } = await storeAndReader();
    const base = { port: 0, store, reader, live: createLiveTail(), enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }) };
    await expect(startActivityServer({ ...base, host: '0.0.0.0' })).rejects.toMatchObject({ code: 'ACTIVITY_SERVER_TOKEN_REQUIRED' });
    await expect(startActivityServer({ ...base, host: '10.0.0.1', token: 'short' })).rejects.toMatchObject({ code: 'ACTIVITY_SERVER_TOKEN_REQUIRED' });
    expect(() => parseLogsArgs(['--listen', 'tcp:127.0.0.1:0', '--db', 'x.db', '--ui', '0.0.0.0:8090'], {})).toThrow(CliUsageError);
    expect(() => parseLogsArgs(['--listen', 'tcp:127.0.0.1:0', '--ui', '127.0.0.1:8090'], {})).toThrow(/needs --db/);
    expect(parseLogsArgs(['--listen', 'tcp:127.0.0.1:0', '--db', 'x.db', '--ui', '0.0.0.0:8090'], { ENCLAVE_AGENT_UI_TOKEN: 'a-long-enough-token' }).ui).toEqual({ host: '0.0.0.0', port: 8090, token: 'a-long-enough-token' });

    const token = 'correct-horse-battery-staple';
    const srv = await startActivityServer({ ...base, host: '127.0.0.1', token });
    cleanup.push(() => srv.close());
    // The shell and the script are public (they hold nothing); every API call is not.
    expect((await fetch(srv.url)).status).toBe(200);
    for (const p of ['api/status', 'api/records', 'api/records/1', 'api/traffic', 'api/enclave', 'api/ops', 'api/live']) expect((await fetch(srv.url + p)).status, p).toBe(401);
    const login = (t: string) => fetch(`${srv.url}api/login`, { method: 'POST', body: JSON.stringify({ token: t }), headers: { 'content-type': 'application/json' } });
    expect((await login('correct-horse-battery-stapl')).status).toBe(401);
    expect((await login(`${token}x`)).status).toBe(401);
    const ok = await login(token);
    expect(ok.status).toBe(200);
    const cookie = ok.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toContain(token);
    const session = cookie.split(';')[0]!;
    const status = await fetch(`${srv.url}api/status`, { headers: { cookie: session } });
    expect(status.status).toBe(200);
    expect(((await status.json()) as { token: boolean }).token).toBe(true);
    expect((await fetch(`${srv.url}api/status`, { headers: { cookie: 'ea_activity=forged' } })).status).toBe(401);
  });

  it('answers 503 with Retry-After while the reader is at its query cap, logged as a count', async () => {
    const { store, reader } = await storeAndReader();
    const busy = (): Promise<never> => Promise.reject(new ActivityReaderError('ACTIVITY_READER_BUSY', 'the activity reader has 64 queries waiting; try again'));
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    const srv = await startActivityServer({
      host: '127.0.0.1', port: 0, store, reader: { ...reader, list: busy, traffic: busy }, live: createLiveTail(), logger: pino({ level: 'info' }, sink),
      enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }),
    });
    cleanup.push(() => srv.close());
    for (const p of ['api/records', 'api/traffic']) {
      const r = await fetch(srv.url + p);
      expect(r.status, p).toBe(503);
      expect(r.headers.get('retry-after')).toBe('1');
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe('ACTIVITY_READER_BUSY');
    }
    await srv.close();
    expect(lines.filter((l) => l.level === 50)).toEqual([]);
    expect(lines.filter((l) => l.msg === 'activity queries refused')).toEqual([expect.objectContaining({ total: 2, counts: { 'reader-busy': 2 } })]);
  });

  it('cuts a request whose body trickles in (no session needed for /api/login), never the live tail\'s long answer', async () => {
    const { store, reader } = await storeAndReader();
    const live = createLiveTail();
    store.onInserted((rows) => live.publish(rows));
    const srv = await startActivityServer({
      host: '127.0.0.1', port: 0, store, reader, live, requestTimeoutMs: 300, token: 'correct-horse-battery-staple',
      enclave: () => ({ name: null, mode: null, pcrs: null, pcrsSource: null, startedAt: null, restarts: null }),
    });
    cleanup.push(() => srv.close());
    const login = await fetch(`${srv.url}api/login`, { method: 'POST', body: JSON.stringify({ token: 'correct-horse-battery-staple' }) });
    const tail = await fetch(`${srv.url}api/live`, { headers: { cookie: login.headers.get('set-cookie')!.split(';')[0]! } });
    expect(tail.status).toBe(200);
    const events = tail.body!.getReader();
    // A login whose body never completes: one byte of the 100 announced.
    const slow = net.connect(srv.port, '127.0.0.1');
    slow.on('error', () => {});
    let answer = '';
    slow.on('data', (b: Buffer) => (answer += b.toString('latin1')));
    slow.write('POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{');
    await new Promise<void>((resolve) => slow.once('close', () => resolve()));
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
    // The live tail, open all along, still delivers.
    store.addLine(line(7));
    store.flush();
    let text = '';
    while (!text.includes('req-7')) text += new TextDecoder().decode((await events.read()).value);
    await events.cancel();
  });

  it('pages with the cursor it hands out, also past records stamped before 1970', async () => {
    // Kept 100 years: retention by age does not remove them first.
    const s = await service({ retainDays: 36_500 });
    const at = (i: number, startedAt: number): string =>
      trxLine({ txid: `old-${i}`, startedAt, elapsedMs: 1, sessionId: 's', type: 'HTTP', method: 'GET', url: '/', status: 200, bytesIn: 0, bytesOut: 0, remoteIp: '192.0.2.1', requestHeaders: [], responseHeaders: [], decryptedFields: 0, error: undefined }, mask);
    // An agent whose clock was never set: 1969-12-31T23:59:57Z … 1970-01-01T00:00:01Z.
    for (const [i, t] of [-3000, -2000, -1000, 1000].entries()) s.takeLine(at(i, t).trimEnd());
    s.store.flush();
    const seen: string[] = [];
    let next: string | null = '';
    while (next !== null) {
      const r = await fetch(`${s.url}api/records?limit=1${next === '' ? '' : `&before=${encodeURIComponent(next)}`}`);
      expect(r.status, `before=${next}`).toBe(200);
      const page = (await r.json()) as { records: { txid: string }[]; next: string | null };
      seen.push(...page.records.map((x) => x.txid));
      next = page.next;
    }
    expect(seen).toEqual(['old-3', 'old-2', 'old-1', 'old-0']);
  });

  it('streams stored batches to the live tail (SSE)', async () => {
    const s = await service();
    const res = await fetch(`${s.url}api/live`);
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    s.takeLine(line(1).trimEnd());
    s.takeLine(line(2, 503).trimEnd());
    s.store.flush();
    while (!text.includes('event: records')) text += decoder.decode((await reader.read()).value);
    while (!text.includes('\n\n', text.indexOf('event: records'))) text += decoder.decode((await reader.read()).value);
    await reader.cancel();
    const data = /event: records\ndata: (.*)\n/.exec(text)![1]!;
    const rows = JSON.parse(data) as { txid: string; status: number }[];
    expect(rows.map((r) => [r.txid, r.status])).toEqual([
      ['req-1', 200],
      ['req-2', 503],
    ]);
    expect(data).not.toContain('sid=1');
  });
});

describe('enclave-agent logs --db --ui', () => {
  it('stores the records from the sink socket, serves them, keeps operational lines on stdout and reads the enclave from them', async () => {
    const dir = await tmpDir();
    const db = path.join(dir, 'activity.db');
    const pcrs = path.join(dir, 'pcrs.json');
    await (await import('node:fs/promises')).writeFile(pcrs, JSON.stringify({ PCR0: 'ab'.repeat(48), PCR1: 'cd'.repeat(48) }));
    const errLines: string[] = [];
    const io: CliIo = { out: () => {}, err: (l) => errLines.push(l), stdin: () => Promise.resolve(new Uint8Array()) };
    let out = '';
    const output = new Writable({
      write(chunk: Buffer, _enc, cb) {
        out += chunk.toString();
        cb();
      },
    });
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const done = serveLogs(['--listen', 'tcp:127.0.0.1:0', '--db', db, '--ui', '127.0.0.1:0', '--pcrs', pcrs, '--retain-rows', '1000'], io, () => stopped, { output, logger: pino({ level: 'silent' }) });
    cleanup.push(async () => {
      stop();
      await done.catch(() => {});
    });
    const until = async (cond: () => boolean): Promise<void> => {
      for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
      expect(cond()).toBe(true);
    };
    await until(() => errLines.some((l) => l.includes('activity page on')));
    const sinkPort = Number(/127\.0\.0\.1:(\d+)/.exec(errLines[0]!)![1]);
    const page = /activity page on (\S+)/.exec(errLines.find((l) => l.includes('activity page on'))!)![1]!;
    const sock = net.connect({ host: '127.0.0.1', port: sinkPort });
    await new Promise((r) => sock.once('connect', r));
    sock.write(`{"level":30,"time":${Date.now() - 5000},"msg":"runtime started","mode":"http"}\n`);
    sock.write(line(1) + line(2, 502) + line(3));
    sock.end();
    let list: { records: { txid: string; status: number }[] } = { records: [] };
    await until(() => list.records.length === 3 || (void fetch(`${page}api/records`).then(async (r) => (list = (await r.json()) as typeof list)), false));
    expect(list.records.map((r) => r.txid)).toEqual(['req-3', 'req-2', 'req-1']);
    const five = (await (await fetch(`${page}api/records?status=5xx`)).json()) as typeof list;
    expect(five.records.map((r) => r.txid)).toEqual(['req-2']);
    const enclave = (await (await fetch(`${page}api/enclave`)).json()) as { mode: string; restarts: number; uptimeS: number; pcrs: Record<string, string> };
    expect(enclave).toMatchObject({ mode: 'http', restarts: 0, pcrs: { PCR0: 'ab'.repeat(48), PCR1: 'cd'.repeat(48) } });
    expect(enclave.uptimeS).toBeGreaterThanOrEqual(4);
    const status = (await (await fetch(`${page}api/status`)).json()) as { store: { inserted: number; retainRows: number }; sink: { lines: number } };
    expect(status.store).toMatchObject({ inserted: 3, retainRows: 1000 });
    expect(status.sink.lines).toBe(4);
    // Records went to the database only; the operational line to stdout.
    expect(out).toContain('runtime started');
    expect(out).not.toContain('req-1');
    stop();
    expect(await done).toBe(0);
    expect(errLines.at(-1)).toMatch(/3 records stored, 0 dropped/);
  });
});

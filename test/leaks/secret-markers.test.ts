// Leak check: known secret markers go through every path of the agent — request bodies (Data and streams),
// ev: values decrypted in HTTP mode (JSON body and header), credential and custom header values, query
// values, the local API (/encrypt, /decrypt, /attestation-doc), and on purpose through the error paths
// (undecryptable token → 422, oversized body → 413, malformed request → 400, undecodable frame, app down →
// 502, API 422/413). Then nothing the agent produced may contain a marker or any encoding of its private
// keys: every operational log line (pino at trace level, agent and bridge), every transaction record, every
// error message and error body returned to a client, every file under the state dir but the key file — the
// activity database (the host's store of those records) included — and every answer of the activity page's API.
// Secrets for the app ([secrets] in enclave.toml) go through a real `enclave-agent run`: the app's environment
// gets them; the agent's log (trace level), its transaction records, stderr and state files never do.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { devKeySource, DEV_KEY_FILE, loadKeyring, type Keyring } from '../../src/crypto/keyring.ts';
import { fromHex, toBase64, utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { connectTcp, handshake, tcpPipe, wsPipe, type TestClient } from '../responder/helpers.ts';
import { APP, appSecretsCopy, startRun, until, type RunningAgent } from '../runtime/harness.ts';
import { httpRequest, startAgentStack, waitUntil, type AgentStack } from '../faults/stack.ts';
import { startActivityService } from '../../src/host/activity-service.ts';
import { tamperEv } from '../crypto/ev-forge.ts';
import { startRecordingApp, type RecordingApp } from './recording-app.ts';

const markers = new Map<string, string>();
/** A fresh marker for one path (the name says which path leaked). */
function marker(where: string): string {
  const m = `SECRET-MARKER-${randomBytes(8).toString('hex')}`;
  markers.set(m, where);
  return m;
}

let app: RecordingApp;
let stack: AgentStack;
let keyring: Keyring;
let stateDir: string;
/** Every error message and error body that went back to a client. */
const returnedErrors: string[] = [];
const clients: TestClient[] = [];

beforeAll(async () => {
  app = await startRecordingApp();
  stateDir = mkdtempSync(path.join(os.tmpdir(), 'ea-leaks-'));
  // The same dev key file the runtime then loads: the test knows the keys (to encrypt, and to search for).
  // HTTP mode decrypts with the runtime's default stage (createDecryptStage(keyring)).
  keyring = await loadKeyring(devKeySource(stateDir));
  stack = await startAgentStack({
    appPort: app.port,
    stateDir,
    bridge: true,
    limits: { max_buffered_body_bytes: 2048 },
    extra: { api: { port: 0, max_body_bytes: 1024 }, trusted_headers: ['x-trusted-*'] },
  });
});

afterAll(async () => {
  for (const c of clients) c.close();
  await stack.close();
  await app.close();
  rmSync(stateDir, { recursive: true, force: true });
});

async function client(): Promise<TestClient> {
  const c = await handshake(await wsPipe(stack.bridge!.url));
  clients.push(c);
  c.send({ type: 'RequestAttestation' });
  expect((await c.next()).message.type).toBe('Attestation');
  return c;
}

let nextId = 1;
/** Sends one Data request; returns status and body; records error bodies and Error messages. */
async function data(c: TestClient, payload: Uint8Array | string): Promise<{ status: number; body: string }> {
  const id = nextId++;
  c.send({ type: 'Data', id, payload: typeof payload === 'string' ? utf8.encode(payload) : payload });
  const got = await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, 15_000);
  const m = got.at(-1)!.message as Extract<ServerMessage, { type: 'Data' | 'Error' }>;
  if (m.type === 'Error') {
    returnedErrors.push(m.message);
    return { status: 0, body: m.message };
  }
  const text = utf8.decode(m.payload);
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  if (status >= 400) returnedErrors.push(text);
  return { status, body };
}

async function api(pathname: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  const res = await fetch(`http://127.0.0.1:${stack.runtime.apiPort!}${pathname}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const text = res.status === 200 && pathname === '/attestation-doc' ? '' : await res.text();
  if (res.status >= 400) returnedErrors.push(text);
  return { status: res.status, text };
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

describe('secret markers never reach logs, error messages or files', () => {
  it('pushes markers through every path (success and failure), then finds none of them, nor the private keys, in anything the agent wrote', async () => {
    const pub = keyring.publicKeys();
    const c = await client();

    // 1. Data: body, credential headers, a custom header, a trusted header, query values.
    const m = { body: marker('Data body'), auth: marker('authorization'), cookie: marker('cookie'), custom: marker('custom header'), query: marker('query value') };
    const r1 = await data(c, httpRequest('POST', `/echo?token=${m.query}&x=1`, JSON.stringify({ note: m.body }), {
      authorization: `Bearer ${m.auth}`,
      cookie: `sid=${m.cookie}`,
      'x-custom-secret': m.custom,
      'content-type': 'application/json',
    }));
    expect(r1).toMatchObject({ status: 200, body: JSON.stringify({ note: m.body }) });

    // 2. ev: values: a JSON string and a number in the body, a token in a header; the app gets plaintext.
    const evBody = marker('ev: body plaintext');
    const evHeader = marker('ev: header plaintext');
    const body2 = JSON.stringify({ card: encryptValue(evBody, pub), n: encryptValue(4242, pub), plain: 'x' });
    const r2 = await data(c, httpRequest('POST', '/pay', body2, { 'content-type': 'application/json', 'x-api-token': encryptValue(evHeader, pub) }));
    expect(r2.status).toBe(200);
    expect(JSON.parse(r2.body)).toEqual({ card: evBody, n: 4242, plain: 'x' });
    expect(app.received.at(-1)).toContain(evHeader);

    // 3. A stream: the request head and part of the body in OpenStream, the rest in StreamData.
    const s1 = marker('stream first bytes');
    const s2 = marker('stream data');
    const streamBody = JSON.stringify({ a: s1, b: s2 });
    const cut = streamBody.indexOf(s2);
    c.send({ type: 'OpenStream', id: 500, payload: utf8.encode(`POST /echo HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nContent-Length: ${streamBody.length}\r\nConnection: close\r\n\r\n${streamBody.slice(0, cut)}`) });
    c.send({ type: 'StreamData', id: 500, payload: utf8.encode(streamBody.slice(cut)) });
    const streamed = await c.until((x) => x.type === 'StreamClose' && x.id === 500, 10_000);
    const streamText = streamed.map((x) => (x.message.type === 'StreamData' ? utf8.decode(x.message.payload) : '')).join('');
    expect(streamText).toContain(s2);

    // 4. Error paths.
    const bad = marker('body next to an undecryptable token');
    const r4 = await data(c, httpRequest('POST', '/pay', JSON.stringify({ secret: bad, card: tamperEv(encryptValue(marker('tampered plaintext'), pub)) }), { 'content-type': 'application/json', authorization: `Bearer ${marker('authorization on 422')}` }));
    expect(r4.status).toBe(422);
    const big = marker('oversized body');
    const r5 = await data(c, httpRequest('POST', '/pay', JSON.stringify({ pad: 'x'.repeat(4000), big, t: encryptValue('y', pub) }), { 'content-type': 'application/json' }));
    expect(r5.status).toBe(413);
    const r6 = await data(c, `GET /echo?q=${marker('query of malformed request')} HTTP/1.1\r\nHost: app\r\nBroken header ${marker('malformed header line')}\r\n\r\n`);
    expect(r6.status).toBe(400);

    // An undecodable frame carrying a marker ends its session without a reply.
    const doomed = await client();
    doomed.sendPlaintext(utf8.encode(`not CBOR ${marker('undecodable frame plaintext')}`));
    await waitUntil(() => doomed.isClosed, 5_000, 'the session with the undecodable frame to close');

    // 5. The local API.
    const apiSecret = marker('API /encrypt body');
    const enc = await api('/encrypt', JSON.stringify({ ssn: apiSecret, n: 7 }), { 'x-evervault-data-role': 'leak-test' });
    expect(enc.status).toBe(200);
    expect(enc.text).not.toContain(apiSecret);
    const dec = await api('/decrypt', enc.text);
    expect(JSON.parse(dec.text)).toEqual({ ssn: apiSecret, n: 7 });
    const apiBad = await api('/decrypt', JSON.stringify({ other: marker('API body next to a bad token'), t: tamperEv(encryptValue(marker('API tampered plaintext'), pub)) }));
    expect(apiBad.status).toBe(422);
    const apiBig = await api('/encrypt', JSON.stringify({ pad: 'x'.repeat(2000), s: marker('API oversized body') }));
    expect(apiBig.status).toBe(413);
    const apiJunk = await api('/decrypt', `{"unterminated": "${marker('API malformed JSON')}`);
    expect(apiJunk.status).toBe(400);
    const doc = await api('/attestation-doc', JSON.stringify({ challenge: toBase64(utf8.encode(marker('attestation challenge'))) }));
    expect(doc.status).toBe(200);

    // 6. App down: 502 for a request full of markers.
    await app.close();
    const r7 = await data(c, httpRequest('POST', '/echo', JSON.stringify({ s: marker('body while the app is down') }), { authorization: `Bearer ${marker('authorization on 502')}`, cookie: `k=${marker('cookie on 502')}` }));
    expect(r7.status).toBe(502);
    c.close();
    await waitUntil(() => stack.runtime.sessionCount() === 0, 5_000, 'the sessions to close');
    await new Promise((r) => setTimeout(r, 100)); // trx records are written after the response

    // The host's activity store gets the same records (as `enclave-agent logs --db` would), into the state
    // dir so the file search below covers the database; every answer of the page's API is searched too.
    const activity = await startActivityService({ file: path.join(stateDir, 'activity.db'), ui: { host: '127.0.0.1', port: 0 } });
    const apiAnswers: string[] = [];
    try {
      const sink = activity.sink();
      for (const r of stack.trx.records) sink.write(r);
      await sink.close();
      const get = async (p: string): Promise<string> => {
        const text = await (await fetch(activity.url! + p)).text();
        apiAnswers.push(text);
        return text;
      };
      const list = JSON.parse(await get('api/records?limit=200')) as { records: { id: number }[] };
      expect(list.records.length).toBe(stack.trx.records.length);
      for (const r of list.records) await get(`api/records/${r.id}`);
      await get(`api/traffic?from=${Date.now() - 3_600_000}&to=${Date.now() + 1000}`);
      for (const p of ['api/status', 'api/enclave', 'api/ops', 'api/records?path=%2Fecho', 'api/records?status=5xx']) await get(p);
    } finally {
      await activity.close();
    }
    expect(apiAnswers.join('\n')).toContain('x-custom-secret');

    // ---- search
    const keys = JSON.parse(readFileSync(path.join(stateDir, DEV_KEY_FILE), 'utf8')) as { p256: string; secp256k1: string };
    const keyEncodings = new Map<string, string>();
    for (const curve of ['p256', 'secp256k1'] as const) {
      const raw = fromHex(keys[curve]);
      keyEncodings.set(keys[curve], `${curve} private key (hex)`);
      keyEncodings.set(keys[curve].toUpperCase(), `${curve} private key (HEX)`);
      const b64 = toBase64(raw);
      keyEncodings.set(b64.replace(/=+$/, ''), `${curve} private key (base64)`);
      keyEncodings.set(b64.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_'), `${curve} private key (base64url)`);
    }
    const sources = new Map<string, string>([
      ['agent log', stack.log.text()],
      ['bridge log', stack.bridgeLog.text()],
      ['transaction records', stack.trx.records.map((r) => JSON.stringify(r)).join('\n')],
      ['errors returned to clients', returnedErrors.join('\n')],
      ['activity page API answers', apiAnswers.join('\n')],
    ]);
    for (const f of filesUnder(stateDir)) {
      if (path.basename(f) === DEV_KEY_FILE) continue;
      sources.set(`file ${path.relative(stateDir, f)}`, readFileSync(f).toString('latin1'));
    }
    // Not vacuous: there is something to search in each place.
    expect(stack.trx.records.length).toBeGreaterThanOrEqual(6);
    expect(stack.log.text()).toContain('session closed');
    expect(returnedErrors.length).toBeGreaterThanOrEqual(7);
    expect([...sources.keys()].some((k) => k.startsWith('file '))).toBe(true);
    expect(sources.get('file activity.db')).toContain('x-custom-secret');

    const found: string[] = [];
    for (const [where, text] of sources) {
      for (const [m2, what] of markers) if (text.includes(m2)) found.push(`${what} found in ${where}`);
      for (const [enc2, what] of keyEncodings) if (text.includes(enc2)) found.push(`${what} found in ${where}`);
      if (/SECRET-MARKER-/.test(text) && !found.some((f) => f.endsWith(where))) found.push(`a marker prefix found in ${where}`);
    }
    expect(found).toEqual([]);
    // The masking is what kept headers out: the record shows the header, not its value.
    const pay = stack.trx.records.find((r) => JSON.stringify(r).includes('x-custom-secret'));
    expect(JSON.stringify(pay)).toContain('***');
  }, 60_000);
});

describe('secret markers given to the app through [secrets] (enclave-agent run)', () => {
  let runDir: string | undefined;
  let agent: RunningAgent | undefined;
  afterAll(async () => {
    await agent?.dispose();
    if (agent) rmSync(agent.dir, { recursive: true, force: true });
    if (runDir) rmSync(runDir, { recursive: true, force: true });
  });

  it("pass to the app's environment, and appear in none of the agent's logs, records, stderr or state files", async () => {
    runDir = mkdtempSync(path.join(os.tmpdir(), 'ea-leaks-run-'));
    const state = path.join(runDir, 'state');
    const pub = (await loadKeyring(devKeySource(state))).publicKeys(); // the keys run then opens
    const s1 = marker('[secrets] string value (P-256)');
    const s2 = marker('[secrets] value with a role (secp256k1)');
    const toml = `[log]\nlevel = "trace"\n[secrets]\nLEAK_SECRET = "${encryptValue(s1, pub)}"\nLEAK_SECRET_ROLE = "${encryptValue(s2, pub, { curve: 'secp256k1', role: 'leak-test' })}"\n`;
    agent = await startRun({
      toml,
      args: ['--listen', 'tcp:0,0', '--nsm', 'simulator', '--state-dir', state, '--loopback', 'off'],
      command: ['sh', '-c', 'printf "%s\\n%s" "$LEAK_SECRET" "$LEAK_SECRET_ROLE" > "$APP_EVENTS.secret"; exec "$0" "$1"', process.execPath, APP],
    });
    const healthy = await agent.waitForLog('agent healthy');
    expect(agent.lines.find((l) => l.msg === 'secrets decrypted for the app')).toMatchObject({ secrets: ['LEAK_SECRET', 'LEAK_SECRET_ROLE'] });
    const got = await appSecretsCopy(agent);
    expect(got).toBe(`${s1}\n${s2}`);
    const environ = readFileSync(`/proc/${agent.pid}/environ`, 'latin1');

    // One request through the agent, so there is a transaction record to search.
    const c = await handshake(tcpPipe(await connectTcp(healthy.publicPort as number)));
    c.send({ type: 'Data', id: 1, payload: httpRequest('GET', '/', '', {}) });
    const reply = await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === 1, 15_000);
    expect(reply.at(-1)!.message.type).toBe('Data');
    c.close();
    await until(() => (agent!.lines.some((l) => l.type === 'HTTP') ? true : undefined), 10_000, 'the transaction record');
    agent.kill('SIGTERM');
    await agent.exited;

    const sources = new Map<string, string>([
      ['run log lines (stdout, trace level, trx records included)', agent.lines.map((l) => JSON.stringify(l)).join('\n')],
      ['run stderr', agent.stderr()],
      ["the agent's own environment", environ],
    ]);
    for (const f of filesUnder(state)) {
      if (path.basename(f) === DEV_KEY_FILE) continue;
      sources.set(`file ${path.relative(state, f)}`, readFileSync(f).toString('latin1'));
    }
    expect([...sources.keys()].some((k) => k.startsWith('file '))).toBe(true);
    expect(sources.get('run log lines (stdout, trace level, trx records included)')).toContain('"type":"HTTP"');
    const found: string[] = [];
    for (const [where, text] of sources) for (const m2 of [s1, s2]) if (text.includes(m2)) found.push(`${markers.get(m2)} found in ${where}`);
    expect(found).toEqual([]);
  }, 90_000);
});

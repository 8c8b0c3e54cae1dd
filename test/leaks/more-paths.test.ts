// Leak check, the paths secret-markers.test.ts does not cover: known secret markers go through
//   - TLS ingress (tls_termination = true, workers = 1 and 2): request bodies, custom and credential headers,
//     query values and ev: values over HTTPS, success and failure (422 tampered token, 413 oversized body,
//     400 malformed request, 431/400 from Node's parser, 502 app drops the connection, a client that disconnects
//     mid-body, an Upgrade), one-shot and pipelined keep-alive (fast path, then the http.Server hand-over);
//   - API-key auth ([api_key_auth] keys as SHA-256 hashes): a marker as a wrong key, as the right key, and in a
//     differently-cased header, as an api_key alias and a second api-key header, over TLS and over the Noise
//     session (HTTP mode: Data requests and a stream);
//   - the credentials channel (bridge startCredentialsServer ⇄ agent bridgeCredentialProvider) at trace level:
//     served, refreshed, the chain failing, expired credentials, malformed answers and requests;
//   - the egress explicit proxy with the host dialer: absolute-form http:// requests (body, headers, query),
//     bytes inside a CONNECT tunnel, allowed and denied, and malformed heads, URLs and CONNECT targets;
// then none of them (nor the API key, nor any encoding of the agent's private keys) may appear in any
// operational log line (pino at trace level: agent main thread with the session threads' lines forwarded,
// credentials server, egress service, host dialer), transaction record (HTTP and egress), error message or
// error body returned to a client, the ops port's /metrics and /health answers, or anything the process (session
// threads included) printed to stdout/stderr outside the loggers.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNsmSimulator } from '../../src/attestation/simulator.ts';
import { configFromObject } from '../../src/config.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { devKeySource, DEV_KEY_FILE, loadKeyring } from '../../src/crypto/keyring.ts';
import { startEgress, type EgressService } from '../../src/egress/service.ts';
import type { EgressDecision } from '../../src/egress/decision-log.ts';
import { startCredentialsServer } from '../../src/host/credentials-server.ts';
import type { AwsCredentials } from '../../src/host/credentials-protocol.ts';
import { encodeFrame } from '../../src/host/credentials-protocol.ts';
import { startEgressDialer, type EgressDialer } from '../../src/host/egress-dialer.ts';
import { createMemoryLogSink, type MemoryLogSink } from '../../src/http/log-sink.ts';
import { apiKeyHash } from '../../src/http/stages/api-key.ts';
import { bridgeCredentialProvider } from '../../src/runtime/credentials-provider.ts';
import { startAgentRuntime, type AgentRuntime } from '../../src/runtime/agent.ts';
import { connectStream } from '../../src/transport/connect.ts';
import { fromHex, toBase64, utf8 } from '../../src/util/bytes.ts';
import type { ServerMessage } from '../../src/wire/messages.ts';
import { tamperEv } from '../crypto/ev-forge.ts';
import { startExchangeServer, startHttpServer, startTestDns, type ExchangeServer, type HttpServer, type TestDns } from '../egress/helpers.ts';
import { httpRequest, memoryLog, statusOf, waitUntil, type MemoryLog } from '../faults/stack.ts';
import { connectTcp, handshake, tcpPipe, type TestClient } from '../responder/helpers.ts';
import { startRecordingApp } from './recording-app.ts';

const markers = new Map<string, string>();
/** A fresh marker for one path (the name says which path leaked). */
function marker(where: string): string {
  const m = `SECRET-MARKER-${randomBytes(8).toString('hex')}`;
  markers.set(m, where);
  return m;
}

/** Every place searched at the end: name → text. */
const sources = new Map<string, string>();
/** Private-key encodings (hex, HEX, base64, base64url) of every agent state dir used. */
const keyEncodings = new Map<string, string>();

function addKeyEncodings(stateDir: string, label: string): void {
  const keys = JSON.parse(readFileSync(path.join(stateDir, DEV_KEY_FILE), 'utf8')) as { p256: string; secp256k1: string };
  for (const curve of ['p256', 'secp256k1'] as const) {
    const b64 = toBase64(fromHex(keys[curve])).replace(/=+$/, '');
    keyEncodings.set(keys[curve], `${label} ${curve} private key (hex)`);
    keyEncodings.set(keys[curve].toUpperCase(), `${label} ${curve} private key (HEX)`);
    keyEncodings.set(b64, `${label} ${curve} private key (base64)`);
    keyEncodings.set(b64.replace(/\+/g, '-').replace(/\//g, '_'), `${label} ${curve} private key (base64url)`);
  }
}

/** What was found where: "<path> found in <place>". */
function leaks(places: Map<string, string>): string[] {
  const found: string[] = [];
  for (const [where, text] of places) {
    for (const [m, what] of markers) if (text.includes(m)) found.push(`${what} found in ${where}`);
    for (const [enc, what] of keyEncodings) if (text.includes(enc)) found.push(`${what} found in ${where}`);
    if (/SECRET-MARKER-/.test(text) && !found.some((f) => f.endsWith(where))) found.push(`a marker prefix found in ${where}`);
  }
  return found;
}

/** An error as everything a log or a caller could print of it: message, code, stack, causes. */
function errorText(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    if (e instanceof Error) {
      parts.push(String(e), e.stack ?? '', JSON.stringify(e), String((e as { code?: unknown }).code));
      e = e.cause;
    } else {
      parts.push(String(e));
      break;
    }
  }
  return parts.join('\n');
}

const closers: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c();
});

// ---------------------------------------------------------------------------------------------------------------
// 1, 2. TLS ingress and API-key auth (TLS and Noise HTTP mode), workers = 1 and 2

/** The app: echoes the body (200); /die drops the connection (the agent answers 502). */
async function startApp(): Promise<{ port: number; received: string[] }> {
  const app = await startRecordingApp({ dropPrefix: '/die' });
  closers.push(() => app.close());
  return app;
}

interface AgentUnderTest {
  runtime: AgentRuntime;
  log: MemoryLog;
  trx: MemoryLogSink;
  stateDir: string;
}

async function startAgent(appPort: number, workers: number, apiKey: string): Promise<AgentUnderTest> {
  const stateDir = mkdtempSync(path.join(os.tmpdir(), 'ea-leaks-tls-'));
  closers.push(() => rmSync(stateDir, { recursive: true, force: true }));
  await loadKeyring(devKeySource(stateDir)); // the dev keys the runtime then opens (the test encrypts with them)
  const sim = await createNsmSimulator({ stateDir: path.join(stateDir, 'nsm'), identity: { agentVersion: 'test', app: 'leaks', config: '' } });
  const log = memoryLog('trace');
  const trx = createMemoryLogSink();
  const config = configFromObject({
    mode: 'http',
    tls_termination: true,
    app: { port: appPort, startup_grace_ms: 0 },
    api: { enabled: false },
    limits: { workers, max_buffered_body_bytes: 2048 },
    api_key_auth: { keys: [apiKeyHash(apiKey)] },
  });
  const runtime = await startAgentRuntime({
    config,
    listen: { kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0 },
    nsm: sim,
    stateDir,
    logger: log.logger,
    trxSink: trx,
    processMetrics: false,
  });
  closers.push(() => runtime.close());
  addKeyEncodings(stateDir, `workers=${workers}`);
  return { runtime, log, trx, stateDir };
}

/**
 * One HTTPS exchange on a fresh connection: writes `parts` (a pause between them), reads until the agent closes.
 * `abort` destroys the connection after the last part instead (a client gone mid-body).
 */
function tlsExchange(port: number, parts: (string | Uint8Array)[], abort = false): Promise<string> {
  return new Promise((resolve) => {
    const t = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false });
    const chunks: Buffer[] = [];
    t.setTimeout(15_000, () => t.destroy());
    t.on('error', () => {});
    t.on('data', (c: Buffer) => chunks.push(c));
    t.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    t.once('secureConnect', () => {
      void (async () => {
        for (const p of parts) {
          t.write(p);
          await new Promise((r) => setTimeout(r, 20));
        }
        if (abort) t.destroy();
      })();
    });
  });
}

async function noiseData(c: TestClient, id: number, payload: Uint8Array, errors: string[]): Promise<number> {
  c.send({ type: 'Data', id, payload });
  const got = await c.until((m) => (m.type === 'Data' || m.type === 'Error') && m.id === id, 15_000);
  const m = got.at(-1)!.message as Extract<ServerMessage, { type: 'Data' | 'Error' }>;
  if (m.type === 'Error') {
    errors.push(m.message);
    return 0;
  }
  const text = utf8.decode(m.payload);
  const status = statusOf(text);
  if (status >= 400) errors.push(text);
  return status;
}

let app: Awaited<ReturnType<typeof startApp>>;
/** The last agent started, kept open for the ops check after every other path. */
let lastAgent: AgentUnderTest | undefined;

/** Whatever this process (session threads included) printed outside the loggers: console, warnings, stack traces. */
const printed: string[] = [];
beforeAll(async () => {
  for (const stream of [process.stdout, process.stderr]) {
    const write = stream.write.bind(stream);
    stream.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      printed.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      return write(chunk, ...rest);
    }) as typeof stream.write;
    closers.push(() => void (stream.write = write));
  }
  app = await startApp();
});

describe.sequential('secret markers on the paths beyond Noise', () => {
  it.each([1, 2])('TLS ingress and API-key auth (workers = %i): markers in bodies, headers, queries, ev: values and keys reach no log, record or error', async (workers) => {
    const key = marker(`API key (right, workers=${workers})`);
    const a = await startAgent(app.port, workers, key);
    lastAgent = a;
    const pub = (await loadKeyring(devKeySource(a.stateDir))).publicKeys();
    const port = a.runtime.tlsPort!;
    const errors: string[] = [];
    const https = async (parts: (string | Uint8Array)[], abort = false): Promise<number> => {
      const text = await tlsExchange(port, parts, abort);
      if (abort) return 0;
      const status = statusOf(text);
      if (status >= 400) errors.push(text);
      return status;
    };
    const w = `workers=${workers}`;

    // Success: body, credential and custom headers, query values; the app gets them.
    const m1 = { body: marker(`TLS body ${w}`), auth: marker(`TLS authorization ${w}`), cookie: marker(`TLS cookie ${w}`), custom: marker(`TLS custom header ${w}`), query: marker(`TLS query value ${w}`) };
    expect(await https([httpRequest('POST', `/echo?token=${m1.query}&x=1`, JSON.stringify({ note: m1.body }), { 'api-key': key, authorization: `Bearer ${m1.auth}`, cookie: `sid=${m1.cookie}`, 'x-custom-secret': m1.custom, 'content-type': 'application/json' })])).toBe(200);
    expect(app.received.at(-1)).toContain(m1.custom);
    expect(app.received.at(-1)).not.toContain(key); // the api-key header is removed before forwarding

    // ev: values decrypted in the body and a header.
    const evBody = marker(`TLS ev: body plaintext ${w}`);
    const evHeader = marker(`TLS ev: header plaintext ${w}`);
    expect(await https([httpRequest('POST', '/pay', JSON.stringify({ card: encryptValue(evBody, pub), n: encryptValue(7, pub) }), { 'api-key': key, 'content-type': 'application/json', 'x-api-token': encryptValue(evHeader, pub) })])).toBe(200);
    expect(app.received.at(-1)).toContain(evBody);
    expect(app.received.at(-1)).toContain(evHeader);

    // Failure paths: 422 (tampered token), 413 (oversized body with a token), 400 (malformed), 502 (app drops).
    expect(await https([httpRequest('POST', '/pay', JSON.stringify({ s: marker(`TLS body next to a bad token ${w}`), card: tamperEv(encryptValue(marker(`TLS tampered plaintext ${w}`), pub)) }), { 'api-key': key, 'content-type': 'application/json', authorization: `Bearer ${marker(`TLS authorization on 422 ${w}`)}` })])).toBe(422);
    expect(await https([httpRequest('POST', '/pay', JSON.stringify({ pad: 'x'.repeat(4000), big: marker(`TLS oversized body ${w}`), t: encryptValue('y', pub) }), { 'api-key': key, 'content-type': 'application/json' })])).toBe(413);
    expect(await https([`GET /echo?q=${marker(`TLS query of malformed request ${w}`)} HTTP/1.1\r\nHost: app\r\napi-key: ${key}\r\nBroken header ${marker(`TLS malformed header line ${w}`)}\r\n\r\n`])).toBe(400);
    expect(await https([httpRequest('POST', `/die?t=${marker(`TLS query on 502 ${w}`)}`, JSON.stringify({ s: marker(`TLS body on 502 ${w}`) }), { 'api-key': key, cookie: `k=${marker(`TLS cookie on 502 ${w}`)}` })])).toBe(502);
    // A client gone mid-body (the head promised 1500 bytes, 700 came).
    const partial = JSON.stringify({ s: marker(`TLS body cut mid-way ${w}`) }).padEnd(700, ' ');
    await https([`POST /echo?t=${marker(`TLS query cut mid-body ${w}`)} HTTP/1.1\r\nHost: app\r\napi-key: ${key}\r\ncontent-type: application/json\r\nx-custom-secret: ${marker(`TLS header cut mid-body ${w}`)}\r\nContent-Length: 1500\r\n\r\n`, partial], true);

    // Malformed in ways Node's parser catches (the clientError path): a header too large (431), a control
    // character in a header value, a bad chunk size with a body after it; and an Upgrade the app does not take.
    expect(await https([httpRequest('GET', '/big', '', { 'api-key': key, 'x-huge': `${marker(`TLS header too large ${w}`)}${'h'.repeat(20_000)}` })])).toBe(431);
    expect(await https([`GET /ctl?q=${marker(`TLS query next to a control character ${w}`)} HTTP/1.1\r\nHost: app\r\napi-key: ${key}\r\nx-ctl: a\u0001${marker(`TLS header with a control character ${w}`)}\r\n\r\n`])).toBe(400);
    expect(await https([`POST /chunk HTTP/1.1\r\nHost: app\r\napi-key: ${key}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${marker(`TLS body after a bad chunk size ${w}`)}\r\n0\r\n\r\n`])).toBe(400);
    const upgraded = await https([`GET /ws?t=${marker(`TLS query of an Upgrade ${w}`)} HTTP/1.1\r\nHost: app\r\napi-key: ${key}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nx-custom-secret: ${marker(`TLS header of an Upgrade ${w}`)}\r\n\r\n`]);
    expect(upgraded).toBeGreaterThanOrEqual(100);
    // An ev: value in a query string.
    expect(await https([httpRequest('GET', `/q?card=${encodeURIComponent(encryptValue(marker(`TLS ev: query plaintext ${w}`), pub))}`, '', { 'api-key': key })])).toBe(200);

    // Keep-alive: pipelined requests on one connection (the fast path), then a chunked body and an
    // Expect: 100-continue (handed over to the http.Server mid-connection), the last one closing.
    const ka = (method: string, target: string, body: string, headers: Record<string, string>): string =>
      `${method} ${target} HTTP/1.1\r\nHost: app\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}${body === '' ? '' : `Content-Length: ${Buffer.byteLength(body)}\r\n`}\r\n${body}`;
    const chunk = JSON.stringify({ s: marker(`TLS chunked body (keep-alive) ${w}`) });
    const kaText = await tlsExchange(port, [
      ka('POST', `/ka1?t=${marker(`TLS keep-alive query ${w}`)}`, JSON.stringify({ s: marker(`TLS keep-alive body ${w}`) }), { 'api-key': key, 'content-type': 'application/json', 'x-custom-secret': marker(`TLS keep-alive header ${w}`) }) +
        ka('GET', '/ka2', '', { 'api-key': marker(`TLS keep-alive wrong API key ${w}`) }) +
        ka('POST', '/ka3', JSON.stringify({ card: tamperEv(encryptValue(marker(`TLS keep-alive tampered plaintext ${w}`), pub)) }), { 'api-key': key, 'content-type': 'application/json' }),
      `POST /ka4 HTTP/1.1\r\nHost: app\r\napi-key: ${key}\r\ncontent-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n${chunk}\r\n0\r\n\r\n`,
      ka('POST', '/ka5', JSON.stringify({ s: marker(`TLS body after Expect: 100-continue ${w}`) }), { 'api-key': key, 'content-type': 'application/json', expect: '100-continue', connection: 'close' }),
    ]);
    const kaStatuses = [...kaText.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((x) => Number(x[1])).filter((st) => st !== 100);
    expect(kaStatuses.slice(0, 3)).toEqual([200, 401, 422]);
    for (const answer of kaText.split(/(?=HTTP\/1\.1 \d{3} )/)) if (statusOf(answer) >= 400) errors.push(answer); // 200s echo the bodies
    expect(app.received.some((r) => r.startsWith('POST /ka4'))).toBe(true);

    // API-key auth over TLS: a marker as a wrong key (lower- and mixed-case header), the right key mixed-case.
    expect(await https([httpRequest('GET', '/k1', '', { 'api-key': marker(`TLS wrong API key ${w}`) })])).toBe(401);
    expect(await https([httpRequest('GET', '/k2', '', { 'API-KEY': marker(`TLS wrong API key, upper-case header ${w}`) })])).toBe(401);
    expect(await https([httpRequest('GET', '/k3', '', { 'Api-Key': key })])).toBe(200);
    expect(await https([httpRequest('GET', '/k5', '', { api_key: marker(`TLS wrong API key, underscore alias ${w}`) })])).toBe(401);
    expect(await https([`GET /k6 HTTP/1.1\r\nHost: app\r\napi-key: ${key}\r\napi-key: ${marker(`TLS second api-key header ${w}`)}\r\nConnection: close\r\n\r\n`])).toBe(401);
    expect(await https([httpRequest('POST', '/k4', JSON.stringify({ s: marker(`TLS body with a missing key ${w}`) }), { 'content-type': 'application/json' })])).toBe(401);

    // API-key auth over the Noise session (HTTP mode): wrong, right, right in another case.
    const c = await handshake(tcpPipe(await connectTcp(a.runtime.publicPort!)));
    expect(await noiseData(c, 1, httpRequest('GET', '/n1', '', { 'api-key': marker(`Noise wrong API key ${w}`) }), errors)).toBe(401);
    expect(await noiseData(c, 2, httpRequest('POST', '/n2', JSON.stringify({ s: marker(`Noise body with the right key ${w}`) }), { 'api-key': key, 'content-type': 'application/json' }), errors)).toBe(200);
    expect(await noiseData(c, 3, httpRequest('GET', '/n3', '', { 'API-Key': key }), errors)).toBe(200);
    expect(await noiseData(c, 4, httpRequest('GET', '/n4', '', { 'Api-KEY': marker(`Noise wrong API key, mixed-case header ${w}`) }), errors)).toBe(401);
    // A stream (OpenStream) with a wrong key.
    c.send({ type: 'OpenStream', id: 100, payload: httpRequest('GET', '/n5', '', { 'api-key': marker(`Noise stream wrong API key ${w}`) }) });
    const streamed = await c.until((x) => x.type === 'StreamClose' && x.id === 100, 10_000);
    const streamText = streamed.map((x) => (x.message.type === 'StreamData' ? utf8.decode(x.message.payload) : '')).join('');
    expect(statusOf(streamText)).toBe(401);
    errors.push(streamText);
    c.close();

    // Records are written after the responses (and, with workers, forwarded from the session threads).
    await waitUntil(() => a.trx.records.length >= 13, 10_000, 'the transaction records');
    await waitUntil(() => a.runtime.sessionCount() === 0, 10_000, 'the sessions to close');
    await new Promise((r) => setTimeout(r, 200));
    const ops = `http://127.0.0.1:${a.runtime.opsPort!}`;
    const metrics = await (await fetch(`${ops}/metrics`)).text();
    const health = await (await fetch(`${ops}/health`)).text();

    const places = new Map<string, string>([
      [`agent log (${w})`, a.log.text()],
      [`transaction records (${w})`, a.trx.records.map((r) => JSON.stringify(r)).join('\n')],
      [`errors returned to clients (${w})`, errors.join('\n')],
      [`ops /metrics (${w})`, metrics],
      [`ops /health (${w})`, health],
    ]);
    for (const [k, v] of places) sources.set(k, v);
    // Not vacuous: each place holds something about these requests.
    const records = a.trx.records.map((r) => JSON.stringify(r)).join('\n');
    for (const p of ['/echo', '/pay', '/k1', '/k3', '/n1', '/n2']) expect(records).toContain(p);
    expect(records).toContain('HTTP_API_KEY_INVALID');
    expect(records).toContain('x-custom-secret');
    expect(errors.length).toBeGreaterThanOrEqual(8);
    expect(metrics).toContain('# HELP');
    if (workers === 2) expect(a.log.text()).toMatch(/"worker":\s*[12]/);
    // If this fails with a path over TLS or the api-key stage, the leak is in src/http/* or src/ingress/*
    // (not owned here): see the report for the place.
    expect(leaks(places)).toEqual([]);
  }, 60_000);

  // -------------------------------------------------------------------------------------------------------------
  // 3. The credentials channel

  it('AWS credentials whose fields are markers: served, refreshed, failing, expired and malformed, both sides at trace level', async () => {
    const hostLog = memoryLog('trace');
    let t = Date.now();
    const now = (): number => t;
    const MIN = 60_000;
    const fresh = (label: string, lifetimeMs: number): AwsCredentials => ({
      accessKeyId: marker(`access key id (${label})`),
      secretAccessKey: marker(`secret access key (${label})`),
      sessionToken: marker(`session token (${label})`),
      expiration: new Date(t + lifetimeMs),
    });
    let next: () => Promise<AwsCredentials> = () => Promise.resolve(fresh('first', 10 * MIN));
    const server = await startCredentialsServer({ listen: { kind: 'tcp', port: 0 }, source: () => next(), logger: hostLog.logger, now });
    closers.push(() => server.close());
    const provider = bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: server.port! }, now, timeoutMs: 5_000 });
    const errors: string[] = [];
    const attempt = async (p: () => Promise<AwsCredentials>): Promise<AwsCredentials | undefined> => {
      try {
        return await p();
      } catch (err) {
        errors.push(errorText(err));
        return undefined;
      }
    };

    const first = await provider();
    expect(first.accessKeyId).toMatch(/^SECRET-MARKER-/);
    // Refreshed: 1 minute left is inside both margins (agent 2, bridge 5).
    next = () => Promise.resolve(fresh('refreshed', 10 * MIN));
    t += 9 * MIN;
    const second = await provider();
    expect(second.accessKeyId).not.toBe(first.accessKeyId);
    expect(markers.get(second.secretAccessKey)).toBe('secret access key (refreshed)');
    // The chain fails with an error quoting a secret: the bridge serves the cached credentials, then none.
    next = () => {
      const e = new Error(`could not load ${marker('chain error message')}`);
      e.name = 'CredentialsProviderError';
      return Promise.reject(e);
    };
    t += 9 * MIN + 30_000; // 30 s left
    expect(await attempt(provider)).toMatchObject({ accessKeyId: second.accessKeyId });
    t += MIN; // expired everywhere
    expect(await attempt(provider)).toBeUndefined();
    // The chain hands out credentials that expired already.
    next = () => Promise.resolve(fresh('expired at the source', -MIN));
    expect(await attempt(provider)).toBeUndefined();
    expect(server.counters.failed).toBeGreaterThanOrEqual(2);

    // A bridge answering malformed or expired frames full of secrets.
    const answers: Buffer[] = [
      Buffer.concat([Buffer.from([0, 0, 0, 40]), Buffer.from(`{not json ${marker('non-JSON answer')}`.padEnd(40, ' '))]),
      encodeFrame({ Status: 'Ok', AccessKeyId: marker('access key id next to a bad secret'), SecretAccessKey: `bad\u0001${marker('non-printable secret access key')}` }),
      encodeFrame({ Status: 'Ok', AccessKeyId: marker('access key id next to a bad token'), SecretAccessKey: marker('secret next to a bad token'), SessionToken: `${marker('session token with a space')} x` }),
      encodeFrame({ Status: 'Ok', AccessKeyId: marker('access key id, bad expiration'), SecretAccessKey: marker('secret, bad expiration'), Expiration: marker('Expiration not a date') }),
      encodeFrame({ AccessKeyId: marker('access key id, no Status'), SecretAccessKey: marker('secret, no Status') }),
      encodeFrame({ Status: 'Ok', AccessKeyId: marker('access key id, expired answer'), SecretAccessKey: marker('secret, expired answer'), SessionToken: marker('token, expired answer'), Expiration: new Date(t - MIN).toISOString() }),
      Buffer.concat([Buffer.from([0, 0x10, 0, 0]), Buffer.from(marker('oversized answer'))]),
    ];
    for (const answer of answers) {
      const fake = net.createServer((s) => {
        s.on('error', () => {});
        s.once('data', () => s.end(answer));
      });
      await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
      const p = bridgeCredentialProvider({ target: { kind: 'tcp', host: '127.0.0.1', port: (fake.address() as AddressInfo).port }, now, timeoutMs: 5_000 });
      expect(await attempt(p)).toBeUndefined();
      await new Promise<void>((r) => fake.close(() => r()));
    }
    // Malformed requests to the real bridge: a non-JSON frame and an unknown operation carrying markers.
    for (const frame of [Buffer.concat([Buffer.from([0, 0, 0, 30]), Buffer.from(`~${marker('non-JSON request')}`.padEnd(30, ' '))]), encodeFrame({ Operation: marker('unknown operation') })]) {
      const s = await connectStream({ kind: 'tcp', host: '127.0.0.1', port: server.port! });
      await new Promise<void>((resolve) => {
        s.on('error', () => {});
        s.on('close', () => resolve());
        s.on('data', () => {});
        s.write(frame);
      });
    }
    expect(server.counters.refused).toBe(2);

    const places = new Map<string, string>([
      ['credentials server log (trace)', hostLog.text()],
      ['credentials errors (agent side)', errors.join('\n')],
    ]);
    for (const [k, v] of places) sources.set(k, v);
    expect(errors.length).toBe(2 + answers.length); // the stale-served attempt succeeds
    expect(hostLog.text()).toContain('credentials served');
    expect(hostLog.text()).toContain('refused');
    expect(leaks(places)).toEqual([]);
  }, 60_000);

  // -------------------------------------------------------------------------------------------------------------
  // 4. The egress explicit proxy

  it('egress explicit proxy: markers in absolute-form requests and CONNECT tunnels, allowed and denied, reach no decision record, log or error', async () => {
    const SERVER_IP = '127.0.0.2';
    const dns: TestDns = await startTestDns({ 'ok.test': [SERVER_IP], 'evil.test': [SERVER_IP] });
    closers.push(() => dns.close());
    const web: HttpServer = await startHttpServer(SERVER_IP);
    closers.push(() => web.close());
    const echo: ExchangeServer = await startExchangeServer(SERVER_IP, (got) => got);
    closers.push(() => echo.close());
    const dialerLog = memoryLog('trace');
    const egressLog = memoryLog('trace');
    const dialer: EgressDialer = await startEgressDialer({ listen: { kind: 'tcp', port: 0 }, resolvers: [{ host: '127.0.0.1', port: dns.port }], allowNonGlobal: [`${SERVER_IP}/32`], logger: dialerLog.logger });
    closers.push(() => dialer.close());
    const config = configFromObject({ egress: { enabled: true, destinations: [`ok.test:${web.port}`, `ok.test:${echo.port}`, `${SERVER_IP}:${web.port}`, `${SERVER_IP}:${echo.port}`] } });
    const decisions: EgressDecision[] = [];
    const records: object[] = [];
    const egress: EgressService = await startEgress({
      egress: config.egress,
      dialer: () => connectStream({ kind: 'tcp', host: '127.0.0.1', port: dialer.port! }),
      proxyPort: 0,
      logger: egressLog.logger,
      onDecision: (d) => decisions.push(d),
      trxSink: { write: (r) => records.push(r), close: async () => {} },
    });
    let egressClosed = false;
    closers.push(async () => {
      if (!egressClosed) await egress.close();
    });
    const proxyPort = Number(new URL(egress.proxyUrl).port);
    const errors: string[] = [];
    /** One exchange with the proxy; the bytes it answered. */
    const exchange = (text: string, after?: string): Promise<string> =>
      new Promise((resolve) => {
        const s = net.connect({ host: '127.0.0.1', port: proxyPort });
        const chunks: Buffer[] = [];
        s.setTimeout(10_000, () => s.destroy());
        s.on('error', () => {});
        s.on('data', (c: Buffer) => {
          chunks.push(c);
          // Inside an established tunnel: send the bytes, then half-close so the echo server answers.
          if (after !== undefined && chunks.length === 1 && c.toString('latin1').startsWith('HTTP/1.1 200')) s.end(after);
        });
        s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
        s.write(text);
        if (after !== undefined && !text.startsWith('CONNECT ok.test')) s.write(after); // pipelined behind a head refused
      });
    const statusLine = (res: string): string => res.split('\r\n')[0]!;
    const keep = (res: string): string => {
      if (!/^HTTP\/1\.1 2/.test(res)) errors.push(res);
      return res;
    };

    // Allowed absolute-form request: query, credential and custom headers, body.
    const allowedBody = marker('egress allowed body');
    const r1 = keep(await exchange(`POST http://ok.test:${web.port}/out?token=${marker('egress allowed query')} HTTP/1.1\r\nhost: ok.test\r\nauthorization: Bearer ${marker('egress allowed authorization')}\r\nproxy-authorization: Basic ${marker('egress proxy-authorization')}\r\nx-secret: ${marker('egress allowed custom header')}\r\ncontent-length: ${allowedBody.length}\r\n\r\n${allowedBody}`));
    expect(statusLine(r1)).toBe('HTTP/1.1 200 OK');
    expect(web.requests.at(-1)!.body).toBe(allowedBody);
    // Denied absolute-form request.
    const deniedBody = marker('egress denied body');
    const r2 = keep(await exchange(`POST http://evil.test:${web.port}/out?token=${marker('egress denied query')} HTTP/1.1\r\nhost: evil.test\r\ncookie: s=${marker('egress denied cookie')}\r\ncontent-length: ${deniedBody.length}\r\n\r\n${deniedBody}`));
    expect(statusLine(r2)).toBe('HTTP/1.1 403 Forbidden');
    // CONNECT allowed: bytes in the tunnel come back from the echo server.
    const tunnelled = marker('bytes inside an allowed CONNECT tunnel');
    const r3 = await exchange(`CONNECT ok.test:${echo.port} HTTP/1.1\r\nhost: ok.test:${echo.port}\r\nproxy-authorization: Basic ${marker('CONNECT proxy-authorization')}\r\n\r\n`, tunnelled);
    expect(statusLine(r3)).toBe('HTTP/1.1 200 Connection Established'.slice(0, statusLine(r3).length));
    expect(r3).toContain(tunnelled);
    // CONNECT denied, with tunnel bytes pipelined behind the head.
    const r4 = keep(await exchange(`CONNECT evil.test:${echo.port} HTTP/1.1\r\nhost: evil.test\r\nproxy-authorization: Basic ${marker('denied CONNECT proxy-authorization')}\r\n\r\n`, marker('bytes behind a denied CONNECT')));
    expect(statusLine(r4)).toBe('HTTP/1.1 403 Forbidden');
    // Malformed heads carrying markers: a bare LF inside a header, a header line without a name, a bad request line.
    const r5 = keep(await exchange(`GET http://ok.test:${web.port}/lf HTTP/1.1\r\nhost: ok.test\r\nx-secret: ${marker('header value before a bare LF')}\nx-b: ${marker('header after a bare LF')}\r\n\r\n`));
    const r6 = keep(await exchange(`GET http://ok.test:${web.port}/nc HTTP/1.1\r\nhost: ok.test\r\nx-secret ${marker('header line without a colon')}\r\n\r\n`));
    const r7 = keep(await exchange(`GET http://ok.test:${web.port}/a?token=${marker('query in a bad request line')} extra HTTP/1.1\r\nhost: ok.test\r\n\r\n`));
    const r8 = keep(await exchange(`POST http://ok.test:${web.port}/te?token=${marker('query with two lengths')} HTTP/1.1\r\nhost: ok.test\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n${marker('body with two lengths')}`));
    const r9 = keep(await exchange(`GET http://ok.test:99999/u?token=${marker('query in a bad URL')} HTTP/1.1\r\nhost: ok.test\r\n\r\n`));
    const r10 = keep(await exchange(`CONNECT user:${marker('password in a CONNECT target')}@ok.test:${echo.port} HTTP/1.1\r\nhost: ok.test\r\n\r\n`));
    const r11 = keep(await exchange(`GET http://user:${marker('password in an absolute-form URL')}@ok.test:${web.port}/ HTTP/1.1\r\nhost: ok.test\r\n\r\n`));
    for (const r of [r5, r6, r7, r8, r9, r10, r11]) expect(statusLine(r)).toBe('HTTP/1.1 400 Bad Request');

    await waitUntil(() => egress.activeFlows() === 0, 10_000, 'the egress flows to end');
    await egress.close(); // writes what the decision log held back
    egressClosed = true;

    const places = new Map<string, string>([
      ['egress decision records (trx type egress)', records.map((r) => JSON.stringify(r)).join('\n')],
      ['egress decisions (onDecision)', JSON.stringify(decisions)],
      ['egress service log (trace)', egressLog.text()],
      ['host dialer log (trace)', dialerLog.text()],
      ['errors returned by the proxy', errors.join('\n')],
    ]);
    for (const [k, v] of places) sources.set(k, v);
    expect(records.some((r) => (r as { allowed?: boolean }).allowed === true)).toBe(true);
    expect(records.some((r) => (r as { allowed?: boolean }).allowed === false)).toBe(true);
    expect(errors.length).toBe(9);
    expect(leaks(places)).toEqual([]);
  }, 60_000);

  // -------------------------------------------------------------------------------------------------------------
  // 5. The ops port after everything, and the whole search once more

  it('the ops port after every path above, and every place searched again for every marker', async () => {
    const a = lastAgent!;
    const ops = `http://127.0.0.1:${a.runtime.opsPort!}`;
    sources.set('ops /metrics (at the end)', await (await fetch(`${ops}/metrics`)).text());
    sources.set('ops /health (at the end)', await (await fetch(`${ops}/health`)).text());
    sources.set("this process's stdout and stderr (outside the loggers)", printed.join(''));
    expect(sources.get('ops /metrics (at the end)')).toContain('# HELP');
    expect(markers.size).toBeGreaterThan(60);
    expect(leaks(sources)).toEqual([]);
  });
});

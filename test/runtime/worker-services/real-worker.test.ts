// The worker-services over a real worker thread (booted with tsx as src/crypto/decrypt-pool.ts boots its
// workers): what the in-thread tests prove over a MessageChannel, across the thread boundary — structured
// clone, the worker's own copies of the error classes, ports closed while a call waits, garbage both ways.
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NsmError } from '../../../src/attestation/errors.ts';
import { createNsmSimulator, type NsmSimulator } from '../../../src/attestation/simulator.ts';
import { verifyAttestation } from '../../../src/attestation/verify.ts';
import { DecryptPool } from '../../../src/crypto/decrypt-pool.ts';
import { encryptValue } from '../../../src/crypto/ev-format.ts';
import { Keyring } from '../../../src/crypto/keyring.ts';
import { createMemoryLogSink } from '../../../src/http/log-sink.ts';
import { AgentMetrics } from '../../../src/ops/metrics.ts';
import type { SessionSummary } from '../../../src/responder/session.ts';
import { serveDecryptPool } from '../../../src/runtime/worker-services/decrypt-proxy.ts';
import { serveWorkerLogs } from '../../../src/runtime/worker-services/log-proxy.ts';
import { serveMetrics, type MetricsServer } from '../../../src/runtime/worker-services/metrics-proxy.ts';
import { serveNsm } from '../../../src/runtime/worker-services/nsm-proxy.ts';
import { logSinkCapabilities, serveLogSink } from '../../../src/runtime/worker-services/trx-proxy.ts';
import { failingValues } from '../../crypto/ev-forge.ts';
import { samples, until } from './helpers.ts';

const stateDir = mkdtempSync(path.join(tmpdir(), 'worker-services-'));
const keyring = Keyring.generate();
const pool = new DecryptPool(keyring, { size: 1 });
const trxSink = createMemoryLogSink();
const logLines: Record<string, unknown>[] = [];
const mainLogger = pino(
  { level: 'info', base: { name: 'enclave-agent' } },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l !== '') logLines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  }),
);
const metrics = new AgentMetrics({ mode: 'http', version: 't', processMetrics: false });
const summaries: SessionSummary[] = [];
let sim: NsmSimulator;
let worker: Worker;
let metricsServer: MetricsServer;
const mainPorts: Record<string, MessagePort> = {};
const servers: { close(): void }[] = [];
/** Per isJsonText call reaching the main thread: whether the bytes came as shared memory (no copy here). */
const checkedOnMain: boolean[] = [];
let nextId = 0;
const replies = new Map<number, (m: { result?: unknown; error?: Record<string, unknown> }) => void>();

/** Runs a command in the worker; resolves with its result or the description of its error. */
function ask(cmd: string, extra: Record<string, unknown> = {}): Promise<{ result?: unknown; error?: Record<string, unknown> }> {
  const id = nextId++;
  return new Promise((resolve) => {
    replies.set(id, resolve);
    worker.postMessage({ id, cmd, ...extra });
  });
}

function boot(workerData: unknown, transferList: MessagePort[]): Worker {
  const self = import.meta.url;
  const api = path.join(path.dirname(createRequire(self).resolve('tsx/esm/api')), 'index.mjs');
  const entry = new URL('./fixtures/worker-side.ts', self).href;
  const code = `import(${JSON.stringify(pathToFileURL(api).href)}).then((t) => { t.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(code, { eval: true, workerData, transferList });
}

beforeAll(async () => {
  sim = await createNsmSimulator({ stateDir, identity: { agentVersion: 'test', app: 'worker-services', config: '' } });
  const workerPorts: Record<string, MessagePort> = {};
  for (const name of ['nsm', 'badNsm', 'silent', 'trx', 'log', 'metrics', 'decrypt']) {
    const { port1, port2 } = new MessageChannel();
    mainPorts[name] = port1;
    workerPorts[name] = port2;
  }
  servers.push(
    serveNsm(mainPorts.nsm!, sim),
    serveNsm(mainPorts.badNsm!, { attest: () => Promise.reject(new NsmError('InvalidArgument', 'NSM replied Error "InvalidArgument" to Attestation request')), random: () => sim.random(1) }),
    serveLogSink(mainPorts.trx!, trxSink),
    serveWorkerLogs(mainPorts.log!, mainLogger),
    serveDecryptPool(mainPorts.decrypt!, {
      decryptJson: (t, m) => pool.decryptJson(t, m),
      isJsonText: async (b, owned) => {
        const valid = await pool.isJsonText(b, owned);
        checkedOnMain.push(b.buffer instanceof SharedArrayBuffer || b.byteLength > 0); // kept here: shared, or not handed on
        return valid;
      },
    }),
  );
  metricsServer = serveMetrics(mainPorts.metrics!, metrics, (s) => summaries.push(s));
  servers.push(metricsServer);
  worker = boot({ ports: workerPorts, trx: logSinkCapabilities(trxSink) }, Object.values(workerPorts));
  await new Promise<void>((resolve, reject) => {
    worker.once('error', reject);
    worker.on('message', (m: { ready?: true; id?: number }) => {
      if (m.ready === true) return resolve();
      const r = replies.get(m.id!);
      replies.delete(m.id!);
      r?.(m as { result?: unknown; error?: Record<string, unknown> });
    });
  });
});

afterAll(async () => {
  for (const s of servers) s.close();
  for (const p of Object.values(mainPorts)) p.close();
  await worker?.terminate();
  await pool.close();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('worker services across a real worker thread', () => {
  it('brings the NSM simulator’s document back byte-exact, and it verifies with the nonce', async () => {
    const nonce = Uint8Array.from({ length: 32 }, (_, i) => i * 3);
    const { result } = await ask('attest', { nonce });
    const doc = result as Uint8Array;
    expect(doc).toBeInstanceOf(Uint8Array);
    const parsed = await verifyAttestation(doc, { roots: [sim.rootPem], nonce });
    expect(parsed.nonce).toEqual(nonce);
  });

  it('brings an NSM failure back as the worker’s own NsmError with its device code', async () => {
    const { error } = await ask('attest-bad', { nonce: new Uint8Array(32) });
    expect(error).toMatchObject({ name: 'NsmError', code: 'NSM_ERROR', nsmCode: 'InvalidArgument', isNsmError: true, isAttestationError: true });
  });

  it('delivers the transaction lines in order and complete once close() resolves in the worker', async () => {
    const { result } = await ask('trx', { n: 95 });
    expect(result).toBe(95);
    expect(trxSink.records.map((r) => r.i)).toEqual(Array.from({ length: 95 }, (_, i) => i));
  });

  it('re-emits a worker’s warn line at warn with its fields', async () => {
    await ask('log');
    await until(() => logLines.length >= 2);
    expect(logLines[0]).toMatchObject({ level: 40, name: 'enclave-agent', worker: 7, session: 'abc123', reason: 'write-stall', nested: { framesIn: 3 }, msg: 'from the worker' });
    expect(logLines[1]).toMatchObject({ level: 30, msg: 'an info line' });
  });

  it('shows exactly the worker’s N exchanges and M sessions after requestFlush, and hands over the summaries in order', async () => {
    const N = 123;
    const M = 17;
    await ask('metrics', { n: N, m: M });
    await metricsServer.requestFlush(30_000);
    const s = samples(await metrics.metrics());
    expect(s.get('enclave_agent_requests_total{mode="http",status_class="2xx"}')).toBe(N);
    expect(s.get('enclave_agent_http_body_bytes_total{direction="in"}')).toBe(N * 10);
    expect(s.get('enclave_agent_http_body_bytes_total{direction="out"}')).toBe(N * 30);
    expect(s.get('enclave_agent_request_duration_seconds_count')).toBe(N);
    expect(s.get('enclave_agent_request_duration_seconds_bucket{le="0.0025"}')).toBe(N);
    expect(s.get('enclave_agent_sessions_total{channel="public",outcome="client-closed"}')).toBe(M);
    expect(s.get('enclave_agent_handshakes_total{result="ok"}')).toBe(M);
    expect(summaries.map((x) => x.id)).toEqual(Array.from({ length: M }, (_, i) => `s${i}`));
  });

  it('decrypts an ev: body through the main thread’s pool, and refuses a bad one with EvDecryptError and its reason', async () => {
    const ok = await ask('decrypt', { text: JSON.stringify({ pan: encryptValue('4111', keyring.publicKeys()) }) });
    expect(ok.result).toEqual({ json: '{"pan":"4111"}', count: 1 });
    const bad = await ask('decrypt', { text: JSON.stringify([failingValues(keyring).AUTHENTICATION_FAILED]) });
    expect(bad.error).toMatchObject({ name: 'EvDecryptError', code: 'EV_DECRYPT_FAILED', reason: 'AUTHENTICATION_FAILED', isEvDecryptError: true });
  });

  it('checks a large body for JSON through the main thread’s pool with the inline answer, bytes handed on, the worker’s intact', async () => {
    const pad = JSON.stringify('naïve ✓ '.repeat(20_000));
    const token = encryptValue('4111', keyring.publicKeys());
    const bodies = [Buffer.from(`\ufeff[${JSON.stringify(token)},${pad}]`), Buffer.from(`[${JSON.stringify(token)},${pad},]`), Buffer.concat([Buffer.from(`["ev:${pad}`), Buffer.from([0xff]), Buffer.from('"]')])];
    const answers = [];
    for (const b of bodies) answers.push((await ask('json-text', { bytes: b })).result as { text: string | null; inline: string | null; intact: boolean });
    expect(answers.map((a) => a.text === a.inline && a.intact)).toEqual([true, true, true]);
    expect(answers.map((a) => a.text === null)).toEqual([false, true, true]);
    expect(answers[0]!.text).toBe(bodies[0]!.toString('utf8'));
    expect(checkedOnMain).toEqual([false, false, false]);
  });

  it('ignores garbage in both directions and keeps serving', async () => {
    for (const p of Object.values(mainPorts)) for (const g of [7, null, { k: 'err', id: 99999, e: {} }, { k: 'call', id: 0, m: 'attest', a: 'x' }]) p.postMessage(g);
    await ask('garbage');
    const nonce = new Uint8Array(32).fill(9);
    const { result } = await ask('attest', { nonce });
    expect((await verifyAttestation(result as Uint8Array, { roots: [sim.rootPem], nonce })).nonce).toEqual(nonce);
  });

  it('rejects a call pending when its port closes with WORKER_SERVICE_CLOSED', async () => {
    // Nobody serves this port on the main side: the call waits until the port closes (whether the close
    // reaches the worker before or after the call is made, it is refused the same way).
    const pending = ask('silent');
    mainPorts.silent!.close();
    const { error } = await pending;
    expect(error).toMatchObject({ name: 'WorkerServiceError', code: 'WORKER_SERVICE_CLOSED', isWorkerServiceError: true });
  });

  // Last: it ends the worker.
  it('releases a scrape waiting on a worker that is gone at once (its ports close with it)', async () => {
    await worker.terminate();
    await metricsServer.requestFlush(600_000); // not ten minutes: the metrics port closed with the worker
    expect(samples(await metrics.metrics()).get('enclave_agent_requests_total{mode="http",status_class="2xx"}')).toBe(123);
  });
});

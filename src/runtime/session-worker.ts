// A session worker thread ([limits] workers): runs public-channel sessions on connections the main thread hands
// over (session-workers.ts), with the same forwarder the main thread would build from the same Config. What is
// process-wide stays on the main thread and is reached through MessagePorts: the NSM, the transaction log,
// the operational log, the metrics and the decrypt pool (src/runtime/worker-services/); the limits that span
// every session (sessions, per client, queued output, waiting handshakes, decrypt jobs, the control nonce) live
// in shared memory (src/responder/shared-admission.ts), so they hold exactly across threads.
// With tls_termination = true it serves TLS ingress connections the main thread hands over too (worker-tls.ts),
// imported only then (a CPU profile put Node's TLS and HTTP modules at ~36 ms of a thread's start, and a thread
// holds what it loaded for its life), and before the thread reports ready: no TLS connection reaches it earlier.
import { parentPort, workerData } from 'node:worker_threads';
import { DecryptScheduler } from '../crypto/decrypt-scheduler.ts';
import { KeyMaterial, Keyring, wipeScalars } from '../crypto/keyring.ts';
import { wipeEcdhCache } from '../crypto/ecdh-cache.ts';
import { createResponder } from '../responder/server.ts';
import { SharedAdmission } from '../responder/shared-admission.ts';
import { adoptConnection, discardHandedConnection, HandoffReceipts } from '../transport/handoff.ts';
import { createForwarder, limitsFrom } from './forwarder-setup.ts';
import type { SessionWorkerData, ToWorker, FromWorker } from './session-worker-protocol.ts';
import type { HttpForwarder } from '../http/forwarder.ts';
import { remoteDecryptPool } from './worker-services/decrypt-proxy.ts';
import { workerLogger } from './worker-services/log-proxy.ts';
import { MetricsRecorder } from './worker-services/metrics-proxy.ts';
import { remoteNsm } from './worker-services/nsm-proxy.ts';
import { remoteLogSink } from './worker-services/trx-proxy.ts';

const d = workerData as SessionWorkerData;
const port = parentPort!;
const { config } = d;

// Every key generation, newest first: this thread opens ev: values under retired keys too.
const keyring = Keyring.fromMaterial(KeyMaterial.fromGenerations(d.scalars));
wipeScalars(d.scalars);
const logger = workerLogger(d.ports.log, { level: d.logLevel, bindings: { worker: d.index } });
const admission = SharedAdmission.attach(d.admission);
const recorder = new MetricsRecorder(d.ports.metrics);
const trxSink = d.ports.trx === undefined ? undefined : remoteLogSink(d.ports.trx, d.trxCapabilities);
const decryptScheduler = new DecryptScheduler({
  maxConcurrent: config.limits.max_concurrent_decrypts,
  slots: admission.decryptSlots,
  pool: remoteDecryptPool(d.ports.decrypt, keyring),
});
// HTTP mode's forwarder (and node:http with it) is imported only in HTTP mode (forwarder-setup.ts).
const forwarder = await createForwarder({
  config,
  logger,
  keyring,
  decryptScheduler,
  observer: recorder,
  periodicHealthcheck: false,
  bufferedBodies: admission.bufferedBodies,
  ...(trxSink === undefined ? {} : { trxSink }),
  ...(d.apiKeyHashes === undefined ? {} : { apiKeyHashes: d.apiKeyHashes }),
});

const post = (m: FromWorker): void => port.postMessage(m);
/** What the main thread stops answering for once it has the receipt (it closes unconfirmed fds after we exit). */
const receipts = new HandoffReceipts((ids) => post({ type: 'taken', ids }));

/** Each connection the main thread handed over holds one of the process's session slots until this. */
let endedHere = 0;
const sessionEnded = (): void => {
  endedHere++;
  admission.sessions.closed();
};
/** A handed connection that became no session: its slot back, and the main thread's count of this worker's load. */
const unused = (): void => {
  sessionEnded();
  post({ type: 'unused' });
};

const attestationKey = d.attestationKey;
const responder = createResponder({
  channel: 'public',
  nsm: remoteNsm(d.ports.nsm),
  forwarder,
  limits: limitsFrom(config),
  acceptProxyProtocol: config.accept_proxy_protocol,
  ...(d.features === undefined ? {} : { features: d.features }),
  attestationPublicKey: () => attestationKey,
  controlNonce: admission.controlNonce,
  outputBudget: admission.budget,
  clients: admission.clients,
  counters: admission.counters(d.index),
  handshakeQueue: admission.handshakeQueue,
  sessionsLimit: false,
  logger,
  onSessionClosed: (summary) => recorder.sessionClosed(summary),
  // The slot is given back once the connection is closed, after its lingering close.
  onSessionReleased: sessionEnded,
});

const tls =
  d.tls === true && d.ports.identity !== undefined && 'attach' in forwarder
    ? (await import('./worker-tls.ts')).startWorkerTls({ index: d.index, identityPort: d.ports.identity, admission, forwarder: forwarder as HttpForwarder, config, logger, closed: () => post({ type: 'tls-closed' }) })
    : undefined;

async function stop(how: 'drain' | 'close', timeoutMs: number): Promise<void> {
  await Promise.all([how === 'drain' ? responder.drain(timeoutMs) : responder.close(), tls?.stop(how, timeoutMs)]);
  await forwarder.close?.();
  wipeEcdhCache(keyring); // this thread's key agreements
  await trxSink?.close();
  recorder.flushNow();
  logger.flush();
}

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'connection': {
      receipts.taken(m.connection); // adopted or closed below, in this turn: the receipt leaves after it
      if (m.channel === 'tls') {
        if (tls !== undefined) tls.accept(m.connection, m.generation);
        else {
          // Cannot happen (the main thread hands TLS only to workers started with tls): the fd is not kept.
          discardHandedConnection(m.connection);
          admission.tls.handshakeEnded();
          admission.tls.closed();
          admission.tls.refused();
          post({ type: 'tls-closed' });
        }
        return;
      }
      let stream;
      try {
        stream = adoptConnection(m.connection);
      } catch (err) {
        unused();
        logger.warn({ remote: m.connection.info.remote, err: (err as { code?: string }).code ?? 'error' }, 'cannot adopt a handed connection');
        return;
      }
      // handle() either starts a session (which gives its slot back through onSessionReleased, possibly at once)
      // or refuses the connection without one (draining): only then is the slot given back here.
      const before = endedHere;
      const open = responder.sessionCount;
      responder.handle(stream, m.connection.info);
      if (responder.sessionCount === open && endedHere === before) unused();
      return;
    }
    case 'drain':
    case 'close':
      void stop(m.type, m.type === 'drain' ? m.timeoutMs : 0).then(
        () => post({ type: 'stopped' }),
        (err: unknown) => post({ type: 'stopped', error: (err as { code?: string }).code ?? 'error' }),
      );
      return;
  }
});
post({ type: 'ready' });

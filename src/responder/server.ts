// The responder: admits connections (up to maxSessions and maxConcurrentHandshakes + a bounded wait queue,
// refusing the rest before any crypto), runs one Session per connection, and drains or closes them.
// `startAgent` binds it to listeners. Refusals and accept errors are logged once per interval with counts.
import type { Duplex } from 'node:stream';
import pino, { type Logger } from 'pino';
import type { Nsm } from '../attestation/nsm.ts';
import type { NoisePrimitives } from '../noise/primitives.ts';
import { nodePrimitives } from '../noise/suite-node.ts';
import { listenTcp, type TcpListenAddress } from '../transport/tcp.ts';
import type { ConnectionInfo, Listener, ListenOptions } from '../transport/types.ts';
import { listenUnix, type UnixListenAddress } from '../transport/unix.ts';
import { installNativeIntArrayCodec } from '../wire/native-int-array.ts';
import { createControlNonce, parseControlPublicKey, type ControlHandler, type ControlNonceState, type ControlPublicKeyInput } from './control.ts';
import { ClientSessions, createCounters, HandshakeAdmission, type ClientSessionsLike, type HandshakeQueueLike, type ResponderCounters } from './admission.ts';
import { ResponderError } from './errors.ts';
import type { Forwarder } from './forwarder.ts';
import { resolveLimits, type Limits } from './limits.ts';
import { OutputBudget, type OutputBudgetLike } from './output-budget.ts';
import { RateLimitedLog, REFUSAL_LOG_INTERVAL_MS } from '../util/rate-limited-log.ts';
import { Session, type Channel, type SessionSummary } from './session.ts';

export interface ResponderOptions {
  nsm: Nsm;
  forwarder: Forwarder;
  /** 'public' (port 5000: attestation, Data, streams) or 'control' (port 5007: attestation, control nonce, Control). */
  channel: Channel;
  /** Default: node:crypto suite. */
  primitives?: NoisePrimitives;
  limits?: Partial<Limits>;
  /** Expect a PROXY v2 header (from the host bridge) before hs1. */
  acceptProxyProtocol?: boolean;
  /** Advertised in Attestation.features. Default ['bstr']; [] advertises nothing (pure compat). */
  features?: string[];
  /** Public key(s) to bind into every attestation document's `public_key`. */
  attestationPublicKey?: () => Uint8Array | undefined;
  /** The operator's P-256 key that signs Control commands (PEM, SPKI DER, SEC1 point or KeyObject). */
  controlPublicKey?: ControlPublicKeyInput;
  /** Executes verified control commands. */
  controlHandler?: ControlHandler;
  /** Share one between the public and the control responder (startAgent does). Default: a fresh one. */
  controlNonce?: ControlNonceState;
  logger?: Logger;
  /** Called after each session ends (metrics, tests). */
  onSessionClosed?: (summary: SessionSummary) => void;
  /**
   * Called once a session's connection is closed and its slot free: at once, or after the lingering close that
   * follows its final frames (up to 30 s; a drain's end or close() cuts it).
   */
  onSessionReleased?: () => void;
  /** Fixed responder ephemeral key per session. Tests and transcript vectors only — never in production. */
  ephemeralKeyForTests?: () => Uint8Array;
  /**
   * The queued-output budget to share with other responders (startAgent shares one; with worker threads,
   * SharedAdmission.budget). Default: a fresh OutputBudget of limits.maxQueuedBytes.
   */
  outputBudget?: OutputBudgetLike;
  /** Sessions per client address, to share with other threads (SharedAdmission.clients). Default: this responder's own. */
  clients?: ClientSessionsLike;
  /**
   * The counters to update (SharedAdmission.counters(i) of this thread); `refused` counts refusedCount. Its
   * queuedBytes/peakQueuedBytes should read the same budget as `outputBudget`. Default: fresh ones.
   */
  counters?: ResponderCounters & { refused: number };
  /** The process-wide count of waiting handshakes (SharedAdmission.handshakeQueue), on top of this responder's own queue. */
  handshakeQueue?: HandshakeQueueLike;
  /**
   * Default true. false: connections were already admitted against maxSessions before handle() (a worker's
   * responder: the main thread took SharedAdmission.sessions.tryOpen()), this responder does not apply it;
   * per-client, handshake and budget limits still apply.
   */
  sessionsLimit?: boolean;
  /** How often refused connections and accept errors are logged (one line with counts). Default 10 000 ms. */
  refusalLogIntervalMs?: number;
}

export interface Responder {
  readonly channel: Channel;
  readonly limits: Readonly<Limits>;
  /** The per-process control nonce this responder uses. */
  readonly controlNonce: ControlNonceState;
  /** Takes ownership of one accepted connection. Never throws. */
  handle(stream: Duplex, info: ConnectionInfo): void;
  /** Sessions holding a slot: open ones and ended ones whose connection still lingers (session.ts #close). */
  readonly sessionCount: number;
  /**
   * Connections refused before any crypto: over maxSessions, draining/closed, over maxSessionsPerClient, or no
   * room for their handshake (counters tells them apart).
   */
  readonly refusedCount: number;
  /**
   * Live counters for metrics (refusals by cause, handshake slots and queue, write stalls, queued output):
   * a plain object updated in place — read it at scrape time.
   */
  readonly counters: Readonly<ResponderCounters>;
  /** A listener feeding this responder failed to accept (EMFILE, ...): counted and logged (rate-limited). */
  acceptError(err: Error): void;
  /**
   * Refuses new connections, lets sessions finish what is in flight (and lingering connections close), closes
   * what remains after `timeoutMs` + EXPIRE_FLUSH_MS.
   */
  drain(timeoutMs: number): Promise<void>;
  /** Closes every session now, lingering connections included. Does not close the forwarder (it may be shared). */
  close(): Promise<void>;
}

/** After the drain timeout: how long sessions get to hand their final Error frames to the client. */
const EXPIRE_FLUSH_MS = 2_000;

export function createResponder(opts: ResponderOptions): Responder {
  if (opts.channel !== 'public' && opts.channel !== 'control') {
    throw new ResponderError('RESPONDER_BAD_OPTIONS', `channel: expected "public" or "control", found ${JSON.stringify(opts.channel)}`);
  }
  if (opts.nsm === undefined || opts.forwarder === undefined) {
    throw new ResponderError('RESPONDER_BAD_OPTIONS', 'nsm and forwarder are required');
  }
  installNativeIntArrayCodec(); // the C int-array loops for large byte fields, when the addon is built
  const limits = resolveLimits(opts.limits);
  const logger = opts.logger ?? pino({ enabled: false });
  const controlNonce = opts.controlNonce ?? createControlNonce();
  const controlKey = opts.controlPublicKey === undefined ? undefined : parseControlPublicKey(opts.controlPublicKey);
  const features = opts.features ?? ['bstr'];
  const sessions = new Set<Session>();
  const budget = opts.outputBudget ?? new OutputBudget(limits.maxQueuedBytes);
  const counters = opts.counters ?? Object.assign(createCounters(budget), { refused: 0 });
  const maxSessions = opts.sessionsLimit === false ? Infinity : limits.maxSessions;
  const refusals = new RateLimitedLog(logger, `connections refused (${opts.channel} channel)`, opts.refusalLogIntervalMs ?? REFUSAL_LOG_INTERVAL_MS);
  const acceptErrors = new RateLimitedLog(logger, `listener accept errors (${opts.channel} channel)`, opts.refusalLogIntervalMs ?? REFUSAL_LOG_INTERVAL_MS);
  let state: 'running' | 'draining' | 'closed' = 'running';
  let idleWaiters: (() => void)[] = [];

  const sessionConfig = {
    channel: opts.channel,
    nsm: opts.nsm,
    forwarder: opts.forwarder,
    primitives: opts.primitives ?? nodePrimitives,
    limits,
    acceptProxyProtocol: opts.acceptProxyProtocol === true,
    features,
    ...(opts.attestationPublicKey === undefined ? {} : { attestationPublicKey: opts.attestationPublicKey }),
    control: {
      nonce: controlNonce,
      ...(controlKey === undefined ? {} : { publicKey: controlKey }),
      ...(opts.controlHandler === undefined ? {} : { handler: opts.controlHandler }),
    },
    logger,
    ...(opts.ephemeralKeyForTests === undefined ? {} : { ephemeralKey: opts.ephemeralKeyForTests }),
    shared: {
      budget,
      counters,
      clients: opts.clients ?? new ClientSessions(limits.maxSessionsPerClient),
      handshakes: new HandshakeAdmission(limits, counters, opts.handshakeQueue),
      refused: (reason: string) => {
        counters.refused++;
        refusals.note(reason);
      },
    },
  };


  const onClosed = (_session: Session, summary: SessionSummary): void => {
    try {
      opts.onSessionClosed?.(summary);
    } catch {
      // a metrics hook must not break the responder
    }
  };

  // A session holds its place (maxSessions, and what a drain waits for) until its connection is closed.
  const onReleased = (session: Session): void => {
    sessions.delete(session);
    opts.onSessionReleased?.();
    if (sessions.size === 0 && idleWaiters.length > 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const w of waiters) w();
    }
  };

  const whenEmpty = (): Promise<void> => (sessions.size === 0 ? Promise.resolve() : new Promise((resolve) => idleWaiters.push(resolve)));

  return {
    channel: opts.channel,
    limits,
    controlNonce,
    get sessionCount() {
      return sessions.size;
    },
    get refusedCount() {
      return counters.refused;
    },
    counters,
    acceptError(err) {
      counters.acceptErrors++;
      acceptErrors.note((err as NodeJS.ErrnoException).code ?? 'error');
    },
    handle(stream, info) {
      if (state !== 'running' || sessions.size >= maxSessions) {
        counters.refused++;
        counters.refusedSessions++;
        refusals.note(state === 'running' ? 'max-sessions' : state);
        stream.on('error', () => {});
        stream.destroy();
        return;
      }
      try {
        sessions.add(new Session(stream, info, sessionConfig, onClosed, onReleased));
      } catch (err) {
        counters.refused++;
        stream.destroy();
        logger.error({ remote: info.remote, err: (err as { code?: string }).code ?? 'error' }, 'cannot start a session');
      }
    },
    async drain(timeoutMs) {
      if (state === 'closed') return;
      state = 'draining';
      for (const s of [...sessions]) s.drain();
      let timer: NodeJS.Timeout | undefined;
      const bounded = (ms: number): Promise<void> =>
        Promise.race([whenEmpty(), new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer));
      await bounded(timeoutMs);
      // What is still in flight gets an Error frame (never silence), then the sessions close; a client that
      // does not take those frames within EXPIRE_FLUSH_MS is cut off.
      for (const s of [...sessions]) s.expire(`agent is shutting down: the request did not finish within the ${timeoutMs} ms drain timeout`);
      await bounded(EXPIRE_FLUSH_MS);
      for (const s of [...sessions]) s.destroy();
      refusals.flush();
      acceptErrors.flush();
    },
    async close() {
      state = 'closed';
      for (const s of [...sessions]) s.destroy();
      await whenEmpty();
      refusals.flush();
      acceptErrors.flush();
    },
  };
}

// -------------------------------------------------------------------------------------------------------------
// startAgent: listeners + responders

/** Where to listen: TCP, a Unix socket, or any Listener factory (e.g. vsock). */
export type ListenTarget = TcpListenAddress | UnixListenAddress | ((opts: ListenOptions) => Promise<Listener>);

export interface AgentOptions extends Omit<ResponderOptions, 'channel' | 'controlNonce'> {
  /** The public channel (production: vsock port 5000). */
  listen: ListenTarget;
  /** The control channel (production: vsock port 5007); omitted = no control channel. */
  controlListen?: ListenTarget;
  /** Limits for the control channel (default: the same as public, with maxSessions 4). */
  controlLimits?: Partial<Limits>;
  /**
   * Serves the public channel instead of a responder of this thread (the session workers, src/runtime/): its
   * listener is told to hand connections over untouched.
   */
  publicResponder?: Responder & { readonly handoff: true };
  /** The per-process control nonce (default: a fresh one); the session workers share theirs. */
  controlNonce?: ControlNonceState;
}

export interface Agent {
  readonly public: { listener: Listener; responder: Responder };
  readonly control?: { listener: Listener; responder: Responder };
  readonly controlNonce: ControlNonceState;
  /** Stops listening, drains both responders (up to `timeoutMs`), closes the forwarder. */
  drain(timeoutMs: number): Promise<void>;
  /** Stops listening, closes every session and the forwarder. */
  close(): Promise<void>;
}

function listenOn(target: ListenTarget, responder: Responder, handoff = false): Promise<Listener> {
  const opts: ListenOptions = { onConnection: (s, info) => responder.handle(s, info), onError: (err) => responder.acceptError(err), ...(handoff ? { handoff } : {}) };
  if (typeof target === 'function') return target(opts);
  if ('path' in target) return listenUnix(target, opts);
  return listenTcp(target, opts);
}

export async function startAgent(opts: AgentOptions): Promise<Agent> {
  const { listen, controlListen, controlLimits, publicResponder: handedPublic, controlNonce: givenNonce, ...shared } = opts;
  const controlNonce = givenNonce ?? createControlNonce();
  // One queued-output budget for the whole process: both channels draw on it.
  const outputBudget = shared.outputBudget ?? new OutputBudget(resolveLimits(shared.limits).maxQueuedBytes);
  const publicResponder = handedPublic ?? createResponder({ ...shared, channel: 'public', controlNonce, outputBudget });
  const controlResponder =
    controlListen === undefined
      ? undefined
      : createResponder({ ...shared, channel: 'control', controlNonce, outputBudget, limits: { ...shared.limits, maxSessions: 4, ...controlLimits } });
  const listeners: Listener[] = [];
  try {
    const publicListener = await listenOn(listen, publicResponder, handedPublic !== undefined);
    listeners.push(publicListener);
    let control: Agent['control'];
    if (controlResponder !== undefined && controlListen !== undefined) {
      const controlListener = await listenOn(controlListen, controlResponder);
      listeners.push(controlListener);
      control = { listener: controlListener, responder: controlResponder };
    }
    opts.logger?.info({ public: publicListener.address, control: control?.listener.address }, 'agent listening');
    const responders = [publicResponder, ...(controlResponder === undefined ? [] : [controlResponder])];
    const stop = async (fn: (r: Responder) => Promise<void>): Promise<void> => {
      await Promise.all(listeners.map((l) => l.close()));
      await Promise.all(responders.map(fn));
      await opts.forwarder.close?.();
    };
    return {
      public: { listener: publicListener, responder: publicResponder },
      ...(control === undefined ? {} : { control }),
      controlNonce,
      drain: (timeoutMs) => stop((r) => r.drain(timeoutMs)),
      close: () => stop((r) => r.close()),
    };
  } catch (err) {
    await Promise.all(listeners.map((l) => l.close()));
    throw err;
  }
}

// The client SDK (browser-safe): connect to an enclave through its host bridge, verify its attestation, then talk
// HTTP to the app inside with a Fetch-compatible `fetch`, raw streams and upgrades. Node users import
// `connect` from './node.ts', which injects the node:crypto Noise suite and undici's WebSocket.
//
//   const client = await connect('wss://enclave.example.com/', { pcrs: { PCR0, PCR1, PCR2 } });
//   const res = await client.fetch('/api/pay', { method: 'POST', json: { amount: 1 } });
//
// Guarantees: nothing but RequestAttestation is sent before the attestation document verified (nonce = this
// session's Noise handshake hash, pinned PCRs, trusted roots, age); every reconnect verifies again with the same
// pins; a request in flight on a session that dies fails with CLIENT_RETRYABLE and is never re-sent.
import type { AttestationDocument } from '../attestation/document.ts';
import type { PcrPins } from '../attestation/verify.ts';
import type { NoisePrimitives } from '../noise/primitives.ts';
import { noblePrimitives } from '../noise/suite-noble.ts';
import { Channel, type WebSocketConstructor } from './channel.ts';
import { DEFAULT_MAX_BUFFERED_BYTES, onBufferFullOption, type OnBufferFull } from './buffer-cap.ts';
import { ClientError } from './errors.ts';
import { maskUserinfo } from '../util/url-userinfo.ts';
import { textShape } from '../util/text-shape.ts';
import { clientFetch, type FetchContext } from './fetch.ts';
import { SessionManager } from './reconnect.ts';
import type { ClientRequestInit, Transport } from './request.ts';
import { Session } from './session.ts';
import { clientVerbs, positiveOption, verifyOptions } from './verbs.ts';
import { clientOpenStream, clientUpgrade, type ClientStream, type OpenStreamOptions, type UpgradedStream, type UpgradeOptions } from './stream.ts';

export { ClientError, type ClientErrorCode } from './errors.ts';
export type { ClientRequestInit, HeadersLike, BodyLike, Transport } from './request.ts';
export type { ClientStream, UpgradedStream, OpenStreamOptions, UpgradeOptions } from './stream.ts';
export type { OnBufferFull } from './buffer-cap.ts';
export type { WebSocketConstructor, WebSocketLike } from './channel.ts';
export type { AttestationDocument } from '../attestation/document.ts';
export type { PcrPins } from '../attestation/verify.ts';
export {
  verifyAttestedCertificate,
  parseAttestedCertificate,
  AttestedCertError,
  type AttestedCertErrorCode,
  type AttestedCertificate,
  type AttestedCertExpectations,
  type VerifiedCertificate,
} from './attested-cert.ts';
export type { NoisePrimitives } from '../noise/primitives.ts';

export interface ConnectOptions {
  /** The PCR values the enclave must report (hex or bytes), or several allowed sets. */
  pcrs: PcrPins | PcrPins[];
  /** Trusted roots (PEM or DER). Default: the AWS Nitro root G1. */
  roots?: (Uint8Array | string)[];
  /** Debug-mode enclave: skip the certificate chain and signature (every other check still runs). */
  debug?: boolean;
  /** Reject attestation documents older than this. */
  maxAgeMs?: number;
  /** Accept a debug-mode enclave (all-zero PCR0/1/2) while still checking its chain; refused by default. */
  allowDebugEnclave?: boolean;
  /**
   * Extra headers on the WebSocket upgrade (needs a WebSocket that takes them: undici on Node; not browsers). They
   * go to the host bridge — outside the enclave, untrusted, in the clear over ws:// — never to the app: a bridge
   * credential belongs here, an app's API key in each request's headers.
   */
  headers?: Record<string, string>;
  /** Noise primitives. Default: the portable @noble suite (node.ts passes the node:crypto suite). */
  primitives?: NoisePrimitives;
  /** WebSocket implementation. Default: globalThis.WebSocket (the Node entry: its BoundedWebSocket, even where a global exists). */
  WebSocket?: WebSocketConstructor;
  /** Clock for attestation checks (certificate windows, maxAgeMs) and backoff. Default Date.now. */
  now?: () => number;
  /** Re-establish a dead session on the next request (handshake + attestation, same pins). Default true. */
  reconnect?: boolean;
  /** WebSocket + handshake + attestation must finish within this. Default 30 000 ms. */
  connectTimeoutMs?: number;
  /** Default timeout of each fetch (whole exchange). Default 0 (none). */
  requestTimeoutMs?: number;
  /** Data requests + streams in flight per session (the agent's limit; default 64); more wait their turn. */
  maxInFlight?: number;
  /**
   * Bytes of one response body or stream that may arrive before the caller reads them (default 64 MiB). The
   * protocol has no per-stream flow control, so past this the stream is closed and reading it fails with
   * CLIENT_BUFFER_FULL instead of memory growing without bound. Per stream: `openStream`/`upgrade` options.
   */
  maxBufferedBytes?: number;
  /**
   * What a response body (fetch) or a stream's readable (openStream, upgrade) holding unread bytes does. 'error'
   * (default): past maxBufferedBytes it fails with CLIENT_BUFFER_FULL, other requests unaffected. 'pause': at half
   * of it the connection stops being read until a read takes it below half again — a slow reader holds the enclave
   * back, and every request and stream of the session waits meanwhile; needs a WebSocket that can pause (the Node
   * entry's), else it acts as 'error'. Per stream: `openStream`/`upgrade` options.
   */
  onBufferFull?: OnBufferFull;
  /** Default transport of fetch (see ClientRequestInit.transport). Default 'auto'. */
  transport?: Transport;
  /** Aborts connecting. */
  signal?: AbortSignal;
}

export interface Client {
  /** The bridge URL. */
  readonly url: string;
  /** What requests send as Host (the URL's host, without port, like the reference client). */
  readonly host: string;
  /** The verified, decoded attestation document of the current session. */
  readonly attestation: AttestationDocument;
  /** The document's `public_key` (the enclave's data-encryption key(s)), if it carries one. */
  readonly enclavePublicKey: Uint8Array | null;
  /** Extensions the agent advertised ('bstr', ...); [] for a compat (Enclavia) server. */
  readonly features: readonly string[];
  /** True while a verified session is up. */
  readonly connected: boolean;
  /** Fetch-compatible: resolves to a standard Response once the response head arrived. Bound: `const f = client.fetch` works. */
  fetch(input: string | URL | Request, init?: ClientRequestInit): Promise<Response>;
  request(method: string, path: string | URL, init?: Omit<ClientRequestInit, 'method'>): Promise<Response>;
  get(path: string | URL, init?: Omit<ClientRequestInit, 'method'>): Promise<Response>;
  delete(path: string | URL, init?: Omit<ClientRequestInit, 'method'>): Promise<Response>;
  post(path: string | URL, init?: Omit<ClientRequestInit, 'method'>): Promise<Response>;
  put(path: string | URL, init?: Omit<ClientRequestInit, 'method'>): Promise<Response>;
  patch(path: string | URL, init?: Omit<ClientRequestInit, 'method'>): Promise<Response>;
  /** fetch() and parse the body as JSON, whatever the status (check it with fetch() when it matters). CLIENT_PROTOCOL if not JSON. */
  json<T = unknown>(path: string | URL, init?: ClientRequestInit): Promise<T>;
  /** A raw byte stream to the app (OpenStream); `payload` is written first. */
  openStream(payload?: Uint8Array | string, opts?: OpenStreamOptions): Promise<ClientStream>;
  /** An HTTP/1.1 upgrade (e.g. WebSocket): resolves on 101 with the upgraded byte stream. */
  upgrade(path: string | URL, opts?: UpgradeOptions): Promise<UpgradedStream>;
  /** Closes the session; pending and later calls fail CLIENT_CLOSED. */
  close(): Promise<void>;
}

function hostOf(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // Never quoted: it may carry user:pass@.
    throw new ClientError('CLIENT_BAD_OPTIONS', `url: expected an absolute ws:// or wss:// URL, found ${textShape(String(url))}`);
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new ClientError('CLIENT_BAD_OPTIONS', `url: expected ws:// or wss://, found ${u.protocol}`);
  if (u.hostname === '') throw new ClientError('CLIENT_BAD_OPTIONS', 'url: missing host');
  return u.hostname;
}

/** A stream's options with the client's buffer bound where the stream gives none (an explicit undefined too). */
function streamDefaults<T extends OpenStreamOptions>(opts: T | undefined, maxBufferedBytes: number, onBufferFull: OnBufferFull): T {
  return { ...opts, maxBufferedBytes: opts?.maxBufferedBytes ?? maxBufferedBytes, onBufferFull: opts?.onBufferFull ?? onBufferFull } as T;
}

/** Connects, verifies the enclave and resolves to a Client. Rejects CLIENT_ATTESTATION_FAILED (nothing sent), CLIENT_CONNECT_FAILED, ... */
export async function connect(url: string, options: ConnectOptions): Promise<Client> {
  if (options === null || typeof options !== 'object') throw new ClientError('CLIENT_BAD_OPTIONS', 'options: expected { pcrs, ... }');
  if (options.pcrs === undefined || options.pcrs === null) throw new ClientError('CLIENT_BAD_OPTIONS', 'pcrs: the PCR values to pin are required');
  const host = hostOf(url);
  const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WS === undefined) {
    throw new ClientError('CLIENT_BAD_OPTIONS', 'no WebSocket implementation: pass options.WebSocket, or on Node import connect from the client node entry');
  }
  const primitives = options.primitives ?? noblePrimitives;
  const now = options.now ?? Date.now;
  const connectTimeoutMs = positiveOption('connectTimeoutMs', options.connectTimeoutMs, 30_000, 1);
  const maxInFlight = positiveOption('maxInFlight', options.maxInFlight, 64, 1);
  const requestTimeoutMs = positiveOption('requestTimeoutMs', options.requestTimeoutMs, 0);
  const maxBufferedBytes = positiveOption('maxBufferedBytes', options.maxBufferedBytes, DEFAULT_MAX_BUFFERED_BYTES, 1);
  const onBufferFull = onBufferFullOption(options.onBufferFull, 'error');
  const transport = options.transport ?? 'auto';
  if (transport !== 'auto' && transport !== 'data' && transport !== 'stream') throw new ClientError('CLIENT_BAD_OPTIONS', `transport: expected auto, data or stream, found ${String(transport)}`);
  const verify = {
    ...verifyOptions(options),
    now,
  };

  const establish = async (signal?: AbortSignal): Promise<Session> => {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(new ClientError('CLIENT_TIMEOUT', `connecting to ${maskUserinfo(url)} did not finish within ${connectTimeoutMs} ms`)), connectTimeoutMs);
    const onAbort = (): void => ctl.abort(new ClientError('CLIENT_ABORTED', 'connecting was aborted', { cause: signal?.reason }));
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const channel = await Channel.open({ url, WebSocket: WS, primitives, ...(options.headers === undefined ? {} : { headers: options.headers }), signal: ctl.signal });
      return await Session.establish(channel, verify, { maxInFlight, signal: ctl.signal });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  };

  const manager = new SessionManager(establish, { enabled: options.reconnect ?? true, backoffBaseMs: 100, backoffMaxMs: 5_000, now });
  // The first session: connect() reports its failure as is (no retry, no backoff).
  let last: Session = await establish(options.signal);
  manager.adopt(last);
  manager.onSession((s) => (last = s));
  const ctx: FetchContext = { manager, host, transport, timeoutMs: requestTimeoutMs, maxBufferedBytes, pauseWhenFull: onBufferFull === 'pause' };

  const fetch = (input: string | URL | Request, init?: ClientRequestInit): Promise<Response> => clientFetch(ctx, input, init);
  return {
    url,
    host,
    get attestation() {
      return last.attestation;
    },
    get enclavePublicKey() {
      return last.attestation.publicKey;
    },
    get features() {
      return last.features;
    },
    get connected() {
      return !manager.closed && manager.current !== null && manager.current.alive;
    },
    ...clientVerbs(fetch),
    openStream: (payload, opts) => clientOpenStream(manager, payload, streamDefaults(opts, maxBufferedBytes, onBufferFull)),
    upgrade: (path, opts) => clientUpgrade(manager, host, path, streamDefaults(opts, maxBufferedBytes, onBufferFull)),
    close: () => new Promise<void>((resolve) => {
      manager.close();
      resolve();
    }),
  };
}

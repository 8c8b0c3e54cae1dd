// The SDK over https:// — an enclave's attested TLS ingress — with the same Client API as the Noise channel
// (Node only: reached from node.ts).
//
//   const client = await connect('https://enclave.example.com/', { pcrs, roots?, nonce? });
//   const res = await client.fetch('/api/pay', { method: 'POST', json: { amount: 1 } });
//
// Trust: the certificate is self-signed and NOT checked against system roots or the host name; trust comes only
// from the attestation document it carries (tls-connect.ts). Every TLS connection — the first and every one undici
// opens later (keep-alive pool, reconnects after the enclave restarts) — is verified with the same pins before
// undici may write a byte to it. connect() resolves only after the first connection verified.
//
// HTTP is undici's keep-alive pool over those verified sockets; responses are the platform's `Response`, like the
// Noise client's. Differences from ws:// (documented, refused rather than ignored): no openStream (a raw byte
// stream needs the Noise channel), no `headers`/`transport`/`primitives`/`WebSocket` options.
import { Readable, type Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { Pool, type Dispatcher } from 'undici';
import type { AttestationDocument } from '../attestation/document.ts';
import type { VerifiedCertificate } from './attested-cert.ts';
import { abortError, ClientError, transportErrorName } from './errors.ts';
import { textShape } from '../util/text-shape.ts';
import { Deadline, makeResponse } from './fetch.ts';
import type { ResponseHead } from './http-codec.ts';
import type { Client, ConnectOptions } from './index.ts';
import { normalizeRequest, headerList, type ClientRequestInit } from './request.ts';
import { clientVerbs, positiveOption, verifyOptions } from './verbs.ts';
import type { UpgradedStream, UpgradeOptions } from './stream.ts';
import { connectVerifiedTls, type VerifiedTls } from './tls-connect.ts';

export interface HttpsConnectOptions extends ConnectOptions {
  /**
   * https only: ask the enclave for a fresh document on every TLS connection — SNI `<nonce>.attest.<host>`, and the
   * document's nonce must be exactly the bytes sent. `true` = 24 new random bytes per connection; bytes = that
   * nonce on every connection. Default: off (the certificate's document, re-issued by the enclave every few hours).
   */
  nonce?: boolean | Uint8Array;
}

function parseHttpsUrl(url: string): { host: string; port: number; origin: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // Never quoted: it may carry user:pass@.
    throw new ClientError('CLIENT_BAD_OPTIONS', `url: expected an absolute https:// URL, found ${textShape(String(url))}`);
  }
  if (u.protocol !== 'https:') throw new ClientError('CLIENT_BAD_OPTIONS', `url: expected https://, found ${u.protocol}`);
  if (u.hostname === '') throw new ClientError('CLIENT_BAD_OPTIONS', 'url: missing host');
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return { host, port: u.port === '' ? 443 : Number(u.port), origin: u.origin };
}


/** undici's header record → a list (set-cookie and friends stay separate). */
function headerPairs(h: Record<string, string | string[] | undefined>): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) out.push([k, one]);
  }
  return out;
}

function requestError(err: unknown, signal: AbortSignal): ClientError {
  if (signal.aborted) return abortError(signal);
  if (err instanceof ClientError) return err; // from the connector: attestation, connect, timeout
  const code = (err as { code?: string })?.code ?? '';
  const message = (err as Error)?.message ?? String(err);
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new ClientError('CLIENT_CONNECT_FAILED', `connecting failed: ${message}`, { cause: err, retryable: true });
  }
  if (/^E[A-Z]+$/.test(code)) {
    // The connector reports its own failures as ClientErrors: a socket error here hit a connection the request
    // may already have reached the app on (ECONNRESET after the write), so it is not "connect failed".
    return new ClientError('CLIENT_RETRYABLE', `the connection failed (${code}) while the request was in flight; it was not re-sent`, { cause: err });
  }
  if (code.startsWith('ERR_SSL_')) {
    // A corrupt TLS record (track() destroyed the socket): the code only, no cause — OpenSSL's message is not ours.
    return new ClientError('CLIENT_RETRYABLE', `the connection failed (${transportErrorName(err as Error)}) while the request was in flight; it was not re-sent`);
  }
  if (code === 'UND_ERR_SOCKET' || code === 'UND_ERR_CLOSED') {
    return new ClientError('CLIENT_RETRYABLE', `the connection closed while the request was in flight (not re-sent): ${message}`, { cause: err });
  }
  if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') return new ClientError('CLIENT_BAD_OPTIONS', message, { cause: err });
  // No cause: undici's HTTPParserError keeps the raw response bytes from the fault on as `data`, and
  // util.inspect and pino print a cause's properties. Its message names the fault only.
  return new ClientError('CLIENT_PROTOCOL', `request failed: ${message}`);
}

/** The response body with undici's errors (a malformed chunk, a reset, the deadline) as ClientErrors. */
function typedBody(body: Readable, signal: AbortSignal): ReadableStream<Uint8Array> {
  const reader = (Readable.toWeb(body) as unknown as ReadableStream<Uint8Array>).getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) controller.close();
          else controller.enqueue(value);
        } catch (err) {
          controller.error(requestError(err, signal));
        }
      },
      cancel: (reason) => reader.cancel(reason),
    },
    { highWaterMark: 0 },
  );
}

export async function connectHttps(url: string, options: HttpsConnectOptions): Promise<Client> {
  if (options === null || typeof options !== 'object') throw new ClientError('CLIENT_BAD_OPTIONS', 'options: expected { pcrs, ... }');
  if (options.pcrs === undefined || options.pcrs === null) throw new ClientError('CLIENT_BAD_OPTIONS', 'pcrs: the PCR values to pin are required');
  for (const k of ['headers', 'primitives', 'WebSocket'] as const) {
    if (options[k] !== undefined) throw new ClientError('CLIENT_BAD_OPTIONS', `${k}: applies to ws:// and wss:// only, not https://`);
  }
  if (options.transport !== undefined && options.transport !== 'auto') {
    throw new ClientError('CLIENT_BAD_OPTIONS', `transport: ${String(options.transport)} applies to ws:// and wss:// only; https:// always streams over HTTP/1.1`);
  }
  const nonce: unknown = options.nonce;
  if (nonce !== undefined && typeof nonce !== 'boolean' && !(nonce instanceof Uint8Array)) {
    // It switches a check on: "true" from an environment variable must not leave it silently off.
    throw new ClientError('CLIENT_BAD_OPTIONS', `nonce: expected true, false or the nonce's bytes, found ${typeof nonce === 'string' ? JSON.stringify(nonce.slice(0, 20)) : typeof nonce}`);
  }
  const { host, port, origin } = parseHttpsUrl(url);
  const now = options.now ?? Date.now;
  const connectTimeoutMs = positiveOption('connectTimeoutMs', options.connectTimeoutMs, 30_000, 1);
  const requestTimeoutMs = positiveOption('requestTimeoutMs', options.requestTimeoutMs, 0);
  // One request at a time per connection (no pipelining), so the in-flight cap is the connection count.
  const maxInFlight = positiveOption('maxInFlight', options.maxInFlight, 8, 1);
  positiveOption('maxBufferedBytes', options.maxBufferedBytes, 0, 1); // TCP has flow control: unread bodies never pile up
  const reconnect = options.reconnect ?? true;
  const verify = {
    ...verifyOptions(options),
  };
  const dial = (signal?: AbortSignal): Promise<VerifiedTls> =>
    connectVerifiedTls({ host, port, verify: { ...verify, now: now() }, timeoutMs: connectTimeoutMs, ...(options.nonce === undefined ? {} : { nonce: options.nonce }), ...(signal === undefined ? {} : { signal }) });

  let last: VerifiedCertificate;
  let live = 0;
  let closed = false;
  const track = (v: VerifiedTls): TLSSocket => {
    last = v.verified;
    live++;
    v.socket.once('close', () => live--);
    // Node reports a corrupt TLS record as 'error' without closing the socket, and undici fails the request in
    // flight only on 'close' (it keeps the error for it): without this, the request waits for its timeout and
    // the pool keeps a dead connection.
    v.socket.on('error', () => {
      if (!v.socket.destroyed) v.socket.destroy();
    });
    return v.socket;
  };
  // The first connection: connect() fails with its attestation error, and undici gets this very socket.
  let spare: TLSSocket | null = track(await dial(options.signal));
  spare.on('error', () => {});

  const pool = new Pool(origin, {
    connections: reconnect ? maxInFlight : 1,
    pipelining: 1,
    connect: (_opts, callback) => {
      // undici loses a connection whose callback runs synchronously inside connect(): always call back later.
      const cb: typeof callback = (...args) => setImmediate(() => callback(...args));
      if (spare !== null && !spare.destroyed) {
        const s = spare;
        spare = null;
        cb(null, s);
        return;
      }
      spare = null;
      if (closed) {
        cb(new ClientError('CLIENT_CLOSED', 'the client was closed'), null);
        return;
      }
      if (!reconnect) {
        cb(new ClientError('CLIENT_CLOSED', 'the verified connection is gone and reconnect is off'), null);
        return;
      }
      dial().then(
        (v) => {
          const socket = track(v);
          // A socket the peer closed or reset before undici has it must be a connect failure: undici, handed a dead
          // socket, connects again and again with the request still queued, deaf to its abort signal and timeout.
          setImmediate(() => {
            if (socket.destroyed || !socket.writable) callback(new ClientError('CLIENT_CONNECT_FAILED', `${host}:${port} closed the connection right after the TLS handshake`, { retryable: true }), null);
            else callback(null, socket);
          });
        },
        (err: Error) => cb(err, null),
      );
    },
  });

  const fetch = async (input: string | URL | Request, init: ClientRequestInit = {}): Promise<Response> => {
    if (closed) throw new ClientError('CLIENT_CLOSED', 'the client was closed');
    if (init.transport !== undefined && init.transport !== 'auto') {
      throw new ClientError('CLIENT_BAD_OPTIONS', `transport: ${init.transport} applies to ws:// and wss:// only`);
    }
    const req = await normalizeRequest(input, init);
    const deadline = new Deadline(init.signal, init.timeoutMs ?? requestTimeoutMs);
    try {
      const body =
        req.body.kind === 'none'
          ? null
          : req.body.kind === 'bytes'
            ? Buffer.from(req.body.bytes.buffer, req.body.bytes.byteOffset, req.body.bytes.byteLength)
            : Readable.from(req.body.source);
      const res = await pool.request({ path: req.path, method: req.method, headers: req.headers.flat(), body, signal: deadline.signal });
      const head: ResponseHead = { status: res.statusCode, statusText: res.statusText ?? '', version: 'HTTP/1.1', headers: headerPairs(res.headers), headLength: 0 };
      const stream = typedBody(res.body, deadline.signal);
      res.body.once('close', () => deadline.done());
      res.body.once('end', () => deadline.done());
      try {
        return makeResponse(head, stream);
      } catch (err) {
        // Unread, the answer would hold its pool connection for good: after maxInFlight of them every request
        // queues forever (undici acts on an abort only once a request has a connection).
        res.body.destroy();
        throw err;
      }
    } catch (err) {
      deadline.done();
      throw requestError(err, deadline.signal);
    }
  };

  const upgrade = async (path: string | URL, opts: UpgradeOptions = {}): Promise<UpgradedStream> => {
    if (closed) throw new ClientError('CLIENT_CLOSED', 'the client was closed');
    const target = typeof path === 'string' ? path : path.pathname + path.search;
    const headers = headerList(opts.headers);
    const upgradeTo = headers.find(([k]) => k.toLowerCase() === 'upgrade')?.[1] ?? 'websocket';
    const deadline = new Deadline(opts.signal, opts.timeoutMs ?? 0);
    try {
      // dispatch rather than pool.upgrade(), which reports a refused upgrade without its status.
      const up = await new Promise<{ rawHeaders: Buffer[]; socket: Duplex }>((resolve, reject) => {
        let abortDispatch: ((err: Error) => void) | undefined;
        const onAbort = (): void => abortDispatch?.(abortError(deadline.signal));
        if (deadline.signal.aborted) {
          reject(abortError(deadline.signal));
          return;
        }
        deadline.signal.addEventListener('abort', onAbort, { once: true });
        const settle = (): void => deadline.signal.removeEventListener('abort', onAbort);
        pool.dispatch(
          {
            path: target,
            method: opts.method ?? 'GET',
            headers: headers.filter(([k]) => !['upgrade', 'connection'].includes(k.toLowerCase())).flat(),
            upgrade: upgradeTo,
          },
          {
            onConnect: (abort: (err?: Error) => void) => {
              abortDispatch = abort;
            },
            onHeaders: (statusCode: number) => {
              settle();
              reject(new ClientError('CLIENT_UPGRADE_FAILED', `the app answered ${statusCode}, not 101`, { status: statusCode }));
              abortDispatch?.(new ClientError('CLIENT_UPGRADE_FAILED', 'not upgraded'));
              return false;
            },
            onData: () => true,
            onComplete: () => {},
            onError: (err: Error) => {
              settle();
              reject(err);
            },
            onUpgrade: (_status: number, rawHeaders: Buffer[] | string[] | null, socket: Duplex) => {
              settle();
              resolve({ rawHeaders: (rawHeaders ?? []).map((h) => (typeof h === 'string' ? Buffer.from(h) : h)), socket });
            },
          } as unknown as Dispatcher.DispatchHandler,
        );
      });
      deadline.done();
      const socket = up.socket;
      const pairs: [string, string][] = [];
      for (let i = 0; i + 1 < up.rawHeaders.length; i += 2) pairs.push([up.rawHeaders[i]!.toString('latin1'), up.rawHeaders[i + 1]!.toString('latin1')]);
      const h = new Headers();
      for (const [k, v] of pairs) h.append(k, v);
      return {
        id: 0,
        status: 101,
        statusText: 'Switching Protocols',
        headers: h,
        head: { status: 101, statusText: 'Switching Protocols', version: 'HTTP/1.1', headers: pairs, headLength: 0 },
        readable: Readable.toWeb(socket) as unknown as ReadableStream<Uint8Array>,
        writable: new WritableStream<Uint8Array>({
          write: (chunk) => new Promise<void>((resolve, reject) => socket.write(chunk, (err) => (err ? reject(err) : resolve()))),
          close: () => void socket.end(),
          abort: () => void socket.destroy(),
        }),
        closeWrite: () => void socket.end(),
        close: () => void socket.destroy(),
      };
    } catch (err) {
      deadline.done();
      throw requestError(err, deadline.signal);
    }
  };

  return {
    url,
    host,
    get attestation(): AttestationDocument {
      return last.attestation;
    },
    get enclavePublicKey() {
      return last.attestation.publicKey;
    },
    features: [],
    get connected() {
      return !closed && live > 0;
    },
    ...clientVerbs(fetch),
    openStream: () => Promise.reject(new ClientError('CLIENT_BAD_OPTIONS', 'openStream needs the Noise channel (ws:// or wss://); over https:// use fetch or upgrade')),
    upgrade,
    close: async () => {
      if (closed) return;
      closed = true;
      spare?.destroy();
      await pool.destroy();
    },
  };
}

// The keep-alive fast path: an already-decrypted connection (TLS ingress, src/ingress/) served without the
// in-process http.Server. Requests are parsed here with the Data fast path's strict head parser
// (simple-request.ts) and run through the very same stages (the forwarder's `serve` handler), answered by
// KeepAliveResponse (one socket write per response in the usual case). What is taken:
//   - requests whose head parseSimpleHead accepts (HTTP/1.1, common methods, origin-form target, one Host,
//     strict header grammar, no Transfer-Encoding, no Upgrade), with no body or a Content-Length body of at
//     most MAX_FAST_BODY bytes (buffered here, then sent to the app from memory);
//   - pipelined requests: sent to the app one at a time, the next once the previous response is complete
//     (side effects in request order, as pipelining expects; one connection holds one app connection), and
//     answered in order. While a request is at the app, at most MAX_READ_AHEAD bytes of the following ones
//     are read ahead; past that, reading pauses until the response has gone out. Complete requests read ahead
//     and never sent (the connection closed first, or a drain) get a transaction record each (the handlers'
//     `abandoned`: CLIENT_GONE, or DRAINING) — so does one whose head came and whose body never completed —
//     the first MAX_ABANDONED_RECORDS of them; the rest one record together, with their count (256 KiB read
//     ahead holds ~10,000 small requests: one record each would let one client flood the log; abandoned-records.ts).
// The first request that is anything else — a chunked body, a larger body, `Expect: 100-continue` (the client
// may wait for the interim 100), an Upgrade, HTTP/1.0, a head the strict parser refuses (malformed ones
// included: the server decides what they mean and answers 400) — hands the connection, from that request
// on, to the http.Server through an in-process duplex pair (the forwarder's `fallback`), once every earlier
// response is sent. The connection stays there until it closes.
// Refused here, then the connection closes: a head larger than the cap (431), a request not complete within
// the headers timeout (408). An idle connection closes after the keep-alive timeout. A client from which no
// response byte leaves a full socket for longer than the send timeout is cut, as nginx's send_timeout: it must
// not hold its connection and the app connection behind its response forever (a slow reader is not cut).
// A request with `Connection: close` is the last one (what follows it is read and dropped: a client that resets
// while its answer is pending is noticed, and the app request aborted). drain(): no more requests; what is in flight is answered (the last
// response says `Connection: close` unless its head was already built while an earlier one was still being
// sent: then it keeps its keep-alive head, and the close after it is what tells the client), then the
// connection closes. Every close after a last answer (the fast path's or the http.Server's) lingers: the client's
// further bytes are read and dropped until its FIN or a bound, so that they do not reset the answer's tail away
// (src/transport/lingering-close.ts).
import type { Duplex } from 'node:stream';
import type { ForwardContext } from '../responder/forwarder.ts';
import type { PairEnd } from './duplex-pair.ts';
import { errorBody, statusText } from './exchange.ts';
import { connectionTokens } from './headers.ts';
import { KeepAliveResponse, type ResponseQueue } from './keep-alive-response.ts';
import { HEAD_END, parseSimpleHead, type SimpleHead } from './simple-request.ts';
import { recordAbandonedRequests, type AbandonedSummary } from './abandoned-records.ts';
import { closeLingering, DEFAULT_LINGER_TIME_MS, DEFAULT_LINGER_TIMEOUT_MS } from '../transport/lingering-close.ts';

/** Largest request body the fast path buffers; a larger declared body goes to the http.Server (streamed). */
export const MAX_FAST_BODY = 64 * 1024;
/** Bytes of pipelined requests read ahead while a request is at the app; past it, reading pauses. */
export const MAX_READ_AHEAD = 256 * 1024;
const BARE_LF_END = Buffer.from('\n\n', 'latin1');

export interface KeepAliveHandlers {
  /** Runs one request through the stages, answering into `res` (already queued in order). */
  serve(conn: KeepAliveConnection, head: SimpleHead, body: Buffer | null, res: KeepAliveResponse): void;
  /** A connection on the http.Server for the rest of this one; returns the session's end of the pair. */
  fallback(conn: KeepAliveConnection): PairEnd;
  /** A request refused here (431, 408), for the transaction log. */
  rejected(conn: KeepAliveConnection, status: number, code: string): void;
  /**
   * A request whose head was read (its body complete or not) and that was never sent to the app, for the
   * transaction log: `code` says why
   * (CLIENT_GONE: the connection closed first; DRAINING: the agent stopped taking requests, drain()).
   * `summary`: the requests its record stands for (itself; past MAX_ABANDONED_RECORDS, it and those after it).
   */
  abandoned(conn: KeepAliveConnection, head: SimpleHead, code: AbandonedCode, summary: AbandonedSummary): void;
}

/** Why a request read ahead was never sent to the app (the trx record's `error`, trx-log.ts). */
export type AbandonedCode = 'CLIENT_GONE' | 'DRAINING';

export interface KeepAliveLimits {
  /** Largest request head (request line and headers, CRLFCRLF included) → 431. */
  maxHeaderBytes: number;
  /** Time from a request's first byte to its last → 408. */
  headersTimeoutMs: number;
  /** Idle time after which the connection closes. */
  keepAliveTimeoutMs: number;
  /** Longest time no response byte leaves a full socket (the client stopped reading) → the connection is cut. */
  sendTimeoutMs: number;
  /** Lingering close (lingering-close.ts): no client byte for this long → closed (default 5 s). */
  lingerTimeoutMs?: number;
  /** Lingering close: closed this long after the last answer went out at the latest (default 30 s). */
  lingerTimeMs?: number;
}

/** What the connection's owner (the TLS ingress) may ask of it. */
export interface AttachedConnection {
  /** Answers what is in flight, takes no new request, then closes; closes at once when idle. */
  drain(): void;
}

type Mode = 'fast' | 'waiting-fallback' | 'relay' | 'closing';

/**
 * The timeouts of every keep-alive connection of a forwarder, checked by one sweep (no timer per request):
 * connections mark times with the sweep's clock, read once per sweep.
 */
export class KeepAliveSweep {
  now = performance.now();
  readonly everyMs: number;
  readonly #conns = new Set<KeepAliveConnection>();
  #timer: NodeJS.Timeout | null = null;

  constructor(limits: KeepAliveLimits) {
    this.everyMs = Math.max(50, Math.min(1000, Math.floor(Math.min(limits.headersTimeoutMs, limits.keepAliveTimeoutMs, limits.sendTimeoutMs) / 4)));
  }

  add(c: KeepAliveConnection): void {
    this.#conns.add(c);
    if (this.#timer === null) {
      this.now = performance.now();
      this.#timer = setInterval(() => this.#tick(), this.everyMs);
      this.#timer.unref();
    }
  }

  delete(c: KeepAliveConnection): void {
    this.#conns.delete(c);
    if (this.#conns.size === 0 && this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
  }

  #tick(): void {
    this.now = performance.now();
    for (const c of this.#conns) c.checkTimers(this.now);
  }
}

export class KeepAliveConnection implements ResponseQueue, AttachedConnection {
  readonly socket: Duplex;
  readonly ctx: ForwardContext;
  readonly #handlers: KeepAliveHandlers;
  readonly #limits: KeepAliveLimits;
  readonly #sweep: KeepAliveSweep;
  #mode: Mode = 'fast';
  /** Responses in request order; the first is the one being sent. */
  #queue: KeepAliveResponse[] = [];
  /** Bytes received and not yet parsed (a view of a received chunk, or of #store). */
  #buf: Buffer | null = null;
  /** Where received bytes are gathered when a request spans chunks (grown by doubling). */
  #store: Buffer | null = null;
  /** Where to resume looking for the end of the head in #buf. */
  #scanFrom = 0;
  /** The head of a request whose body is still arriving. */
  #pendingHead: SimpleHead | null = null;
  #readingPaused = false;
  #parsing = false;
  #clientEnded = false;
  #draining = false;
  /** Sweep-clock times: the current partial request's first byte; the moment the connection went idle. */
  #requestSince = 0;
  #idleSince: number;
  /** Sweep-clock time the socket was last seen full with no byte leaving (set when a write returns false); null: drained. */
  #sendStalledSince: number | null = null;
  /** #sentBytes() when the sweep last looked, to tell a slow reader from one that stopped. */
  #sentAtLastLook = -1;
  #relay: PairEnd | null = null;
  /** #closeSocket ran: the socket is ending (and is destroyed once flushed, or cut). */
  #socketClosing = false;
  /** Relayed requests (http.Server path) not yet answered, and whether the relay was upgraded (a tunnel). */
  #relayInFlight = 0;
  #relayUpgraded = false;
  readonly #onData = (chunk: Buffer): void => this.#received(chunk);

  constructor(socket: Duplex, ctx: ForwardContext, handlers: KeepAliveHandlers, limits: KeepAliveLimits, sweep: KeepAliveSweep) {
    this.socket = socket;
    this.ctx = ctx;
    this.#handlers = handlers;
    this.#limits = limits;
    this.#sweep = sweep;
    // Not sweep.now: the sweep's clock stands still while it has no connection.
    this.#idleSince = performance.now();
    // The client's EOF ends reading only: answers to requests already received still go out (then we close).
    (socket as { allowHalfOpen: boolean }).allowHalfOpen = true;
    // Each response leaves in one write: Nagle would hold it for the ACK of the previous one (as Node's
    // http.Server, which sets it on its connections).
    (socket as { setNoDelay?: (on: boolean) => unknown }).setNoDelay?.(true);
    socket.on('data', this.#onData);
    socket.on('end', () => this.#ended());
    socket.on('drain', () => this.#drained());
    socket.on('error', () => socket.destroy());
    socket.once('close', () => this.#closed());
    sweep.add(this);
  }

  destroy(): void {
    this.socket.destroy();
  }

  drain(): void {
    if (this.#draining) return;
    this.#draining = true;
    if (this.#mode === 'relay') {
      if (this.#relayInFlight === 0 && !this.#relayUpgraded) this.#endRelay();
      return;
    }
    // Only what is in flight is answered. Requests read ahead behind it are dropped, each with its record (the
    // client learns from the close that they were not served); bytes of one not yet complete are dropped.
    const readAhead = this.#mode === 'fast' ? this.#buf : null;
    this.#buf = null;
    this.#pendingHead = null;
    this.#enterClosing();
    if (readAhead !== null) this.#recordReadAhead(readAhead, 'DRAINING');
  }

  /** The forwarder's http.Server started answering a request relayed from this connection. */
  relayRequestStarted(): { keepAlive: boolean } {
    this.#relayInFlight++;
    return { keepAlive: !this.#draining };
  }

  relayRequestDone(): void {
    this.#relayInFlight--;
    if (this.#draining && this.#relayInFlight === 0 && !this.#relayUpgraded) this.#endRelay();
  }

  /** A relayed request became a tunnel (WebSocket): a drain waits for it to end (or for the drain timeout). */
  relayUpgraded(): void {
    this.#relayUpgraded = true;
  }

  closesAfter(res: KeepAliveResponse): boolean {
    return this.#mode === 'closing' && res === this.#queue[this.#queue.length - 1];
  }

  progressed(res: KeepAliveResponse): boolean {
    if (res !== this.#queue[0]) return true;
    const socket = this.socket;
    let ok = true;
    let corked = false;
    for (;;) {
      const cur = this.#queue[0];
      if (cur === undefined) break;
      const bytes = cur.take();
      if (bytes !== null && !socket.destroyed) {
        // Several finished responses in a row (pipelining): one write for all of them.
        if (!corked && cur.writableFinished && this.#queue.length > 1) {
          socket.cork();
          corked = true;
        }
        ok = socket.write(bytes);
        if (!ok) this.#sendStalledSince ??= this.#sweep.now;
      }
      if (!cur.writableFinished) break;
      this.#queue.shift();
      if (cur.closeAfter) {
        this.#mode = 'closing';
        for (const r of this.#queue.splice(0)) r.connectionClosed();
        break;
      }
      const next = this.#queue[0];
      if (next !== undefined) {
        next.active = true;
        next.readMore();
      }
    }
    if (corked) socket.uncork();
    if (this.#queue.length === 0) this.#idle();
    else if (this.#readingPaused && this.#mode === 'fast') this.#parse();
    return ok;
  }

  needsDrain(): boolean {
    return (this.socket as { writableNeedDrain?: boolean }).writableNeedDrain === true;
  }

  aborted(res: KeepAliveResponse): void {
    // A response cut after its head (the app failed mid-body) cannot be followed by another on this connection.
    if (this.#queue.includes(res)) this.socket.destroy();
  }

  /** Called by the sweep: send timeout, headers timeout (408) and keep-alive timeout. */
  checkTimers(now: number): void {
    // The sweep's clock moves once per tick: a mark may be up to one tick old, so one tick is added.
    const slack = this.#sweep.everyMs;
    if (this.#sendStalledSince !== null) {
      // Stalled means nothing left the buffer since the last look: a client that reads slowly is not cut.
      const sent = this.#sentBytes();
      if (sent !== this.#sentAtLastLook) {
        this.#sentAtLastLook = sent;
        this.#sendStalledSince = now;
      } else if (now - this.#sendStalledSince > this.#limits.sendTimeoutMs + slack) {
        // The responses in flight end with the connection (#closed), and with them their app requests.
        this.socket.destroy();
        return;
      }
    }
    if (this.#mode !== 'fast' || this.#queue.length > 0) return;
    if (this.#buf !== null) {
      if (now - this.#requestSince > this.#limits.headersTimeoutMs + slack) this.#refuse(408, 'HTTP_REQUEST_TIMEOUT', statusText(408));
    } else if (now - this.#idleSince > this.#limits.keepAliveTimeoutMs + slack) {
      this.#enterClosing();
    }
  }

  #received(chunk: Buffer): void {
    // Closing: nothing more is read. Waiting for the fallback: kept for the server (reading is paused).
    if (this.#mode === 'closing' || this.#mode === 'relay') return;
    if (this.#buf === null) this.#requestSince = this.#sweep.now;
    this.#append(chunk);
    if (this.#mode === 'fast') this.#parse();
  }

  #append(chunk: Buffer): void {
    const buf = this.#buf;
    if (buf === null) {
      this.#buf = chunk;
      return;
    }
    const need = buf.length + chunk.length;
    const store = this.#store;
    const at = store !== null && buf.buffer === store.buffer ? buf.byteOffset - store.byteOffset : -1;
    if (at >= 0 && at + need <= store!.length) {
      chunk.copy(store!, at + buf.length);
      this.#buf = store!.subarray(at, at + need);
      return;
    }
    // A store of its own (not a pooled slice), so that `buffer` identifies it; grown by doubling, by at most
    // MAX_FAST_BODY at a time past that (read-ahead stops near MAX_READ_AHEAD: no need for twice as much).
    const next = Buffer.allocUnsafeSlow(Math.max(4096, Math.min(2 * need, need + MAX_FAST_BODY)));
    buf.copy(next, 0);
    chunk.copy(next, buf.length);
    this.#store = next;
    this.#buf = next.subarray(0, need);
  }

  #parse(): void {
    if (this.#parsing) return;
    this.#parsing = true;
    try {
      this.#parseLoop();
    } finally {
      this.#parsing = false;
    }
  }

  #parseLoop(): void {
    const max = this.#limits.maxHeaderBytes;
    for (;;) {
      if (this.#mode !== 'fast') return;
      const buf = this.#buf;
      if (buf === null) {
        if (this.#clientEnded) this.#enterClosing();
        else this.#resumeReading();
        return;
      }
      const needDrain = this.needsDrain();
      if (this.#queue.length > 0 || needDrain) {
        // One request at the app at a time: the next is taken once this response has gone out (#idle).
        if (needDrain || buf.length >= MAX_READ_AHEAD) this.#pauseReading();
        else if (!this.#clientEnded) this.#resumeReading();
        return;
      }
      let head = this.#pendingHead;
      if (head === null) {
        const end = buf.indexOf(HEAD_END, this.#scanFrom);
        if (end < 0 || end + HEAD_END.length > max) {
          if (buf.length >= max) {
            this.#refuse(431, 'HTTP_HEADERS_TOO_LARGE', statusText(431));
            return;
          }
          // Bare LF line ends: not ours to read (the server's parser decides what they mean).
          if (buf.indexOf(BARE_LF_END, this.#scanFrom) >= 0) {
            this.#fallback();
            return;
          }
          this.#scanFrom = Math.max(0, buf.length - (HEAD_END.length - 1));
          this.#needMore();
          return;
        }
        head = parseSimpleHead(buf, end);
        if (head === null || head.expectContinue || (head.contentLength ?? 0) > MAX_FAST_BODY) {
          this.#fallback();
          return;
        }
        this.#pendingHead = head;
      }
      const bodyEnd = head.bodyStart + (head.contentLength ?? 0);
      if (buf.length < bodyEnd) {
        this.#needMore();
        return;
      }
      this.#pendingHead = null;
      this.#scanFrom = 0;
      let body = bodyEnd > head.bodyStart ? buf.subarray(head.bodyStart, bodyEnd) : null;
      this.#buf = bodyEnd === buf.length ? null : buf.subarray(bodyEnd);
      // A body in the store with read-ahead after it: a copy, so that the store the read-ahead grows into is
      // not also held by the request at the app (at most MAX_FAST_BODY copied, pipelining only).
      if (body !== null && this.#buf !== null && this.#store !== null && body.buffer === this.#store.buffer) body = Buffer.from(body);
      this.#requestSince = this.#sweep.now;
      if (connectionTokens(head.rawHeaders).has('close')) {
        // The last request: whatever follows it is not used.
        this.#buf = null;
        this.#mode = 'closing';
        this.#readToDrop();
      }
      const res = new KeepAliveResponse(this, head.method);
      res.active = this.#queue.length === 0;
      this.#queue.push(res);
      this.#handlers.serve(this, head, body, res);
    }
  }

  /**
   * The request in #buf is incomplete: read on, unless the client has ended (then it never completes, and one
   * whose head was complete gets its record).
   */
  #needMore(): void {
    if (!this.#clientEnded) {
      this.#resumeReading();
      return;
    }
    const buf = this.#buf;
    if (buf !== null) this.#recordReadAhead(buf, 'CLIENT_GONE');
    this.#buf = null;
    this.#pendingHead = null;
    this.#enterClosing();
  }

  /** Answers `status` after what is in flight, then closes (431, 408: the request is not read further). */
  #refuse(status: number, code: string, message: string): void {
    this.#buf = null;
    this.#pendingHead = null;
    this.#mode = 'closing';
    this.#readToDrop();
    const res = new KeepAliveResponse(this, 'GET');
    res.active = this.#queue.length === 0;
    this.#queue.push(res);
    const body = Buffer.from(errorBody(code, message, ''), 'utf8');
    res.writeHead(status, ['Content-Type', 'application/json', 'Content-Length', String(body.length)]);
    res.end(body);
    this.#handlers.rejected(this, status, code);
  }

  /** From the request at the start of #buf on, the http.Server serves the connection (after what is in flight). */
  #fallback(): void {
    this.#mode = 'waiting-fallback';
    this.#pendingHead = null;
    this.#pauseReading();
    if (this.#queue.length === 0) this.#startRelay();
  }

  #startRelay(): void {
    this.#mode = 'relay';
    const socket = this.socket;
    socket.off('data', this.#onData);
    const outer = this.#handlers.fallback(this);
    this.#relay = outer;
    outer.on('error', () => {});
    // The server cut its side (a reset, not an end): so is the client's connection. A clean end reaches the
    // client through the pipe (socket.end(), after every byte before it); the socket is destroyed only once that
    // is flushed — destroying it at once would drop the last response's queued bytes, and leaving it would keep
    // a half-open client's connection (and its slot) forever.
    outer.once('end', () => {
      if (outer.peerAborted) socket.destroy();
      else this.#closeSocket();
    });
    outer.once('close', () => {
      if (outer.peerAborted || !outer.readableEnded) socket.destroy();
    });
    const rest = this.#buf;
    this.#buf = null;
    if (rest !== null) outer.write(rest);
    if (this.#clientEnded) outer.end();
    else socket.pipe(outer);
    outer.pipe(socket);
    this.#readingPaused = false;
  }

  /**
   * EOF to the server's side: it closes the connection once its answers are out, and that end reaches the
   * client through the pipe, after every byte before it.
   */
  #endRelay(): void {
    const outer = this.#relay;
    if (outer === null || outer.writableEnded) return;
    this.socket.unpipe(outer);
    outer.end();
  }

  #enterClosing(): void {
    if (this.#mode === 'relay') return;
    this.#mode = 'closing';
    this.#readToDrop();
    if (this.#queue.length === 0) this.#closeSocket();
  }

  #idle(): void {
    this.#idleSince = this.#sweep.now;
    // A request that began arriving while the previous one was at the app: its time starts now (the app's is not
    // the client's).
    if (this.#buf !== null) this.#requestSince = this.#sweep.now;
    if (this.#mode === 'closing') this.#closeSocket();
    else if (this.#mode === 'waiting-fallback') this.#startRelay();
    else this.#parse();
  }

  #closeSocket(): void {
    const socket = this.socket;
    if (socket.destroyed || this.#socketClosing) return;
    this.#socketClosing = true;
    // What the client sends from now on is dropped (lingering-close.ts), neither parsed nor relayed.
    socket.off('data', this.#onData);
    const relay = this.#relay;
    if (relay !== null) {
      socket.unpipe(relay);
      // And the server's side hears so now (EOF), not when the linger ends: a tunnel the app ended closes its
      // app connection and gets its record at once, as when the socket was destroyed once flushed.
      relay.end();
    }
    this.#readingPaused = false;
    // End (TLS close_notify, FIN) once everything written is flushed — cut after the keep-alive time when the
    // client does not read what is left (it must not hold the slot) — then linger until the client's FIN.
    const limits = this.#limits;
    closeLingering(socket, {
      flushTimeoutMs: limits.keepAliveTimeoutMs,
      lingerTimeoutMs: limits.lingerTimeoutMs ?? DEFAULT_LINGER_TIMEOUT_MS,
      lingerTimeMs: limits.lingerTimeMs ?? DEFAULT_LINGER_TIME_MS,
    });
  }

  #ended(): void {
    this.#clientEnded = true;
    if (this.#mode === 'fast') this.#parse();
  }

  /** Bytes the socket has passed on (written, less what it still buffers). */
  #sentBytes(): number {
    const s = this.socket as { bytesWritten?: number; writableLength: number };
    return (s.bytesWritten ?? 0) - s.writableLength;
  }

  #drained(): void {
    this.#sendStalledSince = null;
    this.#queue[0]?.readMore();
    if (this.#mode === 'fast') this.#parse();
  }

  #closed(): void {
    this.#sweep.delete(this);
    const readAhead = this.#mode === 'fast' ? this.#buf : null;
    this.#buf = null;
    this.#store = null;
    for (const r of this.#queue.splice(0)) r.connectionClosed();
    if (readAhead !== null) this.#recordReadAhead(readAhead, 'CLIENT_GONE');
    this.#relay?.destroy();
  }

  /**
   * The requests read ahead (`buf`) that will never be sent: recorded, the first MAX_ABANDONED_RECORDS each and
   * the rest in one record with their count (abandoned-records.ts).
   */
  #recordReadAhead(buf: Buffer, code: AbandonedCode): void {
    const outcome = { status: 0, error: code };
    recordAbandonedRequests(
      this.#readAheadHeads(buf),
      () => outcome,
      (head, summary) => this.#handlers.abandoned(this, head, code, summary),
    );
  }

  /**
   * The heads of the requests in `buf` that are complete, their bodies complete or not (as on the http.Server
   * path, which takes a request in once its head is parsed). Up to the first head incomplete, or that this
   * parser would not have taken.
   */
  *#readAheadHeads(buf: Buffer): Generator<SimpleHead> {
    for (;;) {
      const end = buf.indexOf(HEAD_END);
      if (end < 0 || end + HEAD_END.length > this.#limits.maxHeaderBytes) return;
      const head = parseSimpleHead(buf, end);
      if (head === null) return;
      yield head;
      const bodyEnd = head.bodyStart + (head.contentLength ?? 0);
      if (bodyEnd >= buf.length || connectionTokens(head.rawHeaders).has('close')) return;
      buf = buf.subarray(bodyEnd);
    }
  }

  /**
   * Closing: nothing the client sends from now on is used (#received drops it), but the socket is still read. A
   * paused socket stops reading once its buffer is full, and then a reset goes unseen while the last answers are
   * pending: their app requests would run to the app timeout for a client long gone.
   */
  #readToDrop(): void {
    this.#resumeReading();
  }

  #pauseReading(): void {
    if (this.#readingPaused) return;
    this.#readingPaused = true;
    this.socket.pause();
  }

  #resumeReading(): void {
    if (!this.#readingPaused) return;
    this.#readingPaused = false;
    this.socket.resume();
  }
}

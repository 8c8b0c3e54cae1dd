/**
 * One bridged connection: a WebSocket from a client ⇄ one byte stream to the agent.
 *
 * The bridge is protocol-agnostic (WIRE.md §1) with one exception it must honour (§2): the client reads
 * **exactly one** WS frame as hs2, so the agent's first 48 bytes go out as one binary frame with nothing
 * appended. After that, agent bytes are forwarded in whatever grouping they arrive. Client frames are written
 * to the agent as-is, through a FrameWriter (≤ 32768 bytes per write, one write at a time).
 *
 * Backpressure both ways: the agent stream is paused while too many bytes wait to go out on the WebSocket (and
 * read again as soon as the client takes them back to the mark), and the WebSocket is paused while too many bytes
 * wait to be written to the agent. Nothing here ever looks at
 * payload bytes beyond counting them, and nothing logs them.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import { connectStream, describeTarget, type StreamTarget } from '../transport/connect.ts';
import { encodeProxyV2 } from '../transport/proxy-v2.ts';
import { FrameWriter } from '../wire/frame-writer.ts';
import { CloseCode } from './close-codes.ts';

/** Bytes of the Noise hs2 the client reads as one WS frame. */
export const HS2_LEN = 48;

export interface BridgeConnectionOptions {
  target: StreamTarget;
  proxyProtocol: boolean;
  handshakeTimeoutMs: number;
  /** 0 disables. */
  idleTimeoutMs: number;
  /** Bytes queued toward the client that the client takes none of for this long close the connection. */
  writeStallTimeoutMs: number;
  /** Pause the producing side once this many bytes wait in either direction. */
  highWaterMark: number;
  logger: Logger;
}

const WS_OPEN = 1;

export class BridgeConnection {
  readonly #ws: WebSocket;
  readonly #opts: BridgeConnectionOptions;
  readonly #log: Logger;
  readonly #remote: string;
  readonly #proxyInfo: { source: { address: string; port: number }; destination: { address: string; port: number } };
  readonly #startedAt = Date.now();
  #agent: Duplex | null = null;
  #writer: FrameWriter | null = null;
  /** Client messages received before the agent stream is connected (the WS is paused meanwhile). */
  #early: Buffer[] = [];
  /** Agent bytes buffered until the 48-byte hs2 is complete; null once it has been sent. */
  #hs: Buffer[] | null = [];
  #hsLen = 0;
  #bytesIn = 0; // client → agent
  #bytesOut = 0; // agent → client
  #wsPending = 0; // bytes handed to ws.send whose callback has not fired
  #agentPaused = false;
  #wsPaused = false;
  #lastWrite: Promise<void> = Promise.resolve();
  #lastActivity = Date.now();
  #handshakeTimer: NodeJS.Timeout | null = null;
  #idleTimer: NodeJS.Timeout | null = null;
  /** Armed while bytes wait for the client; refreshed whenever a send completes. */
  #stallTimer: NodeJS.Timeout | null = null;
  #finished = false;

  constructor(ws: WebSocket, req: IncomingMessage, opts: BridgeConnectionOptions) {
    this.#ws = ws;
    this.#opts = opts;
    const sock = req.socket;
    const remoteAddress = unmapIPv4(sock.remoteAddress ?? '0.0.0.0');
    const remotePort = sock.remotePort ?? 0;
    this.#remote = remoteAddress.includes(':') ? `[${remoteAddress}]:${remotePort}` : `${remoteAddress}:${remotePort}`;
    this.#proxyInfo = {
      source: { address: remoteAddress, port: remotePort },
      destination: { address: unmapIPv4(sock.localAddress ?? '0.0.0.0'), port: sock.localPort ?? 0 },
    };
    this.#log = opts.logger.child({ remote: this.#remote });
  }

  get remote(): string {
    return this.#remote;
  }

  start(): void {
    const ws = this.#ws;
    this.#log.info({ event: 'open', agent: describeTarget(this.#opts.target) }, 'bridge connection open');
    ws.pause();
    ws.on('message', (data, isBinary) => this.#onClientMessage(data, isBinary));
    ws.on('close', () => this.#onClientClose());
    ws.on('error', (err) => this.#log.debug({ err: err.message }, 'websocket error'));
    this.#handshakeTimer = setTimeout(() => this.finish(CloseCode.HANDSHAKE_TIMEOUT, 'handshake timeout'), this.#opts.handshakeTimeoutMs);
    if (this.#opts.idleTimeoutMs > 0) this.#armIdle(this.#opts.idleTimeoutMs);
    connectStream(this.#opts.target, { timeoutMs: this.#opts.handshakeTimeoutMs }).then(
      (agent) => this.#onAgentConnected(agent),
      (err: Error) => {
        this.#log.warn({ err: err.message }, 'agent unreachable');
        this.finish(CloseCode.BAD_GATEWAY, 'agent unreachable');
      },
    );
  }

  #onAgentConnected(agent: Duplex): void {
    if (this.#finished) {
      agent.destroy();
      return;
    }
    this.#agent = agent;
    const writer = new FrameWriter(agent);
    this.#writer = writer;
    agent.on('data', (chunk: Buffer) => this.#onAgentData(chunk));
    agent.on('end', () => this.finish(CloseCode.AGENT_CLOSED, this.#hs === null ? 'agent closed' : 'agent closed before the handshake reply'));
    agent.on('error', (err: Error) => {
      this.#log.debug({ err: err.message }, 'agent stream error');
      this.finish(CloseCode.AGENT_ERROR, 'agent stream error');
    });
    agent.on('close', () => this.finish(CloseCode.AGENT_ERROR, 'agent stream closed'));
    if (this.#opts.proxyProtocol) this.#write(encodeProxyV2(this.#proxyInfo));
    for (const msg of this.#early) this.#write(msg);
    this.#early = [];
    this.#resumeClientIfDrained();
  }

  // ---- client → agent ------------------------------------------------------------------------------------------

  #onClientMessage(data: RawData, isBinary: boolean): void {
    if (this.#finished) return;
    if (!isBinary) {
      this.finish(CloseCode.UNSUPPORTED_DATA, 'binary frames only');
      return;
    }
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    this.#bytesIn += buf.length;
    this.#lastActivity = Date.now();
    if (this.#writer === null) {
      this.#early.push(buf);
      return;
    }
    this.#write(buf);
  }

  #write(bytes: Uint8Array): void {
    const writer = this.#writer!;
    this.#lastWrite = writer.writeRaw(bytes).then(
      () => this.#resumeClientIfDrained(),
      () => {}, // the agent stream's 'error'/'close' handlers end the connection
    );
    if (writer.queuedBytes > this.#opts.highWaterMark && !this.#wsPaused) {
      this.#wsPaused = true;
      this.#ws.pause();
    }
  }

  #resumeClientIfDrained(): void {
    if (this.#finished || this.#writer === null) return;
    if (this.#writer.queuedBytes <= this.#opts.highWaterMark / 4) {
      this.#wsPaused = false;
      this.#ws.resume();
    } else {
      this.#wsPaused = true; // the writer drains and calls back here
    }
  }

  // ---- agent → client ------------------------------------------------------------------------------------------

  #onAgentData(chunk: Buffer): void {
    if (this.#finished) return;
    this.#bytesOut += chunk.length;
    this.#lastActivity = Date.now();
    if (this.#hs !== null) {
      this.#hs.push(chunk);
      this.#hsLen += chunk.length;
      if (this.#hsLen < HS2_LEN) return;
      const all = Buffer.concat(this.#hs, this.#hsLen);
      this.#hs = null;
      if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
      this.#handshakeTimer = null;
      this.#send(all.subarray(0, HS2_LEN)); // hs2: one frame, nothing appended
      if (all.length > HS2_LEN) this.#send(all.subarray(HS2_LEN));
      return;
    }
    this.#send(chunk);
  }

  #send(bytes: Buffer): void {
    const len = bytes.length;
    this.#wsPending += len;
    // A client that keeps the connection alive (any byte resets the idle timer) but never reads: no send
    // completes, and the connection is cut after writeStallTimeoutMs.
    if (this.#stallTimer === null) this.#stallTimer = setTimeout(this.#onStall, this.#opts.writeStallTimeoutMs);
    else if (this.#wsPending === len) this.#stallTimer.refresh();
    this.#ws.send(bytes, { binary: true }, () => {
      this.#wsPending -= len;
      if (this.#wsPending > 0) this.#stallTimer?.refresh(); // progress
      // Read on as soon as the client has taken the queue back to the mark, not down to a fraction of it: the
      // agent closes a session none of whose writes completes for its write-stall timeout (30 s), and they
      // complete only as we read. Waiting for a quarter (768 KiB to read at the default mark) held the agent
      // unread for over 30 s at a time under a client reading ~26 KB/s or less, which lost its session while
      // it was still reading. Now each read of the client lets about as much in from the agent.
      if (this.#agentPaused && this.#wsPending <= this.#opts.highWaterMark && !this.#finished) {
        this.#agentPaused = false;
        this.#agent?.resume();
      }
    });
    if (this.#wsPending > this.#opts.highWaterMark && !this.#agentPaused) {
      this.#agentPaused = true;
      this.#agent?.pause();
    }
  }

  // ---- timers and teardown -------------------------------------------------------------------------------------

  #armIdle(ms: number): void {
    this.#idleTimer = setTimeout(() => {
      const idle = Date.now() - this.#lastActivity;
      if (idle >= this.#opts.idleTimeoutMs) this.finish(CloseCode.IDLE_TIMEOUT, 'idle timeout');
      else this.#armIdle(this.#opts.idleTimeoutMs - idle);
    }, ms);
  }

  readonly #onStall = (): void => {
    if (this.#finished || this.#wsPending === 0) return;
    this.#finished = true;
    this.#clearTimers();
    this.#logClose('write stall', CloseCode.WRITE_STALL);
    this.#agent?.destroy();
    this.#ws.terminate();
  };

  #clearTimers(): void {
    if (this.#handshakeTimer) clearTimeout(this.#handshakeTimer);
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    if (this.#stallTimer) clearTimeout(this.#stallTimer);
    this.#handshakeTimer = this.#idleTimer = this.#stallTimer = null;
  }

  /** The client went away: deliver what it already sent (bounded), then drop the agent stream. */
  #onClientClose(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#clearTimers();
    this.#logClose('client closed');
    const agent = this.#agent;
    if (agent === null) return; // still connecting: #onAgentConnected destroys it
    const grace = setTimeout(() => agent.destroy(), 2000);
    void this.#lastWrite.finally(() => {
      clearTimeout(grace);
      agent.destroy();
    });
  }

  /** Ends the connection from the bridge's side: close the WebSocket with `code` and drop the agent stream. */
  finish(code: number, reason: string): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#clearTimers();
    this.#logClose(reason, code);
    this.#agent?.destroy();
    if (this.#ws.readyState === WS_OPEN) {
      this.#ws.resume(); // a paused socket would never read the client's close frame
      this.#ws.close(code, reason);
    }
    // A client that never completes the close handshake is cut off by ws itself (30 s) or by Bridge.close().
  }

  /** Drops the socket without a close handshake (shutdown of a client that does not answer). */
  terminate(): void {
    this.#ws.terminate();
  }

  #logClose(reason: string, code?: number): void {
    this.#log.info(
      { event: 'close', reason, code, bytesIn: this.#bytesIn, bytesOut: this.#bytesOut, durationMs: Date.now() - this.#startedAt },
      'bridge connection closed',
    );
  }
}

/** "::ffff:1.2.3.4" (an IPv4 client on a dual-stack socket) → "1.2.3.4". */
function unmapIPv4(address: string): string {
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address) ? address.slice(7) : address;
}

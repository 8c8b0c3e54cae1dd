// The clock channel: one long-lived connection the host bridge opens to the agent's ops port
// (`GET /clock` with `Upgrade: enclave-clock`), over which the AGENT asks for the time and the HOST answers.
// Newline-delimited JSON, one small object per line:
//   agent → host  {"id":7}
//   host  → agent {"id":7,"host_ms":1733500000123.4}
// The host's answer is trusted for nothing but a drift figure (clock.ts says what the agent does with it).
// A line longer than MAX_LINE, bad JSON or an unknown id closes the channel.
import type { Duplex } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { OpsError } from './errors.ts';

export const CLOCK_UPGRADE = 'enclave-clock';
export const CLOCK_PATH = '/clock';
const MAX_LINE = 256;

/** Splits a stream into lines of at most MAX_LINE bytes; `onLine` false or a longer line closes it. */
function readLines(sock: Duplex, onLine: (line: string) => boolean): void {
  let buf = '';
  // Not sock.setEncoding(): a socket taken over from an HTTP server (Upgrade) refuses it.
  const decoder = new StringDecoder('utf8');
  sock.on('data', (chunk: Buffer) => {
    buf += decoder.write(chunk);
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!onLine(line)) {
        sock.destroy();
        return;
      }
    }
    if (buf.length > MAX_LINE) sock.destroy();
  });
}

/** One time sample: the host's clock, bracketed by the agent's wall clock and monotonic clock. */
export interface TimeSample {
  hostMs: number;
  /** Agent wall clock (Date.now()) when the request was sent. */
  sentWallMs: number;
  /** Round trip, monotonic (performance.now()). */
  rttMs: number;
}

/** The agent's side: the latest channel the host opened (an older one is closed), and time requests over it. */
export class ClockChannelHub {
  #sock: Duplex | null = null;
  #nextId = 1;
  readonly #pending = new Map<number, (hostMs: number | OpsError) => void>();

  /** `onAttach`: a host channel was just attached (the clock monitor samples at once instead of within a minute). */
  constructor(private readonly onAttach?: () => void) {}

  /** True while a host channel is attached. */
  get attached(): boolean {
    return this.#sock !== null;
  }

  attach(sock: Duplex): void {
    this.#sock?.destroy();
    this.#sock = sock;
    sock.on('error', () => {});
    sock.once('close', () => {
      if (this.#sock !== sock) return;
      this.#sock = null;
      this.#failAll(new OpsError('OPS_CLOCK_CLOSED', 'the host closed the clock channel'));
    });
    readLines(sock, (line) => {
      const msg = parseJson(line) as { id?: unknown; host_ms?: unknown } | null;
      const resolve = msg !== null && typeof msg.id === 'number' ? this.#pending.get(msg.id) : undefined;
      if (resolve === undefined || typeof msg!.host_ms !== 'number' || !Number.isFinite(msg!.host_ms) || msg!.host_ms <= 0) return false;
      this.#pending.delete(msg!.id as number);
      resolve(msg!.host_ms);
      return true;
    });
    this.onAttach?.();
  }

  /** Asks the host for its time; rejects with OPS_CLOCK_* when there is no channel, it closes, or `timeoutMs` passes. */
  request(timeoutMs: number): Promise<TimeSample> {
    const sock = this.#sock;
    if (sock === null) return Promise.reject(new OpsError('OPS_CLOCK_NO_CHANNEL', 'no clock channel: the host bridge has not connected to the ops port'));
    const id = this.#nextId++;
    const sentWallMs = Date.now();
    const sent = performance.now();
    return new Promise<TimeSample>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new OpsError('OPS_CLOCK_TIMEOUT', `the host did not answer a time request within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#pending.set(id, (answer) => {
        clearTimeout(timer);
        if (answer instanceof OpsError) reject(answer);
        else resolve({ hostMs: answer, sentWallMs, rttMs: performance.now() - sent });
      });
      sock.write(`{"id":${id}}\n`);
    });
  }

  close(): void {
    this.#sock?.destroy();
    this.#sock = null;
    this.#failAll(new OpsError('OPS_CLOCK_CLOSED', 'the clock channel was closed'));
  }

  #failAll(err: OpsError): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p(err);
  }
}

/** Answer bytes the agent may leave unread (beyond the socket's buffers) before the host closes the channel. */
const MAX_UNSENT_BYTES = 64 * 1024;

/** The host's side: answers every time request on `sock` with `now()` (default Date.now). */
export function serveClockChannel(sock: Duplex, now: () => number = Date.now): void {
  sock.on('error', () => {});
  readLines(sock, (line) => {
    const msg = parseJson(line) as { id?: unknown } | null;
    if (msg === null || !Number.isSafeInteger(msg.id)) return false;
    // The agent asks once per interval and reads each answer: a peer that asks and never reads is cut off
    // rather than buffered for (each 9-byte request is a 40-byte answer).
    if (sock.writableLength > MAX_UNSENT_BYTES) return false;
    sock.write(`{"id":${msg.id as number},"host_ms":${now()}}\n`);
    return true;
  });
}

function parseJson(line: string): unknown {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === 'object' && v !== null ? v : null;
  } catch {
    return null;
  }
}

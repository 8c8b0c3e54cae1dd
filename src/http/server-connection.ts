// One connection on the forwarder's http.Server (a Noise stream, a Data request the fast path declined, or a
// keep-alive connection the fast path handed over), as the forwarder tracks it.
//
// Pipelining: Node's server dispatches every request it parses at once, and parses on as long as nothing is
// written back. Here, as on the keep-alive fast path (keep-alive-connection.ts) and as nginx does, pipelined
// requests reach the stages and the app one at a time, in request order: the next starts once the previous
// response has completed (side effects in request order, as pipelining expects). An Upgrade behind pipelined
// requests waits for every answer before it too. While a request waits its turn the connection is read no
// further (its pair end holds its input); what waits is what the server had already taken in: the chunk being
// parsed and the pair end's readable buffer, at most 64 KiB each (Node's parser resumes the socket after each
// message it completes, so pausing alone does not stop it mid-buffer). A request still waiting when the
// connection closes is `abandoned` (the forwarder logs it: nothing taken in is lost silently) — the first
// MAX_ABANDONED_RECORDS of them each, the rest in one record with their count (one 4 KiB slice of tiny pipelined
// requests is ~100–200 of them, at every close: abandoned-records.ts).
//
// Request bodies: Node's requestTimeout is a limit on the whole request, which would cut a long upload that
// keeps flowing; what is bounded here is the gap between body bytes (nginx's client_body_timeout) while the
// server wants them. A gap while the agent is not reading (the app or a waiting request holds the body back)
// does not count.
//
// Parse errors: one in the body of the request being received is that request's answer (in its turn); one
// after the last request is answered once every earlier response has gone out — never ahead of them, which
// would make the client read it as the answer to a request the app did execute. Either way the connection is
// read no further and closes after its last answer.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { PairEnd } from './duplex-pair.ts';
import { abandonedAlone, recordAbandonedRequests, type AbandonedOutcome, type AbandonedSummary } from './abandoned-records.ts';

/** A parsed Upgrade's turn: started once, or abandoned once (the connection closed before its turn). */
interface UpgradeTurn {
  start(): void;
  abandon(): void;
  drop(): void;
}

/** A parsed request's turn: started once, or abandoned once (the connection closed before its turn). */
interface Turn {
  start(): void;
  /** Over without running, recorded as standing for the requests `summary` counts (itself alone by default). */
  abandon(summary?: AbandonedSummary): void;
  /** What its record would say now: its status (0: nothing sent) and error code. */
  outcome(): AbandonedOutcome;
  /** Over without running or a record of its own (one abandoned with a count stands for it). */
  drop(): void;
}

export class ServerConnection {
  readonly socket: PairEnd;
  /** Requests parsed whose response has not closed (running or waiting). */
  #open = 0;
  /** A request has started and its response has not closed. */
  #running = false;
  /** Parsed requests waiting for their turn, in request order. */
  readonly #waiting: Turn[] = [];
  /** An Upgrade parsed behind requests still open: it runs once they have all been answered. */
  #upgrade: UpgradeTurn | null = null;
  #held = false;
  /** A parse error came: nothing more is read; `#last` runs once every open response has closed. */
  #failed = false;
  #last: (() => void) | null = null;
  /** The last request parsed, while its body arrives, and how to answer it with a parse error. */
  #receiving: { req: IncomingMessage; malformed: (status: number, code: string, message: string) => void } | null = null;
  /** The connection became a tunnel (Upgrade): no more requests, reading is not ours to stop. */
  #tunnel = false;
  /** performance.now() when the last hold ended (-Infinity: never held). */
  #releasedAt = -Infinity;
  /** Requests parsed so far (to tell whether a head forgiven by heldWithin ever completed). */
  #parsed = 0;

  constructor(socket: PairEnd) {
    this.socket = socket;
    // Node's server resumes the socket whenever a request body is read: while held, it stays paused.
    socket.on('resume', () => {
      if (this.#held) socket.pause();
    });
    socket.once('close', () => {
      const waiting = this.#waiting.splice(0);
      recordAbandonedRequests(
        waiting,
        (turn) => turn.outcome(),
        (turn, summary) => turn.abandon(summary),
      );
      for (const turn of waiting) turn.drop();
      const upgrade = this.#upgrade;
      this.#upgrade = null;
      upgrade?.abandon();
    });
  }

  /**
   * A parsed request: `run` now if nothing else is open on the connection, else once every earlier response
   * has closed; it is over when `res` closes. `abandoned` runs instead of `run` when its turn never comes (the
   * connection closed first) or comes after it was answered (a parse error in its body, while it waited), with
   * the requests its record stands for: itself, or itself and those that waited after it (abandoned-records.ts).
   * `outcome` tells what its record would say (to count it in another's summary).
   */
  admit(res: ServerResponse, run: () => void, abandoned: (summary: AbandonedSummary) => void, outcome: () => AbandonedOutcome): void {
    this.#open++;
    this.#parsed++;
    let state: 'waiting' | 'running' | 'over' = 'waiting';
    const turn: Turn = {
      start: () => {
        if (state !== 'waiting') return;
        // Answered while it waited (a parse error in its body): it does not run, and the next one may.
        if (res.writableEnded) {
          turn.abandon();
          return;
        }
        state = 'running';
        this.#running = true;
        run();
      },
      abandon: (summary) => {
        if (state !== 'waiting') return;
        state = 'over';
        abandoned(summary ?? abandonedAlone(outcome()));
      },
      outcome,
      drop: () => {
        if (state === 'waiting') state = 'over';
      },
    };
    res.once('close', () => {
      this.#open--;
      if (state === 'running') this.#running = false;
      else if (state === 'waiting') {
        const at = this.#waiting.indexOf(turn);
        if (at >= 0) this.#waiting.splice(at, 1);
        turn.abandon();
      }
      state = 'over';
      this.#next();
      if (this.#open === 0 && this.#last !== null) {
        const last = this.#last;
        this.#last = null;
        last();
      }
    });
    if (!this.#running && this.#waiting.length === 0) turn.start();
    else {
      this.#waiting.push(turn);
      this.#hold(true);
    }
  }

  /**
   * An Upgrade request (or a CONNECT, refused): `run` now if no request is open on the connection, else once
   * every earlier response has closed (the 101, or the 405, must not overtake them). `abandoned` instead when
   * the connection closes first.
   */
  admitUpgrade(run: () => void, abandoned: () => void): void {
    this.#parsed++;
    let state: 'waiting' | 'over' = 'waiting';
    const turn: UpgradeTurn = {
      start: () => {
        if (state !== 'waiting') return;
        state = 'over';
        run();
      },
      abandon: () => {
        if (state !== 'waiting') return;
        state = 'over';
        abandoned();
      },
      drop: () => {
        state = 'over';
      },
    };
    if (this.#open === 0) turn.start();
    else this.#upgrade = turn;
  }

  /**
   * The body of `req` (the last request parsed) is arriving: when no byte has come for `idleMs` while the
   * server was reading, `on.stalled` runs (once); a parse error in it is answered by `on.malformed`. Over when
   * the request is complete or the connection closed. `on.upstreamBlocked`: whether whoever feeds the connection
   * has stopped reading the client for reasons of its own (a Noise session over another stream's budget).
   */
  receiving(
    req: IncomingMessage,
    idleMs: number,
    on: { stalled: () => void; malformed: (status: number, code: string, message: string) => void; upstreamBlocked?: (() => boolean) | undefined },
  ): void {
    this.#receiving = { req, malformed: on.malformed };
    const onStall = on.stalled;
    const socket = this.socket;
    const every = Math.max(25, Math.min(1000, Math.floor(idleMs / 4)));
    let bytes = socket.bytesRead;
    let progress = performance.now();
    let lastTick = progress;
    const timer = setInterval(() => {
      if (req.complete || req.destroyed || socket.destroyed) {
        clearInterval(timer);
        return;
      }
      const now = performance.now();
      // Bytes came, or the agent is the one not reading (the body is held back), or this tick ran late (the
      // process was busy, so the gap says nothing about the client): the gap starts again.
      const notReading = this.#held || socket.isPaused() || socket.readableLength > 0 || on.upstreamBlocked?.() === true;
      if (socket.bytesRead !== bytes || notReading || now - lastTick > 2 * every) {
        bytes = socket.bytesRead;
        progress = now;
      }
      lastTick = now;
      if (now - progress >= idleMs) {
        clearInterval(timer);
        onStall();
      }
    }, every);
    timer.unref();
  }

  /**
   * A parse error (`status`, `code`, `message`): the request whose body was arriving gets it as its answer,
   * else `answer` runs once every response still open has gone out (at once if none is). Nothing more is read
   * from the connection; it closes after its last answer. Further errors on it are ignored.
   */
  parseError(status: number, code: string, message: string, answer: () => void): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#hold(true);
    const receiving = this.#receiving;
    if (receiving !== null && !receiving.req.complete) {
      receiving.malformed(status, code, message);
      answer = () => this.socket.destroySoon();
    }
    if (this.#open === 0) answer();
    else this.#last = answer;
  }

  /** Bytes after the last request (one with Connection: close): not read; the close follows its answer. */
  ignoreRest(): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#hold(true);
    if (this.#open === 0) this.socket.destroySoon();
    else this.#last = () => this.socket.destroySoon();
  }

  /**
   * Whether the connection was held at some time in the last `ms` — a request head that timed out then may have
   * been held back by us, not by its client. Node's server stops timing that head once it has reported it; in
   * its place the head gets `ms` from the end of the hold, else the connection is read no further and closes
   * after the answers still due (a hold ends when the last waiting request starts: its answer is not cut).
   */
  heldWithin(ms: number): boolean {
    if (!this.#held && performance.now() - this.#releasedAt > ms) return false;
    const parsed = this.#parsed;
    const backstop = setInterval(
      () => {
        if (this.#parsed !== parsed || this.#tunnel || this.socket.destroyed) clearInterval(backstop);
        else if (!this.#held && performance.now() - this.#releasedAt > ms) {
          clearInterval(backstop);
          this.ignoreRest();
        }
      },
      Math.max(25, Math.floor(ms / 4)),
    );
    backstop.unref();
    return true;
  }

  /** The connection was upgraded: it is a tunnel from now on. */
  upgraded(): void {
    this.#tunnel = true;
    // Input flows again, but the socket is not resumed: Node has taken its reader off for the upgrade, and bytes
    // the client sends before the app's 101 must wait for the tunnel's pipe, not flow to nobody.
    this.#held = false;
    this.socket.holdInput(false);
    // No parser reads it any more: a tunnel's bytes go on as they come (forwarder.ts SERVER_READ_SLICE_BYTES).
    this.socket.setReadSlice(0);
  }

  /** A response closed: the next request in order starts; reading resumes once none waits. */
  #next(): void {
    while (!this.#running && this.#waiting.length > 0) this.#waiting.shift()!.start();
    if (this.#waiting.length === 0) this.#hold(false);
    if (this.#open === 0 && this.#upgrade !== null) {
      const upgrade = this.#upgrade;
      this.#upgrade = null;
      upgrade.start();
    }
  }

  #hold(on: boolean): void {
    // After a parse error the connection stays held: it closes after its answers.
    if (this.#held === on || (on && this.#tunnel) || (!on && this.#failed)) return;
    this.#held = on;
    if (!on) this.#releasedAt = performance.now();
    const socket = this.socket;
    socket.holdInput(on);
    if (on) socket.pause();
    // As Node's own readStart(): not while the server paused the socket itself (it resumes it when ready).
    else if ((socket as { _paused?: boolean })._paused !== true && !socket.destroyed) socket.resume();
  }
}

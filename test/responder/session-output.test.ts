// SessionOutput (src/responder/session-output.ts) on its own: a session's writer against the shared budget.
import { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { CipherState } from '../../src/noise/cipher-state.ts';
import type { ResponderCounters } from '../../src/responder/admission.ts';
import { OutputBudget } from '../../src/responder/output-budget.ts';
import { SessionOutput } from '../../src/responder/session-output.ts';

describe('SessionOutput', () => {
  it('settles the send() of a deferred message whose sealing fails when room comes, and gives its bytes back', async () => {
    const budget = new OutputBudget(1 << 20);
    const sock = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
    let failSeal = false;
    let failed = 0;
    const out = new SessionOutput(sock, budget, { overBudget: 0 } as unknown as ResponderCounters, 60_000, {
      onWritten: () => out.sync(),
      onFailed: () => {
        failed++;
        out.close(); // what the session does
      },
      onStall() {},
    });
    const seal = (pt: Uint8Array | Uint8Array[]): Uint8Array[] => {
      if (failSeal) throw new Error('seal failed');
      return [...(Array.isArray(pt) ? pt : [pt]).map((p) => Uint8Array.from(p)), new Uint8Array(16)];
    };
    out.start({ encryptOwned: seal, encryptParts: seal } as unknown as CipherState);
    budget.adjust((1 << 20) - 1000); // another session holds all but 1,000 bytes
    const sent = out.send({ type: 'StreamData', id: 1, payload: new Uint8Array(5000) }, 'bstr', false);
    expect(out.deferred).toBe(1);
    failSeal = true;
    budget.adjust(-((1 << 20) - 1000)); // room: the deferred message is sealed now, and that fails
    const settled = await Promise.race([sent.then(() => 'settled'), tick().then(tick).then(tick).then(() => 'pending')]);
    expect(settled).toBe('settled');
    expect(failed).toBe(1);
    expect(budget.queuedBytes).toBe(0);
  });

  it('does not take messages waiting only for room others hold for its client\'s stall; its own unread output still is one', async () => {
    const budget = new OutputBudget(1 << 20);
    let accept = true; // the client reads: every write is taken at once
    const held: (() => void)[] = [];
    const sock = new Duplex({
      read() {},
      write(_c, _e, cb) {
        if (accept) cb();
        else held.push(cb);
      },
    });
    let stalls = 0;
    const out = new SessionOutput(sock, budget, { overBudget: 0 } as unknown as ResponderCounters, 40, {
      onWritten: () => out.sync(),
      onFailed() {},
      onStall: () => stalls++,
    });
    const seal = (pt: Uint8Array | Uint8Array[]): Uint8Array[] => [...(Array.isArray(pt) ? pt : [pt]).map((p) => Uint8Array.from(p)), new Uint8Array(16)];
    out.start({ encryptOwned: seal, encryptParts: seal } as unknown as CipherState);
    budget.adjust((1 << 20) - 1000); // other sessions hold all but 1,000 bytes, for several stall timeouts
    const sent = out.send({ type: 'StreamData', id: 1, payload: new Uint8Array(5000) }, 'bstr', false);
    expect(out.deferred).toBe(1);
    await new Promise((r) => setTimeout(r, 250));
    expect(stalls).toBe(0);
    budget.adjust(-((1 << 20) - 1000)); // their clients read: room
    await sent;
    expect(out.deferred).toBe(0);
    expect(stalls).toBe(0);
    // Now this client stops reading what it was given: that is its stall.
    accept = false;
    void out.send({ type: 'StreamData', id: 1, payload: new Uint8Array(100) }, 'bstr', false);
    await new Promise((r) => setTimeout(r, 250));
    expect(stalls).toBeGreaterThan(0);
    out.close();
    for (const cb of held) cb();
  });
});

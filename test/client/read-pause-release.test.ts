// ReadPause (onBufferFull 'pause'): the connection stops being read at half of maxBufferedBytes unread, and is read
// on as soon as the reader has taken the body below half again. While it is not read, none of the bridge's sends
// to the client completes, and the bridge cuts a connection on which none completes for its write-stall timeout
// (30 s): a pause held until a quarter of the cap was read (16 MiB at the default 64 MiB) cut every steady reader
// slower than ~0.5 MB/s (seen end to end: a 40 MiB body read at ~1 MB/s with a 32 MiB cap and a 5 s bridge
// write-stall ended CLIENT_CONNECT_FAILED before the change, arrived whole after it).
import { describe, expect, it } from 'vitest';
import { ReadPause } from '../../src/client/buffer-cap.ts';

/** A controller of a byte-counted queue whose high-water mark is `max`, holding `unread` bytes. */
function controller(max: number, unread: number): ReadableStreamDefaultController<Uint8Array> {
  return { desiredSize: max - unread } as ReadableStreamDefaultController<Uint8Array>;
}

describe('ReadPause', () => {
  const max = 1024;

  function watched(): { pause: ReadPause; held: () => number } {
    let holds = 0;
    const pause = new ReadPause(() => {
      holds++;
      return () => holds--;
    }, max);
    return { pause, held: () => holds };
  }

  it('holds the connection at half the cap unread, not before', () => {
    const { pause, held } = watched();
    pause.update(controller(max, max / 2 - 1));
    expect(held()).toBe(0);
    pause.update(controller(max, max / 2));
    expect(held()).toBe(1);
    pause.update(controller(max, max - 1));
    expect(held()).toBe(1); // one hold, however far past half
  });

  it('reads on once a read takes the body below half (failed before: it waited for a quarter)', () => {
    const { pause, held } = watched();
    pause.update(controller(max, max / 2 + 100));
    expect(held()).toBe(1);
    pause.update(controller(max, max / 2 - 1));
    expect(held()).toBe(0);
    // and holds again when the next message takes it back to half
    pause.update(controller(max, max / 2));
    expect(held()).toBe(1);
  });

  it('release() reads on and is idempotent', () => {
    const { pause, held } = watched();
    pause.update(controller(max, max));
    pause.release();
    pause.release();
    expect(held()).toBe(0);
  });

  it('without a connection that can pause, does nothing', () => {
    const pause = new ReadPause(null, max);
    expect(() => pause.update(controller(max, max))).not.toThrow();
  });
});

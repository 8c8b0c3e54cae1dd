// Node-only. Stops reading the socket under an undici WebSocket, so a slow reader of the bridge's messages holds
// the bridge back (TCP), as the protocol has no flow control of its own. undici resumes the socket itself whenever
// its frame parser has drained (socket.resume()), which would undo a pause within a tick: while paused, that call
// is swallowed; resume() reads on (a parser still full pauses the socket again on its next write).
import type { Duplex } from 'node:stream';

export interface SocketPause {
  pause(): void;
  resume(): void;
}

export function socketPause(socket: Duplex): SocketPause {
  let paused = false;
  const own = socket as unknown as { resume?: () => Duplex };
  return {
    pause() {
      if (paused || socket.destroyed) return;
      paused = true;
      socket.pause();
      own.resume = () => socket;
    },
    resume() {
      if (!paused) return;
      paused = false;
      delete own.resume; // the prototype's again
      if (!socket.destroyed) socket.resume();
    },
  };
}

import type { Duplex } from 'node:stream';

/**
 * Every transport (tcp, unix, vsock) yields the same thing: a Node Duplex per accepted connection,
 * so the responder never knows which address family it is serving.
 */
export interface ConnectionInfo {
  /** Human-readable peer description for logs: "127.0.0.1:53122", "unix", "vsock:3:1234". */
  readonly remote: string;
  readonly transport: 'tcp' | 'unix' | 'vsock';
  /** vsock: the peer's CID as the kernel reports it (who may be served); absent when it could not be read. */
  readonly peerCid?: number;
}

export type ConnectionHandler = (stream: Duplex, info: ConnectionInfo) => void;

export interface Listener {
  /** Where it listens: "127.0.0.1:5000", "/run/agent.sock", "vsock:*:5000". */
  readonly address: string;
  /** TCP: the bound port (useful with port 0). */
  readonly port?: number;
  /** Accept errors seen so far (EMFILE, ENFILE, ...); the listener keeps listening after each. */
  readonly acceptErrors?: number;
  /** Stop accepting; resolves when the listening socket is closed (open connections are the caller's). */
  close(): Promise<void>;
}

export interface ListenOptions {
  onConnection: ConnectionHandler;
  /**
   * An accept failed (EMFILE, ENFILE, ...); the listener keeps listening. Without it, the first error of a
   * listener becomes a process warning: accept errors are never swallowed silently.
   */
  onError?: (err: Error) => void;
  /**
   * The handler detaches every connection (src/transport/handoff.ts) to run it on another thread: the
   * listener must not start reading (Node listeners use pauseOnConnect). The native listener needs nothing:
   * a NativeStream reads only once someone reads it.
   */
  handoff?: boolean;
}

/**
 * WebSocket close codes the bridge sends, so a client can tell why its connection ended.
 * 1000–1014 are RFC 6455 / IANA registry codes; 4000–4999 are reserved for applications.
 */
export const CloseCode = {
  /** The agent ended its stream (normal end of a session). */
  AGENT_CLOSED: 1000,
  /** The bridge is shutting down. */
  GOING_AWAY: 1001,
  /** A text frame: the bridge carries binary frames only. */
  UNSUPPORTED_DATA: 1003,
  /** The agent stream failed (reset, error). */
  AGENT_ERROR: 1011,
  /** Too many connections (only when the limit is hit after the HTTP upgrade; normally answered with HTTP 503). */
  TRY_AGAIN_LATER: 1013,
  /** The agent could not be reached. */
  BAD_GATEWAY: 1014,
  /** No 48-byte handshake reply from the agent within the handshake timeout. */
  HANDSHAKE_TIMEOUT: 4000,
  /** No bytes in either direction within the idle timeout. */
  IDLE_TIMEOUT: 4001,
  /**
   * Bytes waited for the client, which took none within the write-stall timeout (a client that never reads).
   * Logged only: the socket is cut without a close frame, which such a client would not read either.
   */
  WRITE_STALL: 4002,
} as const;

export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

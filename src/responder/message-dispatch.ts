// Where each decoded client message goes (WIRE.md §5), and which ones a channel accepts: the public channel
// takes attestation, Data and streams; the control channel attestation, the control nonce and Control. A
// message the channel does not accept gets `ControlResult{success: false}` and closes the session.
import type { ByteEncoding, ClientMessage } from '../wire/messages.ts';
import type { DataRequests } from './data-requests.ts';
import { answerAttestation, answerControl } from './session-requests.ts';
import type { SessionStreams } from './session-streams.ts';
import type { SessionHost } from './session-types.ts';

const PUBLIC_TYPES: ReadonlySet<ClientMessage['type']> = new Set(['RequestAttestation', 'Data', 'OpenStream', 'StreamData', 'StreamClose']);
const CONTROL_TYPES: ReadonlySet<ClientMessage['type']> = new Set(['RequestAttestation', 'GetControlNonce', 'Control']);

/**
 * Dispatches one message. Returns true when it started or advanced something (a request, a stream); false for
 * frames that change nothing (StreamClose or StreamData for an unknown stream, a refused request, ...), which
 * therefore do not count as activity for the idle timeout. `frame`: the reused buffer (message-buffers.ts) a
 * StreamData payload lies in, if it does (SessionStreams.write).
 */
export function dispatchMessage(host: SessionHost, data: DataRequests, streams: SessionStreams, msg: ClientMessage, enc: ByteEncoding, frame?: Uint8Array): boolean {
  const allowed = host.cfg.channel === 'public' ? PUBLIC_TYPES : CONTROL_TYPES;
  if (!allowed.has(msg.type)) {
    refuseWrongChannel(host, msg.type);
    return false;
  }
  switch (msg.type) {
    case 'RequestAttestation':
      void answerAttestation(host, enc);
      return true;
    case 'GetControlNonce':
      void host.send({ type: 'ControlNonce', nonce: host.cfg.control.nonce.current() }, enc);
      return false;
    case 'Control':
      void answerControl(host, msg.payload, msg.signature, enc);
      return true;
    case 'Data':
      // A reply Data{id} would be read as the open stream's: the id must be free.
      if (streams.has(msg.id)) {
        void host.sendError(msg.id, 'id already in use by an open stream', enc);
        return false;
      }
      return data.start(msg.id, msg.payload, enc);
    case 'OpenStream':
      return streams.open(msg.id, msg.payload, enc);
    case 'StreamData':
      return streams.write(msg.id, msg.payload, enc, frame);
    case 'StreamClose':
      return streams.close(msg.id, msg.half);
  }
}

function refuseWrongChannel(host: SessionHost, type: string): void {
  host.cfg.logger.warn({ session: host.id, channel: host.cfg.channel, type }, 'message not accepted on this channel; closing');
  void host.send({ type: 'ControlResult', success: false, message: `message not accepted on the ${host.cfg.channel} channel` }, 'array');
  host.closeGracefully('wrong-channel');
}

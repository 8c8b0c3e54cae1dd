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

export function dispatchMessage(host: SessionHost, data: DataRequests, streams: SessionStreams, msg: ClientMessage, enc: ByteEncoding): void {
  const allowed = host.cfg.channel === 'public' ? PUBLIC_TYPES : CONTROL_TYPES;
  if (!allowed.has(msg.type)) {
    refuseWrongChannel(host, msg.type);
    return;
  }
  switch (msg.type) {
    case 'RequestAttestation':
      void answerAttestation(host, enc);
      return;
    case 'GetControlNonce':
      host.send({ type: 'ControlNonce', nonce: host.cfg.control.nonce.current() }, enc);
      return;
    case 'Control':
      void answerControl(host, msg.payload, msg.signature, enc);
      return;
    case 'Data':
      data.start(msg.id, msg.payload, enc);
      return;
    case 'OpenStream':
      streams.open(msg.id, msg.payload, enc);
      return;
    case 'StreamData':
      streams.write(msg.id, msg.payload, enc);
      return;
    case 'StreamClose':
      streams.close(msg.id, msg.half);
      return;
  }
}

function refuseWrongChannel(host: SessionHost, type: string): void {
  host.cfg.logger.warn({ session: host.id, channel: host.cfg.channel, type }, 'message not accepted on this channel; closing');
  host.send({ type: 'ControlResult', success: false, message: `message not accepted on the ${host.cfg.channel} channel` }, 'array');
  host.closeGracefully('wrong-channel');
}

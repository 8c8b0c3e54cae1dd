// The requests a session answers itself (WIRE.md §5): RequestAttestation (a document bound to the session's
// handshake hash and the control nonce) and Control (control.ts), plus the ForwardContext a forwarder gets
// for each Data request and stream — its attest() produces a document bound to the same session.
import {
  MAX_MESSAGE_LEN,
  serverMessageSize,
  type ByteEncoding,
  type ServerMessage,
} from '../wire/messages.ts';
import { attestationWaitMs, waitTurn } from './attestation-pace.ts';
import { handleControl } from './control.ts';
import { errorCode, truncate } from './error-text.ts';
import type { ForwardContext } from './forwarder.ts';
import type { SessionHost } from './session-types.ts';

interface SessionContexts {
  readonly client: ForwardContext['client'];
  readonly hash: Uint8Array;
  data?: ForwardContext;
  stream?: ForwardContext;
}

/** The contexts a session hands out, built once per session (and kind) instead of once per request. */
const contexts = new WeakMap<SessionHost, SessionContexts>();

export function forwardContext(host: SessionHost, kind: 'data' | 'stream'): ForwardContext {
  const hash = host.handshakeHash();
  const client = host.client();
  let known = contexts.get(host);
  // What a context carries is fixed once the session is open; rebuilt should it ever change.
  if (known === undefined || known.client !== client || known.hash !== hash) {
    known = { client, hash };
    contexts.set(host, known);
  }
  const cached = known[kind];
  if (cached !== undefined) return cached;
  const ctx: ForwardContext = {
    sessionId: host.id,
    kind,
    handshakeHash: hash,
    signal: host.signal(),
    attest: (extra) => attestDocument(host, extra?.userData, extra?.publicKey),
    inputBlocked: () => host.inputPaused(),
  };
  const made = client === undefined ? ctx : { ...ctx, client };
  known[kind] = made;
  return made;
}

function attestDocument(host: SessionHost, userData?: Uint8Array, publicKey?: Uint8Array): Promise<Uint8Array> {
  return host.cfg.nsm.attest({
    nonce: host.handshakeHash(),
    userData: userData ?? host.cfg.control.nonce.current(),
    publicKey: publicKey ?? host.cfg.attestationPublicKey?.() ?? null,
  });
}

/** RequestAttestation → Attestation, at the session's pace (attestation-pace.ts); a failure closes the session. */
export async function answerAttestation(host: SessionHost, enc: ByteEncoding): Promise<void> {
  host.sessionRequestStarted();
  try {
    const waitMs = attestationWaitMs(host);
    if (waitMs > 0 && (!(await waitTurn(waitMs, host.signal())) || host.state() !== 'open')) return;
    const controlNonce = host.cfg.control.nonce.current();
    const data = await attestDocument(host, controlNonce);
    if (host.state() !== 'open') return;
    const features = host.cfg.features;
    const msg: ServerMessage =
      features.length > 0
        ? { type: 'Attestation', data, control_nonce: controlNonce, features: [...features] }
        : { type: 'Attestation', data, control_nonce: controlNonce };
    const size = serverMessageSize(msg, enc);
    if (size > MAX_MESSAGE_LEN) throw new RangeError(`attestation reply of ${size} bytes exceeds one frame (${MAX_MESSAGE_LEN})`);
    host.stats.attestations++;
    await host.send(msg, enc);
  } catch (err) {
    host.cfg.logger.error({ session: host.id, err: errorCode(err) }, 'attestation failed; closing the session');
    host.close('attestation-failed', err);
  } finally {
    host.sessionRequestDone();
  }
}

/** Control → ControlResult. */
export async function answerControl(host: SessionHost, payload: Uint8Array, signature: Uint8Array, enc: ByteEncoding): Promise<void> {
  host.sessionRequestStarted();
  host.stats.controls++;
  try {
    const result = await handleControl(payload, signature, host.cfg.control);
    const log = result.success ? host.cfg.logger.info.bind(host.cfg.logger) : host.cfg.logger.warn.bind(host.cfg.logger);
    log({ session: host.id, success: result.success, result: result.message }, 'control command');
    await host.send({ type: 'ControlResult', success: result.success, message: truncate(result.message) }, enc);
  } finally {
    host.sessionRequestDone();
  }
}

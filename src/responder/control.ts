// The control channel's semantics, as the Enclavia server implements them:
// - one control nonce per agent process (per boot), 32 random bytes, shared by every session of both
//   channels; `RequestAttestation` binds it as the document's user_data, `GetControlNonce` returns it
//   without consuming it;
// - every `Control{payload, signature}` consumes it FIRST (rotates, whatever the outcome), so a replayed or
//   failed command can never be accepted later;
// - `signature` is 64 raw bytes r‖s of ECDSA P-256 with SHA-256 over exactly the `payload` bytes, verified
//   with the operator's control public key; without a configured key the channel refuses every command;
// - `payload` is CBOR: a map tagged by "command" (the variant name) carrying a 32-byte "nonce" that must
//   equal the nonce consumed by this call ("stale nonce" otherwise);
// - the command itself is dispatched to an injected handler (this agent has no built-in commands).
import { createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { decodeStrict, type CborValue } from '../attestation/cbor.ts';
import { concatBytes, equalBytes, fromHex } from '../util/bytes.ts';
import { ResponderError } from './errors.ts';

export const CONTROL_NONCE_LEN = 32;
const SIGNATURE_LEN = 64;

/** The per-process control nonce. Share one instance between the public and the control responder. */
export interface ControlNonceState {
  /** The current nonce (a copy). */
  current(): Uint8Array;
  /** Replaces the nonce with a fresh random one and returns the one it replaced. */
  consume(): Uint8Array;
}

export function createControlNonce(random: (n: number) => Uint8Array = (n) => new Uint8Array(randomBytes(n))): ControlNonceState {
  let nonce = random(CONTROL_NONCE_LEN);
  return {
    current: () => nonce.slice(),
    consume() {
      const previous = nonce;
      nonce = random(CONTROL_NONCE_LEN);
      return previous;
    },
  };
}

/** A verified, fresh control command handed to the handler. */
export interface ControlCommand {
  /** The variant name ("command" field), e.g. "PrepareUpgrade". */
  readonly command: string;
  /** Every field of the payload map except "command" (byte arrays as decoded: arrays of numbers or Uint8Array). */
  readonly fields: ReadonlyMap<string, CborValue>;
  /** The exact signed payload bytes. */
  readonly payload: Uint8Array;
}

export interface ControlResult {
  success: boolean;
  message: string;
}

/** Executes a verified command. Its `message` goes to the caller verbatim: keep secrets out of it. */
export type ControlHandler = (command: ControlCommand) => Promise<ControlResult> | ControlResult;

export interface ControlConfig {
  nonce: ControlNonceState;
  /** The operator's P-256 public key; without it every Control is refused. */
  publicKey?: KeyObject;
  handler?: ControlHandler;
}

export type ControlPublicKeyInput = KeyObject | string | Uint8Array;

// SubjectPublicKeyInfo prefixes for a raw P-256 point (id-ecPublicKey, prime256v1).
const SPKI_P256_UNCOMPRESSED = fromHex('3059301306072a8648ce3d020106082a8648ce3d030107034200');
const SPKI_P256_COMPRESSED = fromHex('3039301306072a8648ce3d020106082a8648ce3d030107032200');

/**
 * Accepts a KeyObject, a PEM string, DER SubjectPublicKeyInfo bytes, or a raw SEC1 point (65 bytes
 * uncompressed / 33 compressed). Throws RESPONDER_CONTROL_KEY unless it is a P-256 public key.
 */
export function parseControlPublicKey(input: ControlPublicKeyInput): KeyObject {
  let key: KeyObject;
  try {
    if (typeof input === 'string') key = createPublicKey(input);
    else if (input instanceof Uint8Array) {
      let der = input;
      if (input.length === 65 && input[0] === 0x04) der = concatBytes(SPKI_P256_UNCOMPRESSED, input);
      else if (input.length === 33 && (input[0] === 0x02 || input[0] === 0x03)) der = concatBytes(SPKI_P256_COMPRESSED, input);
      key = createPublicKey({ key: Buffer.from(der), format: 'der', type: 'spki' });
    } else key = input;
  } catch (err) {
    throw new ResponderError('RESPONDER_CONTROL_KEY', `control public key: expected a P-256 public key (PEM, SPKI DER or SEC1 point), could not parse it: ${(err as Error).message}`, { cause: err });
  }
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.type !== 'public' || key.asymmetricKeyType !== 'ec' || curve !== 'prime256v1') {
    throw new ResponderError('RESPONDER_CONTROL_KEY', `control public key: expected an EC P-256 public key, found ${key.type} ${key.asymmetricKeyType ?? '?'} ${curve ?? ''}`.trim());
  }
  return key;
}

/** Handles one `Control` message. Never throws: every failure is a `{success: false}` with a clear message. */
export async function handleControl(payload: Uint8Array, signature: Uint8Array, config: ControlConfig): Promise<ControlResult> {
  // Consume before anything else: single-use whatever the outcome.
  const expected = config.nonce.consume();
  if (config.publicKey === undefined) {
    return { success: false, message: 'control channel disabled (no control public key configured)' };
  }
  if (signature.length !== SIGNATURE_LEN) {
    return { success: false, message: `signature must be 64 bytes raw r||s (found ${signature.length})` };
  }
  let valid = false;
  try {
    valid = verify('sha256', payload, { key: config.publicKey, dsaEncoding: 'ieee-p1363' }, signature);
  } catch {
    valid = false;
  }
  if (!valid) return { success: false, message: 'signature verification failed' };

  let command: string;
  const fields = new Map<string, CborValue>();
  let nonce: Uint8Array;
  try {
    const value = decodeStrict(payload);
    if (!(value instanceof Map)) throw new Error('expected a CBOR map');
    let name: CborValue | undefined;
    for (const [k, v] of value) {
      if (typeof k !== 'string') throw new Error('expected text keys');
      if (k === 'command') name = v;
      else fields.set(k, v);
    }
    if (typeof name !== 'string') throw new Error('missing text field "command"');
    command = name;
    const n = asBytes(fields.get('nonce'));
    if (n === null || n.length !== CONTROL_NONCE_LEN) throw new Error('"nonce" must be 32 bytes');
    nonce = n;
  } catch (err) {
    return { success: false, message: `malformed payload: ${(err as Error).message}` };
  }
  if (!equalBytes(nonce, expected)) return { success: false, message: 'stale nonce, fetch a fresh attestation' };
  if (config.handler === undefined) return { success: false, message: `unsupported control command: ${command}` };
  try {
    const result = await config.handler({ command, fields, payload: payload.slice() });
    return { success: result.success === true, message: String(result.message) };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return { success: false, message: `control command ${command} failed${typeof code === 'string' ? ` (${code})` : ''}` };
  }
}

/** A CBOR byte string, or an array of integers 0..255 (serde's Vec<u8> / [u8; N]); null otherwise. */
function asBytes(v: CborValue | undefined): Uint8Array | null {
  if (v instanceof Uint8Array) return v;
  if (!Array.isArray(v)) return null;
  const out = new Uint8Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const b = v[i];
    if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b > 255) return null;
    out[i] = b;
  }
  return out;
}

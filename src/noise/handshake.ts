// The Noise NN handshake (spec rev 34), both roles, with the psk0 / psk2 / psk0+psk2 modifiers.
//
//   NN:   -> e            NNpsk0: -> psk, e      NNpsk2: -> e             NNpsk0+psk2: -> psk, e
//         <- e, ee                <- e, ee               <- e, ee, psk                 <- e, ee, psk
//
// In PSK handshakes every `e` token is also fed to MixKey (spec §9.2), so message 1 of psk0 carries
// an encrypted payload. No static keys: this module implements NN only, by design.
import { CipherState } from './cipher-state.ts';
import { NoiseError } from './errors.ts';
import { DH_LEN, MAX_MESSAGE_LEN, TAG_LEN, checkKeyLength, type CipherName, type HashName, type NoisePrimitives } from './primitives.ts';
import { SymmetricState } from './symmetric-state.ts';

export const DEFAULT_PROTOCOL = 'Noise_NN_25519_ChaChaPoly_BLAKE2s';

/** PSKs are always 32 bytes (spec §9.1). */
export const PSK_LEN = 32;

export interface HandshakeOptions {
  role: 'initiator' | 'responder';
  primitives: NoisePrimitives;
  /** Default DEFAULT_PROTOCOL; any Noise_NN[psk0|psk2|psk0+psk2]_25519_{ChaChaPoly,AESGCM}_{BLAKE2s,BLAKE2b,SHA256,SHA512}. */
  protocol?: string;
  prologue?: Uint8Array;
  /** A fixed ephemeral private key (test vectors, transcript tests). Never set this in production. */
  ephemeralPrivateKey?: Uint8Array;
  /** One 32-byte PSK per psk modifier, in name order (psk0 first). */
  psks?: Uint8Array[];
}

export interface Transport {
  /** The final h: 32 bytes for BLAKE2s/SHA256, 64 for BLAKE2b/SHA512. */
  readonly handshakeHash: Uint8Array;
  readonly send: CipherState;
  readonly recv: CipherState;
}

export interface Handshake {
  readonly role: 'initiator' | 'responder';
  readonly protocol: string;
  /** Builds this role's next handshake message around `payload` (default empty). */
  writeMessage(payload?: Uint8Array): Uint8Array;
  /** Consumes the peer's next handshake message; returns its payload. */
  readMessage(message: Uint8Array): Uint8Array;
  readonly complete: boolean;
  /** Only once complete; returns the same Transport on every call, oriented for this role. */
  split(): Transport;
}

export interface ProtocolInfo {
  readonly name: string;
  readonly psk0: boolean;
  readonly psk2: boolean;
  readonly cipher: CipherName;
  readonly hash: HashName;
}

const PROTOCOL_RE = /^Noise_NN(psk0|psk2|psk0\+psk2)?_25519_(ChaChaPoly|AESGCM)_(BLAKE2s|BLAKE2b|SHA256|SHA512)$/;

/** Parses a supported protocol name; throws NOISE_UNSUPPORTED_PROTOCOL otherwise. */
export function parseProtocol(name: string): ProtocolInfo {
  const m = typeof name === 'string' ? PROTOCOL_RE.exec(name) : null;
  if (m === null) {
    throw new NoiseError(
      'NOISE_UNSUPPORTED_PROTOCOL',
      `protocol: expected Noise_NN[psk0|psk2|psk0+psk2]_25519_{ChaChaPoly|AESGCM}_{BLAKE2s|BLAKE2b|SHA256|SHA512}, found ${JSON.stringify(String(name)).slice(0, 80)}`,
    );
  }
  const psk = m[1] ?? '';
  return { name, psk0: psk.includes('psk0'), psk2: psk.includes('psk2'), cipher: m[2] as CipherName, hash: m[3] as HashName };
}

export function createHandshake(opts: HandshakeOptions): Handshake {
  return new NNHandshake(opts);
}

const EMPTY = new Uint8Array(0);

type Step = 'message1' | 'message2' | 'complete' | 'failed';

class NNHandshake implements Handshake {
  readonly role: 'initiator' | 'responder';
  readonly protocol: string;
  readonly #p: NoisePrimitives;
  readonly #info: ProtocolInfo;
  readonly #ss: SymmetricState;
  readonly #psks: Uint8Array[];
  #ePriv: Uint8Array | null;
  #re: Uint8Array | null = null;
  #step: Step = 'message1';
  #transport: Transport | null = null;

  constructor(opts: HandshakeOptions) {
    if (opts === null || typeof opts !== 'object') throw new NoiseError('NOISE_BAD_STATE', 'handshake options: expected an object');
    if (opts.role !== 'initiator' && opts.role !== 'responder') {
      throw new NoiseError('NOISE_BAD_STATE', `role: expected "initiator" or "responder", found ${JSON.stringify(String(opts.role))}`);
    }
    if (opts.primitives === undefined || opts.primitives === null) throw new NoiseError('NOISE_BAD_STATE', 'primitives: expected a NoisePrimitives suite, found none');
    this.role = opts.role;
    this.protocol = opts.protocol ?? DEFAULT_PROTOCOL;
    this.#p = opts.primitives;
    this.#info = parseProtocol(this.protocol);

    const wanted = (this.#info.psk0 ? 1 : 0) + (this.#info.psk2 ? 1 : 0);
    const psks = opts.psks ?? [];
    if (psks.length !== wanted) throw new NoiseError('NOISE_BAD_KEY', `psks: ${this.protocol} expects ${wanted} PSK(s), found ${psks.length}`);
    psks.forEach((psk, i) => checkKeyLength(`psks[${i}]`, psk, PSK_LEN));
    this.#psks = psks.map((psk) => new Uint8Array(psk)); // copies, even of Buffers (whose slice() is a view)

    if (opts.ephemeralPrivateKey !== undefined) checkKeyLength('ephemeralPrivateKey', opts.ephemeralPrivateKey, DH_LEN);
    this.#ePriv = opts.ephemeralPrivateKey === undefined ? null : new Uint8Array(opts.ephemeralPrivateKey);

    this.#ss = new SymmetricState(this.#p, this.protocol, this.#info.cipher, this.#info.hash, opts.prologue ?? EMPTY);
  }

  get complete(): boolean {
    return this.#step === 'complete';
  }

  writeMessage(payload: Uint8Array = EMPTY): Uint8Array {
    const first = this.#expect('write');
    // Every message is e ‖ payload, encrypted (+ tag) once a key is in place: message 2 always (ee),
    // message 1 only under psk0.
    const encrypted = !first || this.#info.psk0;
    const size = DH_LEN + payload.length + (encrypted ? TAG_LEN : 0);
    if (size > MAX_MESSAGE_LEN) {
      throw new NoiseError('NOISE_MESSAGE_TOO_LARGE', `handshake message: expected at most ${MAX_MESSAGE_LEN} bytes, would be ${size}`);
    }
    return this.#guard(() => {
      if (first && this.#info.psk0) this.#ss.mixKeyAndHash(this.#psks[0]!);
      const ePriv = (this.#ePriv ??= this.#p.generatePrivateKey());
      const ePub = this.#p.x25519PublicKey(ePriv);
      this.#mixEphemeral(ePub);
      if (!first) this.#finishMessage2Tokens(this.#p.x25519(ePriv, this.#re!));
      const body = this.#ss.encryptAndHash(payload);
      const out = new Uint8Array(DH_LEN + body.length);
      out.set(ePub, 0);
      out.set(body, DH_LEN);
      this.#advance();
      return out;
    });
  }

  readMessage(message: Uint8Array): Uint8Array {
    const first = this.#expect('read');
    if (!(message instanceof Uint8Array)) throw new NoiseError('NOISE_BAD_MESSAGE', `handshake message: expected bytes, found ${typeof message}`);
    if (message.length > MAX_MESSAGE_LEN) {
      throw new NoiseError('NOISE_MESSAGE_TOO_LARGE', `handshake message: expected at most ${MAX_MESSAGE_LEN} bytes, found ${message.length}`);
    }
    const encrypted = !first || this.#info.psk0;
    const min = DH_LEN + (encrypted ? TAG_LEN : 0);
    if (message.length < min) {
      throw new NoiseError('NOISE_BAD_MESSAGE', `handshake message ${first ? 1 : 2}: expected at least ${min} bytes, found ${message.length}`);
    }
    return this.#guard(() => {
      if (first && this.#info.psk0) this.#ss.mixKeyAndHash(this.#psks[0]!);
      const re = message.slice(0, DH_LEN);
      this.#re = re;
      this.#mixEphemeral(re);
      if (!first) this.#finishMessage2Tokens(this.#p.x25519(this.#ePriv!, re));
      const payload = this.#ss.decryptAndHash(message.subarray(DH_LEN));
      this.#advance();
      return encrypted ? payload : new Uint8Array(payload); // an unencrypted payload would otherwise alias `message` (a Buffer's slice() would too)
    });
  }

  split(): Transport {
    if (this.#transport === null) {
      throw new NoiseError('NOISE_BAD_STATE', `split: expected a complete handshake, found state ${this.#step}`);
    }
    return this.#transport;
  }

  /** Checks the call order; returns true when the next message is message 1. */
  #expect(op: 'write' | 'read'): boolean {
    const step = this.#step;
    if (step === 'message1' || step === 'message2') {
      const writer = step === 'message1' ? 'initiator' : 'responder';
      const ok = op === 'write' ? this.role === writer : this.role !== writer;
      if (ok) return step === 'message1';
      throw new NoiseError('NOISE_BAD_STATE', `${op}Message: the ${this.role} must ${op === 'write' ? 'read' : 'write'} ${step} first`);
    }
    throw new NoiseError('NOISE_BAD_STATE', `${op}Message: expected a handshake in progress, found state ${step}`);
  }

  /** Any failure once the transcript has been touched leaves the handshake unusable. */
  #guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      this.#fail();
      throw err;
    }
  }

  #mixEphemeral(pub: Uint8Array): void {
    this.#ss.mixHash(pub);
    if (this.#info.psk0 || this.#info.psk2) this.#ss.mixKey(pub);
  }

  /** `ee` then, under psk2, `psk`. */
  #finishMessage2Tokens(dh: Uint8Array): void {
    this.#ss.mixKey(dh);
    dh.fill(0);
    if (this.#info.psk2) this.#ss.mixKeyAndHash(this.#psks[this.#info.psk0 ? 1 : 0]!);
  }

  #advance(): void {
    if (this.#step === 'message1') {
      this.#step = 'message2';
      return;
    }
    const [k1, k2] = this.#ss.split();
    const toResponder = new CipherState(this.#p, this.#info.cipher, k1);
    const toInitiator = new CipherState(this.#p, this.#info.cipher, k2);
    k1.fill(0);
    k2.fill(0);
    const initiator = this.role === 'initiator';
    this.#transport = Object.freeze({
      handshakeHash: this.#ss.handshakeHash,
      send: initiator ? toResponder : toInitiator,
      recv: initiator ? toInitiator : toResponder,
    });
    this.#step = 'complete';
    this.#wipe();
  }

  #fail(): void {
    this.#step = 'failed';
    this.#wipe();
  }

  #wipe(): void {
    this.#ss.wipe();
    this.#ePriv?.fill(0);
    this.#ePriv = null;
    for (const psk of this.#psks) psk.fill(0);
  }
}

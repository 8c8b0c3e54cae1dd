// The credentials channel between the host bridge and the agent inside the enclave (a host-only vsock port).
// One frame = u32 big-endian length ‖ UTF-8 JSON object. The enclave sends {"Operation":"GetCredentials"}; the
// host answers {"Status":"Ok","AccessKeyId","SecretAccessKey","SessionToken"?,"Expiration"?,"Now"?} (Now: the
// host's clock when it answered, so the enclave can judge Expiration on it) or {"Status":"Error","Code","Message"}. A connection may carry several requests, one after the other. A frame
// that is too long, not JSON, or not a known request closes that connection only.
import { CredentialsError } from './credentials-errors.ts';

/** The parent's vsock port the bridge serves credentials on (`bridge --credentials vsock`). */
export const DEFAULT_CREDENTIALS_VSOCK_PORT = 8002;
/** A request is one tiny JSON object. */
export const MAX_REQUEST_BYTES = 1024;
/** Session tokens run to a few KiB; an answer longer than this is not credentials. */
export const MAX_RESPONSE_BYTES = 64 * 1024;

export const GET_CREDENTIALS = 'GetCredentials';

/** The shape of the AWS SDK's AwsCredentialIdentity (what its credential providers resolve to). */
export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/** An AwsCredentialIdentityProvider-shaped function: the SDK calls it with { forceRefresh } after an auth error. */
export type CredentialSource = (options?: { forceRefresh?: boolean }) => Promise<AwsCredentials>;

export function encodeFrame(message: object): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/**
 * Splits a byte stream into JSON objects; throws CredentialsError on a frame over `maxBytes` or one that is not a
 * JSON object. Chunks are kept as they came and joined once per frame: a peer that sends a frame a byte at a time
 * costs O(frame), not the O(frame²) of re-joining everything buffered on every chunk (~0.6 s of copying for 64 KiB).
 */
export class FrameReader {
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** 4 + the length of the frame being read, once its header is in; null before. */
  #frameEnd: number | null = null;
  readonly #maxBytes: number;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** Bytes received that do not make a whole frame yet. */
  get pending(): number {
    return this.#buffered;
  }

  /** The buffered bytes as one Buffer (joined once, then kept joined). */
  #joined(): Buffer {
    if (this.#chunks.length !== 1) this.#chunks = [Buffer.concat(this.#chunks, this.#buffered)];
    return this.#chunks[0]!;
  }

  push(chunk: Buffer): Record<string, unknown>[] {
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const out: Record<string, unknown>[] = [];
    for (;;) {
      if (this.#frameEnd === null) {
        if (this.#buffered < 4) break;
        // Joins at most 3 bytes plus the chunk that completed the header.
        const len = this.#joined().readUInt32BE(0);
        if (len > this.#maxBytes) throw new CredentialsError('CREDENTIALS_FRAME_TOO_LARGE', `frame of ${len} bytes, the limit is ${this.#maxBytes}`);
        this.#frameEnd = 4 + len;
      }
      const end = this.#frameEnd;
      if (this.#buffered < end) break;
      const all = this.#joined();
      const body = all.subarray(4, end);
      const rest = all.subarray(end);
      this.#chunks = rest.length > 0 ? [rest] : [];
      this.#buffered = rest.length;
      this.#frameEnd = null;
      let value: unknown;
      try {
        value = JSON.parse(body.toString('utf8'));
      } catch {
        throw new CredentialsError('CREDENTIALS_BAD_FRAME', `a ${end - 4}-byte frame that is not JSON`);
      }
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CredentialsError('CREDENTIALS_BAD_FRAME', 'a frame that is not a JSON object');
      out.push(value as Record<string, unknown>);
    }
    return out;
  }
}

/** The Ok answer; `now` is the host's clock (ms since the epoch) as it answers. */
export function credentialsAnswer(c: AwsCredentials, now: number): Record<string, string> {
  return {
    Status: 'Ok',
    AccessKeyId: c.accessKeyId,
    SecretAccessKey: c.secretAccessKey,
    ...(c.sessionToken === undefined ? {} : { SessionToken: c.sessionToken }),
    ...(c.expiration === undefined ? {} : { Expiration: c.expiration.toISOString(), Now: new Date(now).toISOString() }),
  };
}

export function errorAnswer(code: string, message: string): Record<string, string> {
  return { Status: 'Error', Code: code, Message: message };
}

const PRINTABLE = /^[\x21-\x7e]+$/;

/** Validates the host's answer (never echoing its fields: they are secrets). */
export function parseCredentialsAnswer(m: Record<string, unknown>): AwsCredentials {
  if (m.Status === 'Error') {
    const code = typeof m.Code === 'string' && /^[A-Z_]{1,64}$/.test(m.Code) ? m.Code : 'unknown';
    const message = typeof m.Message === 'string' ? m.Message.slice(0, 300) : '';
    throw new CredentialsError('CREDENTIALS_UNAVAILABLE', `the host has no credentials to give (${code}: ${message})`);
  }
  if (m.Status !== 'Ok') throw new CredentialsError('CREDENTIALS_BAD_FRAME', 'an answer without Status "Ok" or "Error"');
  const field = (name: string, required: boolean): string | undefined => {
    const v = m[name];
    if (v === undefined && !required) return undefined;
    if (typeof v !== 'string' || v.length === 0 || v.length > 16_384 || !PRINTABLE.test(v)) {
      throw new CredentialsError('CREDENTIALS_BAD_FRAME', `an answer whose ${name} is missing or not printable ASCII`);
    }
    return v;
  };
  const accessKeyId = field('AccessKeyId', true)!;
  const secretAccessKey = field('SecretAccessKey', true)!;
  const sessionToken = field('SessionToken', false);
  const expiration = dateField(m, 'Expiration');
  return { accessKeyId, secretAccessKey, ...(sessionToken === undefined ? {} : { sessionToken }), ...(expiration === undefined ? {} : { expiration }) };
}

/** The host's clock as it answered (the answer's Now, ms since the epoch), or undefined from a bridge that sends none. */
export function answerTime(m: Record<string, unknown>): number | undefined {
  return dateField(m, 'Now')?.getTime();
}

function dateField(m: Record<string, unknown>, name: string): Date | undefined {
  const v = m[name];
  if (v === undefined) return undefined;
  const d = typeof v === 'string' && v.length <= 64 ? new Date(v) : new Date(NaN);
  if (Number.isNaN(d.getTime())) throw new CredentialsError('CREDENTIALS_BAD_FRAME', `an answer whose ${name} is not a date`);
  return d;
}

// The agent's AWS credentials inside the enclave: fetched from the host bridge's credentials port
// (`enclave-agent bridge --credentials vsock`) on request, kept until shortly before they expire, then fetched
// again. The result is an AwsCredentialIdentityProvider-shaped function for an AWS SDK client
// (new KMSClient({ credentials })). Credentials stay in this process: never logged, never in the app's env.
// Expiry is judged on the host's clock (the answer's Now): an enclave's clock may be hours off.
import type { Duplex } from 'node:stream';
import { refreshingCredentials, type RefreshingCredentials } from '../host/credentials-cache.ts';
import { CredentialsError } from '../host/credentials-errors.ts';
import { answerTime, DEFAULT_CREDENTIALS_VSOCK_PORT, encodeFrame, FrameReader, GET_CREDENTIALS, MAX_RESPONSE_BYTES, parseCredentialsAnswer, type AwsCredentials } from '../host/credentials-protocol.ts';
import { connectStream, describeTarget, type StreamTarget } from '../transport/connect.ts';

/** The parent instance (vsock CID 3), where the bridge serves credentials. */
export const DEFAULT_CREDENTIALS_TARGET: StreamTarget = { kind: 'vsock', cid: 3, port: DEFAULT_CREDENTIALS_VSOCK_PORT };
/**
 * Fetch again once fewer than 2 minutes remain: less than the bridge's 5-minute margin, so what the bridge hands
 * out after its own refresh is always newer than what the agent drops.
 */
export const AGENT_REFRESH_MARGIN_MS = 2 * 60_000;
const REQUEST_TIMEOUT_MS = 10_000;
/** Clocks this close agree: nothing is moved (a second is nothing against the 2-minute margin). */
export const CLOCK_TOLERANCE_MS = 1_000;

export interface BridgeCredentialOptions {
  /** Where the bridge's credentials port is (default vsock:3:8002). */
  target?: StreamTarget;
  /** Opens the stream instead of connecting to `target` (tests). */
  connect?: () => Promise<Duplex>;
  refreshMarginMs?: number;
  now?: () => number;
  timeoutMs?: number;
}

/**
 * `c` with its Expiration moved onto this clock, when the host's clock (`hostNow`, from the answer) disagrees
 * with it: else credentials the host just issued would arrive "expired" on an enclave clock hours ahead, and be
 * kept past their expiry on one behind. The host answered between `sent` and `received` on this clock; taking
 * `sent` puts the expiry at the earliest it can be. A bridge that sends no Now leaves Expiration as it is.
 */
export function onLocalClock(c: AwsCredentials, hostNow: number | undefined, sent: number, received: number): AwsCredentials {
  if (c.expiration === undefined || hostNow === undefined) return c;
  if (hostNow >= sent - CLOCK_TOLERANCE_MS && hostNow <= received + CLOCK_TOLERANCE_MS) return c;
  const expiration = new Date(sent + (c.expiration.getTime() - hostNow));
  // Expiration and Now at opposite ends of the Date range move the expiry out of it: an Invalid Date, no expiry.
  if (Number.isNaN(expiration.getTime())) throw new CredentialsError('CREDENTIALS_BAD_FRAME', 'an answer whose Expiration, moved by its Now onto this clock, is not a date');
  return { ...c, expiration };
}

/** One request on a fresh connection: connect, send GetCredentials, read one answer, close. `now` is this clock. */
export async function fetchBridgeCredentials(connect: () => Promise<Duplex>, where: string, timeoutMs = REQUEST_TIMEOUT_MS, now: () => number = Date.now): Promise<AwsCredentials> {
  let stream: Duplex;
  try {
    stream = await connect();
  } catch (err) {
    throw new CredentialsError('CREDENTIALS_UNREACHABLE', `cannot reach the bridge's credentials port at ${where} (is the bridge running with --credentials?): ${(err as Error).message}`, { cause: err });
  }
  return new Promise<AwsCredentials>((resolve, reject) => {
    const reader = new FrameReader(MAX_RESPONSE_BYTES);
    let settled = false;
    const finish = (err: Error | null, c?: AwsCredentials): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stream.destroy();
      if (err) reject(err);
      else resolve(c!);
    };
    const timer = setTimeout(() => finish(new CredentialsError('CREDENTIALS_TIMEOUT', `no answer from the bridge's credentials port at ${where} within ${timeoutMs} ms`)), timeoutMs);
    stream.on('data', (chunk: Buffer) => {
      try {
        const frames = reader.push(chunk);
        if (frames.length > 0) finish(null, onLocalClock(parseCredentialsAnswer(frames[0]!), answerTime(frames[0]!), sent, now()));
      } catch (err) {
        finish(err as Error);
      }
    });
    stream.on('error', (err) => finish(new CredentialsError('CREDENTIALS_UNREACHABLE', `the credentials connection to ${where} failed: ${err.message}`)));
    stream.on('close', () => finish(new CredentialsError('CREDENTIALS_UNREACHABLE', `the bridge at ${where} closed the credentials connection without an answer`)));
    const sent = now();
    stream.write(encodeFrame({ Operation: GET_CREDENTIALS }));
  });
}

/** Credentials from the host bridge, cached until `refreshMarginMs` before they expire. */
export function bridgeCredentialProvider(opts: BridgeCredentialOptions = {}): RefreshingCredentials {
  const target = opts.target ?? DEFAULT_CREDENTIALS_TARGET;
  const timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const connect = opts.connect ?? (() => connectStream(target, { timeoutMs }));
  const where = opts.connect === undefined ? describeTarget(target) : 'the given stream';
  const now = opts.now ?? Date.now;
  return refreshingCredentials(() => fetchBridgeCredentials(connect, where, timeoutMs, now), {
    refreshMarginMs: opts.refreshMarginMs ?? AGENT_REFRESH_MARGIN_MS,
    now,
  });
}

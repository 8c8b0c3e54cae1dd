// How fast one session's RequestAttestation calls reach the NSM. Each is an NSM call (a slow device the whole
// enclave shares), and the wire lets a client repeat it at will (WIRE.md §5). A session may start
// `attestationBurst` at once, then one per `attestationIntervalMs` (limits.ts).
//
// One over the pace is not refused: the wire has no reply to RequestAttestation that keeps the session (Error
// needs a request id, ControlResult{success:false} announces a close). It waits its turn instead, holding one of
// the session's pending slots — so a client that keeps asking has maxPendingSessionRequests waiting and then
// is no longer read, as for any pending session request. Its Data and streams go on meanwhile.
import { setTimeout as sleep } from 'node:timers/promises';
import { TokenBucket, type Rate } from '../util/token-bucket.ts';
import type { SessionHost } from './session-types.ts';

/** Made at a session's first attestation: most sessions never ask for one more. */
const buckets = new WeakMap<SessionHost, TokenBucket>();

/**
 * Takes the session's next attestation turn: the ms to wait before its NSM call (0: now). The turn is spent
 * either way, so requests waiting get successive turns (the bucket goes below zero by the turns promised).
 */
export function attestationWaitMs(host: SessionHost, now = performance.now()): number {
  const { attestationBurst, attestationIntervalMs } = host.cfg.limits;
  const rate: Rate = { burst: attestationBurst, perSecond: 1000 / attestationIntervalMs };
  let bucket = buckets.get(host);
  if (bucket === undefined) {
    bucket = new TokenBucket(rate, now);
    buckets.set(host, bucket);
  }
  const tokens = bucket.level(rate, now);
  bucket.tokens = tokens - 1;
  return tokens >= 1 ? 0 : Math.ceil((1 - tokens) * attestationIntervalMs);
}

/** Waits `ms`; false when `signal` (the session ending) aborted the wait. */
export async function waitTurn(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

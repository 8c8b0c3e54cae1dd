// The answer's Now moves Expiration onto the enclave's clock (f4eea7a); a Now and an Expiration at opposite ends
// of the Date range must not yield an Invalid Date (NaN expiry: the cache then throws an untyped RangeError).
import { PassThrough } from 'node:stream';
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CredentialsError } from '../../src/host/credentials-errors.ts';
import { encodeFrame } from '../../src/host/credentials-protocol.ts';
import { fetchBridgeCredentials, onLocalClock } from '../../src/runtime/credentials-provider.ts';

const MAX_DATE = '+275760-09-13T00:00:00.000Z';
const MIN_DATE = '-271821-04-20T00:00:00.000Z';

/** A stream that answers the request with `answer` (what a bridge would send). */
function answering(answer: Record<string, unknown>): Duplex {
  const toAgent = new PassThrough();
  const fromAgent = new PassThrough();
  fromAgent.once('data', () => toAgent.write(encodeFrame(answer)));
  return Duplex.from({ readable: toAgent, writable: fromAgent });
}

describe('credentials: the bridge clock move stays within dates', () => {
  it('an Expiration and a Now that move the expiry out of the Date range are a bad frame', async () => {
    const t = Date.UTC(2026, 11, 7);
    expect(() => onLocalClock({ accessKeyId: 'A', secretAccessKey: 'S', expiration: new Date(MAX_DATE) }, new Date(MIN_DATE).getTime(), t, t)).toThrow(CredentialsError);
    const answer = { Status: 'Ok', AccessKeyId: 'A', SecretAccessKey: 'S', Expiration: MAX_DATE, Now: MIN_DATE };
    const err = await fetchBridgeCredentials(() => Promise.resolve(answering(answer)), 'test', 5_000, () => t).then(
      (c) => c,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CredentialsError);
    expect((err as CredentialsError).code).toBe('CREDENTIALS_BAD_FRAME');
  });

  it('a moved expiry still inside the range is kept', () => {
    const t = Date.UTC(2026, 11, 7);
    const c = onLocalClock({ accessKeyId: 'A', secretAccessKey: 'S', expiration: new Date(t + 3_600_000 - 7_200_000) }, t - 7_200_000, t, t);
    expect(c.expiration!.getTime()).toBe(t + 3_600_000);
  });
});

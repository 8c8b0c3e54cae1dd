// Short-lived AWS credentials, kept until `refreshMarginMs` before they expire, then fetched again (one fetch at
// a time however many callers wait). Used on both ends of the credentials channel: the bridge in front of the
// parent's credential chain, the agent in front of the bridge.
import { CredentialsError } from './credentials-errors.ts';
import type { AwsCredentials, CredentialSource } from './credentials-protocol.ts';

export interface RefreshingCredentialsOptions {
  /** Fetch again once fewer than this many milliseconds remain before Expiration. */
  refreshMarginMs: number;
  /** The clock (tests drive expiry with it). */
  now?: () => number;
  /** A refresh failed while the cached credentials were still valid: they are served meanwhile. */
  onStaleServed?: (err: unknown) => void;
}

/** An AwsCredentialIdentityProvider-shaped function, plus how often it went to its source. */
export interface RefreshingCredentials extends CredentialSource {
  readonly fetches: number;
}

export function refreshingCredentials(source: CredentialSource, opts: RefreshingCredentialsOptions): RefreshingCredentials {
  const now = opts.now ?? Date.now;
  let cached: AwsCredentials | undefined;
  let inflight: Promise<AwsCredentials> | undefined;
  let fetches = 0;

  const fresh = (c: AwsCredentials): boolean => c.expiration === undefined || c.expiration.getTime() - now() > opts.refreshMarginMs;
  const valid = (c: AwsCredentials): boolean => c.expiration === undefined || c.expiration.getTime() > now();

  const refresh = (): Promise<AwsCredentials> => {
    inflight ??= (async () => {
      fetches++;
      try {
        // forceRefresh: a memoizing source (the SDK's default chain) must not hand back what it cached.
        const c = await source({ forceRefresh: true });
        // Expired on arrival (a skewed clock, a stale source): never cached nor handed on as if usable.
        if (!valid(c)) throw new CredentialsError('CREDENTIALS_UNAVAILABLE', `the credential source gave credentials that expired at ${c.expiration!.toISOString()}`);
        cached = c;
        return c;
      } catch (err) {
        if (cached !== undefined && valid(cached)) {
          opts.onStaleServed?.(err);
          return cached;
        }
        throw err;
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  };

  const provider = (async (options?: { forceRefresh?: boolean }) => {
    if (cached !== undefined && options?.forceRefresh !== true && fresh(cached)) return cached;
    return refresh();
  }) as RefreshingCredentials;
  Object.defineProperty(provider, 'fetches', { get: () => fetches });
  return provider;
}

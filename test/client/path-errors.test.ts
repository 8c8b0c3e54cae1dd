// A malformed request path is refused (CLIENT_BAD_OPTIONS) with a message that says what is wrong without
// quoting the path: a path can carry a token (?access_token=...), and error messages end up in logs.
import { describe, expect, it } from 'vitest';
import { ClientError } from '../../src/client/errors.ts';
import { encodeRequestHead } from '../../src/client/http-codec.ts';
import { requestTarget } from '../../src/client/request.ts';

const SECRET = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc';

function refusal(f: () => unknown): ClientError {
  try {
    f();
  } catch (err) {
    return err as ClientError;
  }
  throw new Error('expected a refusal');
}

describe('request path errors', () => {
  it.each([
    ['a relative path', `api/pay?token=${SECRET}`, /^path: expected "\/\.\.\." or an absolute URL, found \d+ characters, starting with a letter$/],
    ['an absolute URL that does not parse', `https://[${SECRET}/x`, /^path: an absolute URL that does not parse \(\d+ characters, starting with a letter\)$/],
  ])('fetch target, %s: CLIENT_BAD_OPTIONS, the path not in the message', (_what, path, message) => {
    const err = refusal(() => requestTarget(path));
    expect(err).toBeInstanceOf(ClientError);
    expect(err.code).toBe('CLIENT_BAD_OPTIONS');
    expect(err.message).toMatch(message);
    for (const part of [SECRET, SECRET.slice(0, 8), 'api/pay', 'token']) expect(err.message).not.toContain(part);
  });

  it('request head: a target not starting with "/" is refused without quoting it', () => {
    const err = refusal(() => encodeRequestHead({ method: 'GET', path: `${SECRET}/x`, host: 'h', headers: [] }));
    expect(err.code).toBe('CLIENT_BAD_OPTIONS');
    expect(err.message).toBe(`path: expected a target starting with "/", found ${SECRET.length + 2} characters, starting with a letter`);
  });
});

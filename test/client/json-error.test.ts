// client.json() on a body that is not JSON: the error names the position only, never bytes of the (decrypted) body —
// not in its message, nor through a cause that util.inspect or pino would print.
import { inspect } from 'node:util';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ClientError } from '../../src/client/errors.ts';
import { clientVerbs } from '../../src/client/verbs.ts';

const MARKER = '4111111111111111';

async function jsonError(body: string): Promise<ClientError> {
  const verbs = clientVerbs((() => Promise.resolve(new Response(body, { status: 200 }))) as never);
  const err = await verbs.json('/card').catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ClientError);
  return err as ClientError;
}

describe('client.json() on a non-JSON body', () => {
  it('is CLIENT_PROTOCOL with the position, and no body bytes in util.inspect or a pino line', async () => {
    for (const body of [`pan=${MARKER}&cvv=123`, `{"pan": ${MARKER}x}`, `{"pan": "${MARKER}"`, `{"pan": "${MARKER}"`.repeat(20), `{"pan": ${MARKER}`]) {
      const err = await jsonError(body);
      expect(inspect(err, { depth: 10 })).not.toContain(MARKER.slice(0, 6));
      expect(err.code).toBe('CLIENT_PROTOCOL');
      expect(err.cause).toBeUndefined();
      expect(err.message).toMatch(/is not JSON \((at position [0-9]+|unexpected token|ends early); [0-9]+ characters\)$/);
      const lines: string[] = [];
      pino({}, { write: (s: string) => lines.push(s) }).error({ err }, 'request failed');
      expect(lines.join('')).toContain('CLIENT_PROTOCOL');
      expect(lines.join('')).not.toContain(MARKER.slice(0, 6));
    }
  });

  it('names neither the path nor the URL it was asked for: a query or userinfo may hold a credential', async () => {
    const token = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc';
    const verbs = clientVerbs((() => Promise.resolve(new Response('not json', { status: 200 }))) as never);
    for (const path of [`/card?access_token=${token}`, new URL(`https://alice:${token}@enclave.test/card`)]) {
      const err = (await verbs.json(path).catch((e: unknown) => e)) as ClientError;
      expect(err.code).toBe('CLIENT_PROTOCOL');
      expect(err.message).toBe('the response (status 200) is not JSON (unexpected token; 8 characters)');
      expect(inspect(err, { depth: 10 })).not.toContain(token.slice(0, 8));
    }
  });
});

// A bridge URL may carry credentials (`wss://user:pass@host/`): the connect errors name the URL without them,
// and so does `enclave-agent fetch`, which prints such an error when its diagnosis finds nothing wrong.
import { describe, expect, it } from 'vitest';
import type { WebSocketConstructor } from '../../src/client/channel.ts';
import { ClientError, connect } from '../../src/client/index.ts';
import { connect as connectNode } from '../../src/client/node.ts';
import { maskUserinfo } from '../../src/util/url-userinfo.ts';

const URL_WITH_CREDENTIALS = 'wss://alice:hunter2@bridge.test:8443/';
const PINS = { PCR0: '00'.repeat(48), PCR1: '00'.repeat(48), PCR2: '00'.repeat(48) };

type How = 'throws' | 'error' | 'close' | 'never opens';

/** A WebSocket that fails as told once a listener is in place (no network). */
function fakeWebSocket(how: How): WebSocketConstructor {
  return class {
    binaryType = 'blob';
    readyState = 0;
    bufferedAmount = 0;
    constructor() {
      if (how === 'throws') throw new SyntaxError('refused by the platform');
    }
    send(): void {}
    close(): void {}
    addEventListener(type: string, listener: (event: never) => void): void {
      if (type === how) setTimeout(() => listener({ code: 1006, reason: '' } as never), 0);
    }
  } as unknown as WebSocketConstructor;
}

async function failure(how: How): Promise<ClientError> {
  try {
    await connect(URL_WITH_CREDENTIALS, { pcrs: PINS, WebSocket: fakeWebSocket(how), reconnect: false, connectTimeoutMs: how === 'never opens' ? 20 : 30_000 });
  } catch (err) {
    return err as ClientError;
  }
  throw new Error('expected connect() to fail');
}

describe('connect errors never quote the credentials of the URL', () => {
  it.each<[How, string]>([
    ['throws', 'CLIENT_CONNECT_FAILED'],
    ['error', 'CLIENT_CONNECT_FAILED'],
    ['close', 'CLIENT_CONNECT_FAILED'],
    ['never opens', 'CLIENT_TIMEOUT'],
  ])('a WebSocket that %s: %s naming wss://***@bridge.test:8443/', async (how, code) => {
    const err = await failure(how);
    expect(err).toBeInstanceOf(ClientError);
    expect(err.code).toBe(code);
    expect(err.message).toContain('wss://***@bridge.test:8443/');
    expect(err.message).not.toMatch(/alice|hunter2/);
  });

  it.each([
    ['ws://', 'wss://alice:hunter2@[bridge.test/'],
    ['https://', 'https://alice:hunter2@[enclave.test/'],
  ])('a %s URL that does not parse: CLIENT_BAD_OPTIONS describing it, not quoting it', async (_scheme, url) => {
    const err = (await connectNode(url, { pcrs: PINS }).catch((e: unknown) => e)) as ClientError;
    expect(err).toBeInstanceOf(ClientError);
    expect(err.code).toBe('CLIENT_BAD_OPTIONS');
    expect(err.message).toMatch(/^url: expected an absolute .* URL, found \d+ characters, starting with a letter$/);
    expect(err.message).not.toMatch(/alice|hunter2/);
  });

  it('maskUserinfo masks the userinfo only', () => {
    expect(maskUserinfo('ws://u:p@h:1/x?y=1')).toBe('ws://***@h:1/x?y=1');
    expect(maskUserinfo('wss://token@h/')).toBe('wss://***@h/');
    expect(maskUserinfo('wss://h/a@b')).toBe('wss://h/a@b');
    expect(maskUserinfo('wss://h/?to=a@b')).toBe('wss://h/?to=a@b');
  });
});

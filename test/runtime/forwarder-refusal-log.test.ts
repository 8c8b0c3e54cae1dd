// The runtime's HTTP forwarder (forwarder-setup.ts, the main thread's and each session thread's) counts refused
// ev: values into one operator-log line per 10 s (decrypt-ev.ts). Its close() writes what the last interval
// counted, as every other refusal log's owner does at close: the interval's timer is unref'd, so a thread or
// process stopping within it dropped those counts (failed before the fix: no line after close()).
import { afterEach, describe, expect, it } from 'vitest';
import { configFromObject } from '../../src/config.ts';
import { DecryptScheduler } from '../../src/crypto/decrypt-scheduler.ts';
import { encryptValue } from '../../src/crypto/ev-format.ts';
import { Keyring } from '../../src/crypto/keyring.ts';
import { REFUSALS_MESSAGE } from '../../src/http/stages/decrypt-ev.ts';
import type { Forwarder } from '../../src/responder/forwarder.ts';
import { createForwarder } from '../../src/runtime/forwarder-setup.ts';
import { memoryLog } from '../faults/stack.ts';
import { dataRequest, startApp, type TestApp } from '../http/helpers.ts';

let app: TestApp | undefined;
let fwd: Forwarder | undefined;

afterEach(async () => {
  await fwd?.close?.();
  fwd = undefined;
  await app?.close();
  app = undefined;
});

describe('runtime HTTP forwarder: refused ev: values in the operator log', () => {
  it('close() writes the counts of the interval still open', async () => {
    app = await startApp((_req, res) => res.end('ok'));
    const log = memoryLog();
    const keyring = Keyring.generate();
    const config = configFromObject({ mode: 'http', app: { port: app.port, startup_grace_ms: 0 }, api: { enabled: false } });
    fwd = await createForwarder({ config, logger: log.logger, keyring, decryptScheduler: new DecryptScheduler(), observer: { observeExchange() {}, rawRequest() {} } });
    const bad = encryptValue('4242', Keyring.generate().publicKeys()); // another enclave's value
    const res = await dataRequest(fwd, `GET / HTTP/1.1\r\nHost: app.test\r\nX-Card: ${bad}\r\nConnection: close\r\n\r\n`);
    expect(res.status).toBe(422);
    const lines = (): Record<string, unknown>[] => log.records().filter((r) => r.msg === REFUSALS_MESSAGE);
    expect(lines()).toEqual([]); // within the interval: counted, not yet written
    await fwd.close?.();
    expect(lines()).toHaveLength(1);
    expect(lines()[0]).toMatchObject({ level: 40, total: 1 });
    expect(log.text()).not.toContain('4242');
  });
});

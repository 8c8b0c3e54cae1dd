// ENCLAVE_AGENT_REQUIRE_ADDON=1 (CI on Linux x64): the addon must load. Without this, a C compile error only
// turned the native tests into skips and the run stayed green.
import { accessSync, constants } from 'node:fs';
import { expect, it } from 'vitest';
import { defaultWrapperPath } from '../../src/runtime/die-with-agent.ts';
import { loadNative } from '../../src/transport/native.ts';
import { addonRequired } from './helpers.ts';

it.runIf(addonRequired)('loads the addon and every part of it, and finds the die-with-parent wrapper, when ENCLAVE_AGENT_REQUIRE_ADDON=1', () => {
  // the load error (path, dlopen message) is the failure message when it does not
  const native = loadNative() as unknown as Record<string, unknown>;
  for (const fn of ['listen', 'connect', 'nsmRequest', 'bringUpLoopback', 'intArrayEncode', 'aeadNew', 'tcpPeerUnread']) {
    expect(typeof native[fn], fn).toBe('function');
  }
  expect(() => accessSync(defaultWrapperPath(), constants.X_OK)).not.toThrow();
});

// A key or plaintext put where enclave.toml expects a boolean, a table or an array of hashes must never be
// quoted back in the load error (errors reach logs and CI output). The error names the key and the type only,
// as keys[i] and [secrets] entries already did.
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.ts';
import { errorOf } from './helpers.ts';

const KEY = 'sk_live_MY-REAL-API-KEY';
const PLAIN = 'MY-DB-PASSWORD-hunter2';

describe('enclave.toml: secrets in the wrong place are not echoed', () => {
  it.each([
    ['api_key_auth', `api_key_auth = "${KEY}"\n`, KEY, 'a string'],
    ['api_key_auth.enabled', `[api_key_auth]\nenabled = "${KEY}"\n`, KEY, 'a string'],
    ['api_key_auth.keys', `[api_key_auth]\nkeys = "${KEY}"\n`, KEY, 'a string'],
    ['api_key_auth.keys', `[api_key_auth]\nkeys = 918273645\n`, '918273645', 'a number'],
    ['secrets', `secrets = "${PLAIN}"\n`, PLAIN, 'a string'],
  ])('%s: names the key and the type, not the value', (key, toml, secret, type) => {
    const e = errorOf(() => parseConfig(toml));
    expect(e.code).toBe('CONFIG_BAD_VALUE');
    expect(e.message).toContain(`${key}: expected`);
    expect(e.message).toContain(`found ${type} (value not shown)`);
    expect(e.message).not.toContain(secret);
  });

  it('other keys still say what they found', () => {
    expect(errorOf(() => parseConfig('debug = "yes"')).message).toContain('found string "yes"');
  });
});

import { describe, expect, it } from 'vitest';
import { parseConfig, type ConfigError } from '../../src/config.ts';

const errorOf = (f: () => unknown): ConfigError => {
  try {
    f();
  } catch (err) {
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
};

describe('[keyring] source = "kms"', () => {
  it('loads file, region and an https endpoint', () => {
    const c = parseConfig('[keyring]\nsource = "kms"\nfile = "/keys/keyring.sealed.json"\nregion = "eu-west-1"\nendpoint = "https://vpce-1.kms.eu-west-1.vpce.amazonaws.com"');
    expect(c.keyring).toMatchObject({ source: 'kms', file: '/keys/keyring.sealed.json', region: 'eu-west-1', endpoint: 'https://vpce-1.kms.eu-west-1.vpce.amazonaws.com' });
  });

  it('needs file and region, refuses a non-https endpoint and a malformed region', () => {
    expect(errorOf(() => parseConfig('[keyring]\nsource = "kms"\nregion = "eu-west-1"')).message).toContain('keyring.file: required');
    expect(errorOf(() => parseConfig('[keyring]\nsource = "kms"\nfile = "k.json"')).message).toContain('keyring.region: required');
    expect(errorOf(() => parseConfig('[keyring]\nsource = "kms"\nfile = "k.json"\nregion = "eu-west-1"\nendpoint = "http://kms.local"')).message).toContain('keyring.endpoint');
    expect(errorOf(() => parseConfig('[keyring]\nsource = "kms"\nfile = "k.json"\nregion = "EU WEST"')).message).toContain('keyring.region');
  });

  it('refuses kms keys with another source instead of ignoring them', () => {
    expect(errorOf(() => parseConfig('[keyring]\nsource = "dev"\nregion = "eu-west-1"')).message).toContain('keyring.region: only used with keyring.source = "kms"');
    expect(errorOf(() => parseConfig('[keyring]\nfile = "k.json"')).message).toContain('keyring.file: only used');
  });
});

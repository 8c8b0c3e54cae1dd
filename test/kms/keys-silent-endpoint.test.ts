// The operator's `keys seal` and `keys rotate` against a KMS endpoint that accepts and never answers (a proxy
// or endpoint gone silent): the AWS SDK's requestTimeout only warns, so without a deadline of our own each
// hung for good. With --kms-timeout-ms each GenerateDataKey call ends at its deadline and the command fails
// with KMS_UNREACHABLE naming KMS, the call and the deadline; nothing is written.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { command as rotate } from '../../src/cli/keys-rotate.ts';
import { command as seal } from '../../src/cli/keys-seal.ts';
import { command as secretsSeal } from '../../src/cli/secrets-seal.ts';
import type { CliIo } from '../../src/cli/types.ts';
import { KeyMaterial } from '../../src/crypto/keyring.ts';
import { sealKeyring } from '../../src/crypto/sealed-keyring.ts';

const KEY = 'arn:aws:kms:eu-west-1:111122223333:key/silent-endpoint-test';
const io = { out: () => {}, err: () => {}, stdin: () => Promise.resolve(new Uint8Array(0)) };
let dir: string;
let server: net.Server;
let endpoint: string;
let connections = 0;
const sockets = new Set<net.Socket>();

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'keys-silent-'));
  // The standard chain finds these first: no files, no instance metadata.
  vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDKEYSSILENTTEST01');
  vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'keys-silent-endpoint-secret-not-a-real-key');
  vi.stubEnv('AWS_SESSION_TOKEN', '');
  vi.stubEnv('AWS_PROFILE', '');
  vi.stubEnv('AWS_CONFIG_FILE', path.join(dir, 'none'));
  vi.stubEnv('AWS_SHARED_CREDENTIALS_FILE', path.join(dir, 'none'));
  vi.stubEnv('AWS_EC2_METADATA_DISABLED', 'true');
  // Reads the ClientHello and everything after it; answers nothing, closes nothing.
  server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('error', () => {});
    s.once('close', () => sockets.delete(s));
    s.resume();
  });
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0 }, () => r()));
  endpoint = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
});
afterAll(async () => {
  vi.unstubAllEnvs();
  for (const s of sockets) s.destroy();
  await new Promise((r) => server?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

const unreachable = (): RegExp => new RegExp(`^KMS GenerateDataKey for ${KEY} in eu-west-1 \\(${endpoint.replace(/\./g, '\\.')}\\): no answer within 300 ms$`);

describe('keys seal / keys rotate: a KMS endpoint that accepts and never answers', () => {
  it('keys seal fails KMS_UNREACHABLE at --kms-timeout-ms, writes nothing', { timeout: 20_000 }, async () => {
    const out = path.join(dir, 'sealed.json');
    const before = connections;
    const err = await seal.run(['--kms-key-id', KEY, '--region', 'eu-west-1', '--endpoint', endpoint, '--out', out, '--kms-timeout-ms', '300'], io).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KMS_UNREACHABLE', message: expect.stringMatching(unreachable()) });
    expect(connections).toBeGreaterThan(before); // it did reach the endpoint
    expect(existsSync(out)).toBe(false);
  });

  it('keys rotate fails the same way, writes nothing', { timeout: 20_000 }, async () => {
    const current = path.join(dir, 'current.json');
    writeFileSync(current, sealKeyring(KeyMaterial.generate(), new Uint8Array(32).fill(7), { keyId: KEY, region: 'eu-west-1', ciphertextBlob: new Uint8Array([1, 2, 3]) }));
    const out = path.join(dir, 'rotated.json');
    const err = await rotate.run(['--in', current, '--out', out, '--endpoint', endpoint, '--kms-timeout-ms', '300'], io).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KMS_UNREACHABLE', message: expect.stringMatching(unreachable()) });
    expect(existsSync(out)).toBe(false);
  });

  it('refuses a --kms-timeout-ms out of range before calling KMS', async () => {
    const before = connections;
    await expect(seal.run(['--kms-key-id', KEY, '--region', 'eu-west-1', '--out', path.join(dir, 'x.json'), '--kms-timeout-ms', '5'], io)).rejects.toThrow(/--kms-timeout-ms expects 100\.\.600000, found 5/);
    await expect(rotate.run(['--in', path.join(dir, 'none'), '--out', path.join(dir, 'y.json'), '--kms-timeout-ms', 'soon'], io)).rejects.toThrow(/--kms-timeout-ms expects an integer/);
    expect(connections).toBe(before);
  });
});

describe('secrets seal --kms-key-id: the same GenerateDataKey, the same --kms-timeout-ms', () => {
  // Failed before the fix: secrets seal had no --kms-timeout-ms ("Unknown option"), only the fixed 30 s.
  const secret = (): { io: CliIo; printed: string[]; stdinRead: () => boolean } => {
    const printed: string[] = [];
    let read = false;
    return {
      io: { out: (l: string) => void printed.push(l), err: () => {}, stdin: () => ((read = true), Promise.resolve(new TextEncoder().encode('s3cret-not-printed'))) },
      printed,
      stdinRead: () => read,
    };
  };

  it('fails KMS_UNREACHABLE at --kms-timeout-ms, prints nothing', { timeout: 20_000 }, async () => {
    const { io: sio, printed } = secret();
    const before = connections;
    const err = await secretsSeal.run(['DB_PASSWORD', '--kms-key-id', KEY, '--region', 'eu-west-1', '--endpoint', endpoint, '--kms-timeout-ms', '300'], sio).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'KMS_UNREACHABLE', message: expect.stringMatching(unreachable()) });
    expect(connections).toBeGreaterThan(before);
    expect(printed).toEqual([]);
  });

  it('refuses a bad --kms-timeout-ms before reading stdin or calling KMS; documents the flag', async () => {
    const before = connections;
    for (const [value, why] of [['5', /--kms-timeout-ms expects 100\.\.600000, found 5/], ['600001', /--kms-timeout-ms expects 100\.\.600000, found 600001/], ['soon', /--kms-timeout-ms expects an integer/]] as const) {
      const { io: sio, stdinRead } = secret();
      await expect(secretsSeal.run(['DB_PASSWORD', '--kms-key-id', KEY, '--region', 'eu-west-1', '--endpoint', endpoint, '--kms-timeout-ms', value], sio)).rejects.toThrow(why);
      expect(stdinRead()).toBe(false);
    }
    const { io: sio } = secret();
    await expect(secretsSeal.run(['DB_PASSWORD', '--key', 'AAAA', '--kms-timeout-ms', '300'], sio)).rejects.toThrow(/--kms-timeout-ms go with --kms-key-id/);
    expect(connections).toBe(before);
    expect(secretsSeal.help).toMatch(/--kms-key-id ARN --region R \[--endpoint URL\] \[--kms-timeout-ms MS\]/);
    expect(secretsSeal.help).toContain('must be answered within MS (default\n                   30000; 100..600000)');
  });
});

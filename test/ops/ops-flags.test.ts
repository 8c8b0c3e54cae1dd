// The command-line side of the ops port: bridge --ops-listen/--ops-agent, run --listen tcp:PUBLIC,CONTROL,OPS.
import { describe, expect, it } from 'vitest';
import { parseBridgeArgs } from '../../src/cli/bridge.ts';
import { parseListen } from '../../src/cli/run-command.ts';

describe('bridge --ops-listen', () => {
  it('defaults the ops target to the vsock agent\'s CID, port 5009', () => {
    const o = parseBridgeArgs(['--enclave-cid', '16', '--ops-listen', '0.0.0.0:9464']);
    expect(o.ops).toEqual({ listen: { host: '0.0.0.0', port: 9464 }, target: { kind: 'vsock', cid: 16, port: 5009 } });
  });

  it('takes --ops-agent for a tcp/unix agent, and requires it there', () => {
    const o = parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--ops-listen', '[::1]:9464', '--ops-agent', 'tcp:127.0.0.1:5009']);
    expect(o.ops).toEqual({ listen: { host: '::1', port: 9464 }, target: { kind: 'tcp', host: '127.0.0.1', port: 5009 } });
    expect(() => parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--ops-listen', '127.0.0.1:9464'])).toThrow(/needs --ops-agent/);
    expect(() => parseBridgeArgs(['--agent', 'tcp:127.0.0.1:5000', '--ops-agent', 'tcp:127.0.0.1:5009'])).toThrow(/goes with --ops-listen/);
    expect(() => parseBridgeArgs(['--enclave-cid', '16', '--ops-listen', '9464'])).toThrow(/--ops-listen expects HOST:PORT/);
  });

  it('no ops port unless asked', () => {
    expect(parseBridgeArgs(['--enclave-cid', '16']).ops).toBeUndefined();
  });
});

describe('run --listen tcp:PUBLIC,CONTROL[,OPS]', () => {
  it('takes an optional ops port, distinct from the others', () => {
    expect(parseListen('tcp:5000,5007')).toEqual({ kind: 'tcp', host: '127.0.0.1', publicPort: 5000, controlPort: 5007 });
    expect(parseListen('tcp:5000,5007,5009')).toEqual({ kind: 'tcp', host: '127.0.0.1', publicPort: 5000, controlPort: 5007, opsPort: 5009 });
    expect(parseListen('tcp:0,0,0')).toMatchObject({ opsPort: 0 });
    expect(() => parseListen('tcp:5000,5007,5000')).toThrow(/the ops port must differ/);
  });
});

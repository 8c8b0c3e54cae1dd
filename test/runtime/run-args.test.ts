import { describe, expect, it } from 'vitest';
import { parseListen, parseRunArgs, splitRunArgs } from '../../src/cli/run-command.ts';

describe('enclave-agent run arguments', () => {
  it('splits the app command at "--" or at the first argument that is not an option', () => {
    expect(splitRunArgs(['--nsm', 'simulator', '--', 'node', '--inspect', 'app.js'])).toEqual({ flags: ['--nsm', 'simulator'], command: ['node', '--inspect', 'app.js'] });
    expect(splitRunArgs(['--config', 'x.toml', 'node', 'server.js', '--port', '3'])).toEqual({ flags: ['--config', 'x.toml'], command: ['node', 'server.js', '--port', '3'] });
    expect(splitRunArgs(['--listen=vsock', 'python', '-m', 'app'])).toEqual({ flags: ['--listen=vsock'], command: ['python', '-m', 'app'] });
    expect(splitRunArgs(['--nsm', 'device'])).toEqual({ flags: ['--nsm', 'device'], command: [] });
  });

  it('defaults to vsock and the NSM device, and parses the TCP and Unix stand-ins', () => {
    const a = parseRunArgs(['--', 'node', 'app.js'], {});
    expect(a).toMatchObject({ listen: { kind: 'vsock' }, nsm: 'device', loopback: 'auto', command: ['node', 'app.js'] });
    expect(parseListen('tcp:0,0')).toEqual({ kind: 'tcp', host: '127.0.0.1', publicPort: 0, controlPort: 0 });
    expect(parseListen('tcp:5000,5007')).toEqual({ kind: 'tcp', host: '127.0.0.1', publicPort: 5000, controlPort: 5007 });
    expect(parseListen('tcp:5000,5007,5009')).toEqual({ kind: 'tcp', host: '127.0.0.1', publicPort: 5000, controlPort: 5007, opsPort: 5009 });
    expect(parseListen('unix:/run/agent')).toEqual({ kind: 'unix', dir: '/run/agent' });
  });

  it('refuses bad flags with a usage error that names the flag', () => {
    expect(() => parseListen('tcp:5000')).toThrow('--listen: expected tcp:PUBLIC,CONTROL[,OPS], found "tcp:5000"');
    expect(() => parseListen('tcp:5000,5007,5000')).toThrow('the ops port must differ');
    expect(() => parseListen('tcp:5000,5000')).toThrow('must differ');
    expect(() => parseListen('tcp:70000,1')).toThrow('public port must be 0..65535');
    expect(() => parseListen('vsock:5000')).toThrow('expected vsock, tcp:PUBLIC,CONTROL[,OPS] or unix:DIR');
    expect(() => parseRunArgs(['--nsm', 'fake', '--', 'x'], {})).toThrow('--nsm: expected device or simulator, found "fake"');
    expect(() => parseRunArgs(['--loopback', 'maybe', '--', 'x'], {})).toThrow('--loopback: expected auto, on or off');
    expect(() => parseRunArgs(['--log-target', 'udp:1', '--', 'x'], {})).toThrow('--log-target');
    expect(() => parseRunArgs(['--bogus', '--', 'x'], {})).toThrow(/Unknown option '--bogus'/);
  });

  it('takes the config from --config, else $ENCLAVE_AGENT_CONFIG', () => {
    expect(parseRunArgs(['--config', '/etc/a.toml', '--', 'x'], { ENCLAVE_AGENT_CONFIG: '/b.toml' }).configPath).toBe('/etc/a.toml');
    expect(parseRunArgs(['--', 'x'], { ENCLAVE_AGENT_CONFIG: '/b.toml' }).configPath).toBe('/b.toml');
  });
});

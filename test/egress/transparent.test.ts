// Transparent mode for real, as root, in network namespaces this test creates: `enclave-agent run` in the
// "enc" namespace (only `lo`) installs its iptables rules and DNS stub at boot; apps there (real curl, node)
// use plain URLs; the host dialer runs in the root namespace on a UNIX socket (standing in for vsock) and
// reaches python's http.server in the "net" namespace over a veth pair. A direct enc ↔ net link (which a real
// enclave lacks) shows UDP other than DNS and IPv6 are stopped by the rules, not by a missing route: probes over
// it arrive before the agent starts and not after. Skipped only when not root.
// The namespace addresses are benchmarking ones (198.18.0.0/15), not global, so a pin could never authorise
// them: DNS answers global stand-ins, and a NAT between the agent and the host dialer maps them to the servers.
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEgressDialer, type EgressDialer } from '../../src/host/egress-dialer.ts';
import { BIN } from '../cli/spawn.ts';
import { publicIp, sha256, startFlowNat, startTestDns, type TestDns } from './helpers.ts';
import { createNetns, type Netns } from './netns.ts';

const isRoot = process.getuid?.() === 0;
/** What ok.test and deny.test resolve to (the NAT dials ns.serverIp and ns.otherIp for them). */
const SERVER = publicIp(10);
const OTHER = publicIp(11);

// In "net": a TCP listener on [::]:9091 and UDP on 0.0.0.0:9999 and [::]:9999, printing what arrives.
const SINK = `const log = (s) => console.log(s);
require('node:net').createServer((s) => { s.on('error', () => {}); s.on('data', (d) => log('tcp ' + String(d).trim())); }).listen(9091, '::');
const dgram = require('node:dgram');
const u4 = dgram.createSocket('udp4'); u4.on('message', (m) => log('udp ' + m)); u4.bind(9999, '0.0.0.0');
const u6 = dgram.createSocket({ type: 'udp6', ipv6Only: true }); u6.on('message', (m) => log('udp ' + m));
u6.bind(9999, '::', () => log('ready'));`;
// In "enc": UDP to IPv4 and IPv6 port 9999 and TCP to IPv6 port 9091 of "net" over the direct link, each tagged;
// prints what each attempt returned.
const PROBE = `const [tag, ip4, ip6] = process.argv.slice(1);
const res = {};
const udp = (type, ip) => new Promise((r) => {
  const s = require('node:dgram').createSocket(type);
  s.on('error', (e) => { res[type] = e.code; r(); });
  s.send(tag + '-' + type, 9999, ip, (e) => { res[type] = e ? e.code : 'sent'; setTimeout(() => { s.close(); r(); }, 100); });
});
const tcp = () => new Promise((r) => {
  const s = require('node:net').connect({ host: ip6, port: 9091 });
  s.on('connect', () => { res.tcp6 = 'connected'; s.end(tag + '-tcp6'); });
  s.on('error', (e) => { res.tcp6 = e.code; });
  s.on('close', () => r());
  setTimeout(() => { res.tcp6 ??= 'timeout'; s.destroy(); }, 5000).unref();
});
udp('udp4', ip4).then(() => udp('udp6', ip6)).then(tcp).then(() => console.log(JSON.stringify(res)));`;

describe.skipIf(!isRoot)('transparent egress in network namespaces', () => {
  let ns: Netns;
  let dir: string;
  let dns: TestDns;
  let dialer: EgressDialer;
  let nat: net.Server;
  let web: ChildProcess;
  let holder: ChildProcess;
  let webLog = '';
  let sink: ChildProcess;
  let sinkLog = '';
  let agent: ChildProcess;
  let agentOut = '';
  let agentExit: Promise<number | null>;
  const file = randomBytes(200 * 1024);

  const waitFor = async (cond: () => boolean | Promise<boolean>, what: string, ms = 20_000): Promise<void> => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await cond()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out waiting for ${what}; agent output: ${agentOut.slice(-3000)}`);
  };
  const egressRecords = (): Record<string, unknown>[] =>
    agentOut
      .split('\n')
      .filter((l) => l.includes('"type":"egress"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const curl = (args: string[], timeoutMs = 20_000) => ns.exec(ns.enc, ['curl', '-sS', '--max-time', '15', ...args], { timeoutMs });

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'enclave-agent-egress-ns-'));
    ns = await createNetns();
    mkdirSync(path.join(dir, 'www'));
    writeFileSync(path.join(dir, 'www', 'file.bin'), file);
    writeFileSync(path.join(dir, 'www', 'big.bin'), randomBytes(4 * 1024 * 1024));
    web = ns.spawn(ns.net, ['/usr/bin/python3', '-m', 'http.server', '8080', '--bind', '0.0.0.0', '--directory', path.join(dir, 'www')]);
    web.stderr!.on('data', (c: Buffer) => (webLog += c.toString()));
    // A server that greets and then holds the connection open (a flow that is still open when it matters).
    holder = ns.spawn(ns.net, [process.execPath, '-e', "require('node:net').createServer((s) => { s.on('error', () => {}); s.resume(); s.write('hello\\n'); }).listen(9090, '0.0.0.0')"]);
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          const s = net.connect({ host: ns.serverIp, port: 8080 }, () => {
            s.destroy();
            resolve(true);
          });
          s.on('error', () => resolve(false));
        }),
      'python http.server in the net namespace',
    );
    // Before the agent's rules: the direct link carries UDP (v4, v6) and IPv6 TCP from "enc" to "net".
    sink = ns.spawn(ns.net, [process.execPath, '-e', SINK]);
    sink.stdout!.on('data', (c: Buffer) => (sinkLog += c.toString()));
    await waitFor(() => sinkLog.includes('ready'), 'the UDP/TCP sink in the net namespace');
    const control = await ns.exec(ns.enc, [process.execPath, '-e', PROBE, 'control', ns.linkIp, ns.linkIp6]);
    expect(JSON.parse(control.stdout)).toEqual({ udp4: 'sent', udp6: 'sent', tcp6: 'connected' });
    await waitFor(() => ['udp control-udp4', 'udp control-udp6', 'tcp control-tcp6'].every((l) => sinkLog.includes(l)), 'the control probes to arrive');
    dns = await startTestDns({ 'ok.test': [SERVER], 'deny.test': [OTHER], 'rebind.test': ['127.0.0.1', '169.254.169.254'] });
    dialer = await startEgressDialer({ listen: { kind: 'unix', path: path.join(dir, 'host.sock') }, resolvers: [{ host: '127.0.0.1', port: dns.port }], allowNonGlobal: ['198.18.0.0/15'] });
    nat = await startFlowNat({ path: path.join(dir, 'nat.sock') }, { path: path.join(dir, 'host.sock') }, { [SERVER]: ns.serverIp, [OTHER]: ns.otherIp });
    const cfg = path.join(dir, 'enclave.toml');
    writeFileSync(cfg, '[listen]\ndrain_timeout_ms = 2000\n\n[egress]\nenabled = true\nmode = "transparent"\ndestinations = ["ok.test:8080", "ok.test:9090", "rebind.test"]\n');
    agent = ns.spawn(ns.enc, [
      process.execPath, BIN, 'run', '--config', cfg, '--listen', `unix:${path.join(dir, 'agent')}`, '--nsm', 'simulator', '--state-dir', path.join(dir, 'state'),
      '--loopback', 'off', '--egress-target', `unix:${path.join(dir, 'nat.sock')}`, '--', process.execPath, '-e', 'setInterval(() => {}, 1e9)',
    ]);
    mkdirSync(path.join(dir, 'agent'), { recursive: true });
    agent.stdout!.on('data', (c: Buffer) => (agentOut += c.toString()));
    agent.stderr!.on('data', (c: Buffer) => (agentOut += c.toString()));
    agentExit = new Promise((resolve) => agent.once('exit', (code) => resolve(code)));
    await waitFor(() => agentOut.includes('"msg":"egress ready"'), 'the agent to install transparent egress', 60_000);
  }, 120_000);

  afterAll(async () => {
    if (agent && agent.exitCode === null && agent.signalCode === null) {
      agent.kill('SIGKILL');
      await agentExit;
    }
    if (web && web.exitCode === null) web.kill('SIGKILL');
    if (holder && holder.exitCode === null) holder.kill('SIGKILL');
    if (sink && sink.exitCode === null) sink.kill('SIGKILL');
    nat?.close();
    await dialer?.close();
    await dns?.close();
    await ns?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('lets an app reach an allowed server by name, byte-exact, and records the flow', async () => {
    const out = path.join(dir, 'out.bin');
    const r = await curl(['-o', out, 'http://ok.test:8080/file.bin']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(sha256(readFileSync(out))).toBe(sha256(file));
    await waitFor(() => egressRecords().some((x) => x.allowed === true && x.via === 'transparent' && x.name === 'ok.test'), 'the egress record');
    const rec = egressRecords().find((x) => x.allowed === true && x.via === 'transparent' && x.name === 'ok.test')!;
    expect(rec).toMatchObject({ via: 'transparent', ip: SERVER, port: 8080 });
    expect(rec.bytes_in as number).toBeGreaterThan(file.length);
    expect(egressRecords().find((x) => x.via === 'dns' && x.name === 'ok.test')).toMatchObject({ allowed: true, ip: SERVER });
  });

  it('refuses the app a raw IP (never resolved through the stub): nothing reaches the server', async () => {
    const r = await curl([`http://${OTHER}:8080/raw-ip-probe`]);
    expect(r.code).not.toBe(0);
    expect(webLog).not.toContain('raw-ip-probe');
    expect(egressRecords().some((x) => x.allowed === false && x.ip === OTHER && x.via === 'transparent')).toBe(true);
  });

  it('refuses a name off the list: DNS answers REFUSED without asking upstream, and its address is not reachable', async () => {
    const before = dns.queries.length;
    const q = await ns.exec(ns.enc, [process.execPath, '-e', "require('node:dns').promises.resolve4('deny.test').then((a) => console.log('resolved', a), (e) => console.log(e.code))"]);
    expect(q.stdout.trim()).toBe('EREFUSED');
    const c = await curl(['http://deny.test:8080/deny-by-name']);
    expect(c.code).toBe(6); // could not resolve host
    const pinned = await curl(['--resolve', `deny.test:8080:${OTHER}`, 'http://deny.test:8080/deny-probe']);
    expect(pinned.code).not.toBe(0);
    expect(webLog).not.toContain('deny-');
    expect(dns.queries.slice(before)).not.toContain('deny.test');
  });

  it('drops rebinding answers and gives AAAA no address (IPv6 off)', async () => {
    const q = await ns.exec(ns.enc, [
      process.execPath,
      '-e',
      "const d = require('node:dns').promises; Promise.all([d.resolve4('rebind.test').catch((e) => e.code), d.resolve6('ok.test').catch((e) => e.code)]).then((r) => console.log(JSON.stringify(r)))",
    ]);
    expect(JSON.parse(q.stdout)).toEqual(['ENODATA', 'ENODATA']);
  });

  it('refuses UDP other than DNS, and IPv6 TCP and UDP, though a path to them exists: nothing arrives', async () => {
    const probe = await ns.exec(ns.enc, [process.execPath, '-e', PROBE, 'probe', ns.linkIp, ns.linkIp6]);
    // Refused, not dropped in silence: the app sees an error at once (REJECT in OUTPUT).
    expect(JSON.parse(probe.stdout)).toEqual({ udp4: 'EPERM', udp6: 'EPERM', tcp6: 'ECONNREFUSED' });
    // A marker sent afterwards from the root namespace over the other link: once it is in, the probes had their chance.
    const marker = await new Promise<void>((resolve, reject) => {
      const s = dgram.createSocket('udp4');
      s.send('marker', 9999, ns.serverIp, (e) => {
        s.close();
        if (e) reject(e);
        else resolve();
      });
    });
    expect(marker).toBeUndefined();
    await waitFor(() => sinkLog.includes('udp marker'), 'the marker datagram');
    expect(sinkLog).not.toContain('probe');
    expect(dialer.activeFlows).toBe(0);
  });

  /** An app in the enclave holding a flow to ok.test:9090 open; resolves once the greeting came through. */
  const holdingApp = async (): Promise<{ child: ChildProcess; out: () => string; exit: Promise<number | null> }> => {
    const child = ns.spawn(ns.enc, [
      process.execPath,
      '-e',
      "const s = require('node:net').connect(9090, 'ok.test'); s.on('data', (d) => { if (String(d).includes('hello')) console.log('open'); }); s.on('error', (e) => console.log('error', e.code)); s.on('close', () => { console.log('closed'); process.exit(0); });",
    ]);
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await waitFor(() => out.includes('open'), 'the held flow to open');
    return { child, out: () => out, exit };
  };

  it('survives the app being killed mid-flow: the flow is torn down on both sides and logged', async () => {
    const app = await holdingApp();
    expect(dialer.activeFlows).toBe(1);
    const recordsBefore = egressRecords().length;
    app.child.kill('SIGKILL');
    await waitFor(() => dialer.activeFlows === 0, 'the host side of the flow to close');
    await waitFor(() => egressRecords().length > recordsBefore, 'the killed flow record');
    expect(egressRecords().at(-1)).toMatchObject({ allowed: true, name: 'ok.test', port: 9090, bytes_in: 6 });
    const after = await curl(['-o', '/dev/null', '-w', '%{http_code}', 'http://ok.test:8080/file.bin']);
    expect(after.stdout).toBe('200');
  });

  it('on SIGTERM, the agent drains: a flow still open is closed, recorded, and the agent exits 0', async () => {
    const app = await holdingApp();
    const recordsBefore = egressRecords().length;
    agent.kill('SIGTERM');
    expect(await agentExit).toBe(0);
    await app.exit;
    expect(app.out()).toContain('closed');
    expect(dialer.activeFlows).toBe(0);
    expect(egressRecords().slice(recordsBefore)).toEqual([expect.objectContaining({ allowed: true, name: 'ok.test', port: 9090, bytes_in: 6, reason: 'reset' })]);
    expect(agentOut).toContain('"msg":"agent stopped"');
  });
});

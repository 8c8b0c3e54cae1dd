// Debian's nginx as a benchmark anchor (what a team would otherwise deploy in front of the app): configured in a
// temp dir — TLS 1.3 only with a throwaway self-signed P-256 certificate (openssl), one worker, access log off,
// pid, error log and temp paths in the temp dir — terminating TLS for HTTP (keep-alive upstream to the app) and
// for a byte stream (the stream module relaying to an echo app). Run as root in the foreground
// (`-g 'daemon off;'`), stopped (SIGTERM, then SIGKILL) and the temp dir removed by stop(). Not a bench itself.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { childPids } from './lib.ts';

export const NGINX = '/usr/sbin/nginx';
const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';
/** The certificate's name: clients connect to 127.0.0.1 with this as servername (the benches' Host is "bench"). */
export const SERVER_NAME = 'bench';

export interface Nginx {
  /** HTTPS port: TLS 1.3 → keep-alive HTTP/1.1 upstream to the app. */
  httpsPort: number;
  /** TLS 1.3 stream port → plain TCP to the echo app. */
  streamPort: number;
  /** The throwaway certificate (PEM), for the client's `ca`. */
  certPem: string;
  /** Master and worker: CPU is summed over both. */
  pids(): number[];
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function waitForPort(port: number, proc: ChildProcess, errorLog: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`nginx exited (${proc.exitCode}): ${existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : ''}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nginx did not listen on ${port}`);
}

export async function startNginx(opts: { appPort: number; echoPort: number; upstreamKeepalive: number }): Promise<Nginx> {
  if (!existsSync(NGINX)) throw new Error(`${NGINX} not found (Debian package nginx)`);
  if (!existsSync(STREAM_MODULE)) throw new Error(`${STREAM_MODULE} not found (Debian package libnginx-mod-stream)`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-nginx-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${SERVER_NAME}`, '-addext', `subjectAltName=DNS:${SERVER_NAME}`], { stdio: 'ignore' });
  const [httpsPort, streamPort] = [await freePort(), await freePort()];
  const errorLog = path.join(dir, 'error.log');
  const tls = `ssl_certificate ${cert}; ssl_certificate_key ${key}; ssl_protocols TLSv1.3;`;
  writeFileSync(
    path.join(dir, 'nginx.conf'),
    `load_module ${STREAM_MODULE};
user root;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${errorLog} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:${opts.appPort}; keepalive ${opts.upstreamKeepalive}; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${httpsPort} ssl;
    ${tls}
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
stream {
  server { listen 127.0.0.1:${streamPort} ssl; ${tls} proxy_pass 127.0.0.1:${opts.echoPort}; }
}
`,
  );
  const proc = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', errorLog, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'inherit'] });
  // Never outlive the bench, even when it dies without reaching stop().
  const killOnExit = (): void => void proc.kill('SIGKILL');
  process.once('exit', killOnExit);
  const stop = async (): Promise<void> => {
    process.removeListener('exit', killOnExit);
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForPort(httpsPort, proc, errorLog);
    await waitForPort(streamPort, proc, errorLog);
  } catch (err) {
    await stop();
    throw err;
  }
  const pids = [proc.pid!, ...childPids(proc.pid!)];
  if (pids.length !== 2) {
    await stop();
    throw new Error(`expected nginx master + 1 worker, found pids ${pids.join(', ')}`);
  }
  return { httpsPort, streamPort, certPem: readFileSync(cert, 'utf8'), pids: () => pids, stop };
}

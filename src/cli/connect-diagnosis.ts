// Why a WebSocket connect failed. A WebSocket's `error` event carries no cause (by design, in browsers and in
// undici alike), so after a failed connect the CLI looks once more, step by step, and names the first step that
// fails: the DNS lookup, the TCP connect (refused, unreachable, silent), or the HTTP upgrade (an HTTP server
// that is not a WebSocket endpoint, something that does not speak HTTP, a TLS failure).
import { randomBytes } from 'node:crypto';
import { lookup as dnsLookup } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { textShape } from '../util/text-shape.ts';

export interface DiagnosisOptions {
  /** Each step's budget. Default 5 s. */
  timeoutMs?: number;
  /** Name resolution (injectable: tests must not query a real resolver). */
  lookup?: (host: string) => Promise<unknown>;
}

const START_HINT = '`enclave-agent start` prints the bridge URL';

function errCode(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  return typeof e.code === 'string' ? e.code : typeof e.message === 'string' ? e.message : String(err);
}

function tcpProbe(host: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let settled = false;
    const done = (why: string | null): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolve(why);
    };
    socket.setTimeout(timeoutMs, () => done(`no TCP answer from ${host}:${port} within ${timeoutMs} ms (a firewall, or the wrong address?)`));
    socket.once('connect', () => done(null));
    socket.on('error', (err) => {
      const code = errCode(err);
      if (code === 'ECONNREFUSED') done(`connection refused by ${host}:${port}: nothing listens there (is the bridge running? ${START_HINT})`);
      else done(`TCP connect to ${host}:${port} failed (${code})`);
    });
  });
}

function upgradeProbe(url: URL, host: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const request = url.protocol === 'wss:' ? https.request : http.request;
    const req = request({
      host,
      port,
      path: `${url.pathname}${url.search}`,
      servername: net.isIP(host) === 0 ? host : undefined,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': randomBytes(16).toString('base64') },
      timeout: timeoutMs,
    });
    let settled = false;
    const done = (why: string | null): void => {
      if (settled) return;
      settled = true;
      req.destroy();
      resolve(why);
    };
    req.once('upgrade', (_res, socket) => {
      socket.destroy();
      done(null); // it is a WebSocket endpoint after all: nothing to add to the original error
    });
    req.once('response', (res) => {
      res.resume();
      done(`${host}:${port} answered the WebSocket upgrade with HTTP ${res.statusCode}: not a WebSocket endpoint (${START_HINT}; ws://, not http://)`);
    });
    req.once('timeout', () => done(`${host}:${port} accepted the connection but sent no HTTP answer within ${timeoutMs} ms: not a WebSocket endpoint`));
    req.on('error', (err) => {
      const code = errCode(err);
      if (code.startsWith('HPE_')) done(`${host}:${port} does not speak HTTP (${code}): not a WebSocket endpoint`);
      else if (url.protocol === 'wss:' && /SSL|TLS|CERT|certificate|EPROTO/i.test(`${code} ${(err as Error).message}`)) done(`TLS to ${host}:${port} failed (${code}: ${(err as Error).message})`);
      else done(`the WebSocket upgrade to ${host}:${port} failed (${code})`);
    });
    req.end();
  });
}

/** One line naming why connecting to `url` (ws:// or wss://) fails, or null when every step now succeeds. */
export async function explainConnectFailure(url: string, opts: DiagnosisOptions = {}): Promise<string | null> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `the URL (${textShape(url)}) does not parse`; // never quoted: it may carry user:pass@
  }
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = u.port === '' ? (u.protocol === 'wss:' ? 443 : 80) : Number(u.port);
  if (net.isIP(host) === 0) {
    try {
      await (opts.lookup ?? dnsLookup)(host);
    } catch (err) {
      return `DNS lookup of "${host}" failed (${errCode(err)})`;
    }
  }
  return (await tcpProbe(host, port, timeoutMs)) ?? (await upgradeProbe(u, host, port, timeoutMs));
}

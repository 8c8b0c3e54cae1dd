// What both clients (the Noise channel and attested TLS) share: the option checks and the verbs on their fetch.
import { ClientError } from './errors.ts';
import type { Client, ConnectOptions } from './index.ts';
import type { ClientRequestInit } from './request.ts';

/** A numeric option ≥ min, or its default; anything else is CLIENT_BAD_OPTIONS naming the option. */
export function positiveOption(name: string, v: number | undefined, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new ClientError('CLIENT_BAD_OPTIONS', `${name}: expected a number ≥ ${min}, found ${String(v)}`);
  return v;
}

/** An optional boolean option; anything but true/false (e.g. the string "false" from an env var) is CLIENT_BAD_OPTIONS. */
function booleanOption(name: string, v: unknown): void {
  if (v !== undefined && typeof v !== 'boolean') {
    throw new ClientError('CLIENT_BAD_OPTIONS', `${name}: expected true or false, found ${JSON.stringify(typeof v === 'string' ? v.slice(0, 20) : typeof v === 'object' ? typeof v : v)}`);
  }
}

/** What the attestation check takes from the connect options (the pins, roots and the document's age). */
export function verifyOptions(options: ConnectOptions): Pick<ConnectOptions, 'pcrs' | 'roots' | 'debug' | 'maxAgeMs' | 'allowDebugEnclave'> {
  // debug turns the chain and signature checks off: only a real `true` may do that.
  booleanOption('debug', options.debug);
  booleanOption('allowDebugEnclave', options.allowDebugEnclave);
  return {
    pcrs: options.pcrs,
    ...(options.roots === undefined ? {} : { roots: options.roots }),
    ...(options.debug === undefined ? {} : { debug: options.debug }),
    ...(options.maxAgeMs === undefined ? {} : { maxAgeMs: options.maxAgeMs }),
    ...(options.allowDebugEnclave === undefined ? {} : { allowDebugEnclave: options.allowDebugEnclave }),
  };
}

/** Where JSON.parse failed, from V8's message, without the body bytes it quotes. */
function jsonErrorPlace(err: unknown): string {
  const message = err instanceof Error ? err.message : '';
  const position = /at position ([0-9]+)/.exec(message)?.[1];
  if (position !== undefined) return `at position ${position}`;
  return /end of JSON input/.test(message) ? 'ends early' : 'unexpected token';
}

export type ClientVerbs = Pick<Client, 'fetch' | 'request' | 'get' | 'delete' | 'post' | 'put' | 'patch' | 'json'>;

/** request/get/post/... and json, all through the one fetch. */
export function clientVerbs(fetch: Client['fetch']): ClientVerbs {
  const request: Client['request'] = (method, path, init) => fetch(path, { ...init, method });
  return {
    fetch,
    request,
    get: (path, init) => request('GET', path, init),
    delete: (path, init) => request('DELETE', path, init),
    post: (path, init) => request('POST', path, init),
    put: (path, init) => request('PUT', path, init),
    patch: (path, init) => request('PATCH', path, init),
    async json<T>(path: string | URL, init?: ClientRequestInit): Promise<T> {
      const res = await fetch(path, init);
      const text = await res.text();
      try {
        return JSON.parse(text) as T;
      } catch (err) {
        // No cause: V8's SyntaxError quotes the body (decrypted data), and util.inspect and pino print a cause.
        // Nor the path: it may carry a token (?access_token=...) or, as a URL, user:pass@.
        throw new ClientError('CLIENT_PROTOCOL', `the response (status ${res.status}) is not JSON (${jsonErrorPlace(err)}; ${text.length} characters)`);
      }
    },
  };
}

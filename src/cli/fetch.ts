/**
 * `enclave-agent fetch <url> <path> [-X M] [-d BODY] [-H 'N: v']... --pcrs FILE|--pcr0.. [--root PEM] [--debug]`:
 * curl through the attested channel. Connects to the bridge, verifies the enclave's attestation (chain to the
 * root, nonce = handshake hash, pinned PCRs) before sending anything, sends one request and streams the
 * response body to stdout byte for byte (--json holds it, up to JSON_BODY_MAX_BYTES). Exit 0 on any HTTP
 * answer (22 with --fail on ≥ 400), 1 on attestation or connection failure with one line naming the reason
 * (e.g. ATTESTATION_PCR_MISMATCH), 2 on bad usage.
 */
import { existsSync, readFileSync } from 'node:fs';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import type { PcrPins } from '../attestation/verify.ts';
import { ClientError, connect, type Client } from '../client/node.ts';
import { toHex } from '../util/bytes.ts';
import { parsePins } from './attestation-inspect.ts';
import { JSON_BODY_MAX_BYTES, readCappedBody } from './capped-body.ts';
import { explainConnectFailure } from './connect-diagnosis.ts';
import { intFlag, parseFlags, PIN_FLAGS, rootsFromFlags } from './flags.ts';
import { CliUsageError, type CliCommand, type CliIo } from './types.ts';
import { printable } from '../util/printable.ts';
import { textShape } from '../util/text-shape.ts';
import { maskUserinfo } from '../util/url-userinfo.ts';

const HELP = `Usage: enclave-agent fetch <url> <path> [options]

Sends one HTTP request to the app inside the enclave through the attested, end-to-end encrypted channel
(like curl), and writes the response body to stdout as it arrives, byte for byte. Nothing is sent before the
attestation verified.

  <url>   the host bridge, ws://host:port/ or wss://host:port/, or the enclave's attested TLS ingress,
          https://host:port/ (the document in its self-signed certificate is verified; system CAs play no part)
  <path>  the request path, e.g. / or /echo?x=1

Request:
  -X, --request METHOD   Default GET, or POST with -d.
  -d, --data BODY        Request body; @FILE reads a file, @- standard input.
  -H, --header 'N: v'    Request header (repeatable).
  --timeout MS           Connect + request budget, each (default 30000).

Attestation (one of --pcrs or --pcr0/--pcr1/--pcr2 is required):
  --pcrs FILE|PCR0=<hex>,PCR1=<hex>,PCR2=<hex>[,PCR<n>=<hex>...]
                         Pinned PCRs: a JSON file {"PCR0": "<hex>", ...} (what \`enclave-agent start\` writes to
                         <state dir>/pcrs.json; a nitro-cli "Measurements" object works too) or inline.
                         PCR0/1/2 required; any of PCR3…PCR31 (PCR3: IAM role, PCR4: instance id, PCR8:
                         signing certificate) is compared when given; any other key is an error.
                         Repeat for several allowed sets.
  --pcr0 HEX --pcr1 HEX --pcr2 HEX [--pcr8 HEX]
  --root PEM             Trusted root certificate (repeatable). Default: the AWS Nitro root G1.
                         For \`enclave-agent start\`: the simulator root it prints.
  --debug                Debug-mode enclave: skip the certificate chain and signature (PCRs still compared).
  --nonce                https:// only: ask for a fresh document (SNI <nonce>.attest.<host>) and check its nonce.

Output:
  -i, --include          Print the status line and response headers before the body.
  -v, --verbose          Print the verified attestation (module, PCRs, features) to stderr.
  -f, --fail             Exit 22 when the status is 400 or more.
  --json                 One JSON line: {"status", "headers", "body", "attestation": {"moduleId", "pcrs", ...}}
                         "body" is the body as UTF-8 text, held in memory: over ${JSON_BODY_MAX_BYTES / 1024 / 1024} MiB it fails with
                         CLI_BODY_TOO_LARGE (exit 1; without --json the body streams, of any size).

Exit status: 0 a response arrived, 1 attestation/connection/request failure (one line says why),
2 usage error, 22 --fail and status ≥ 400.`;

function readBody(arg: string, io: CliIo): Promise<Uint8Array> | Uint8Array | string {
  if (!arg.startsWith('@')) return arg;
  const file = arg.slice(1);
  if (file === '-') return io.stdin();
  if (!existsSync(file)) throw new CliUsageError(`--data: ${file} does not exist`);
  return new Uint8Array(readFileSync(file));
}

function parseHeader(text: string): [string, string] {
  const i = text.indexOf(':');
  // Not quoted: a header line may hold a credential.
  if (i <= 0) throw new CliUsageError(`--header: expected "Name: value", found ${i === 0 ? 'no name before ":"' : 'no ":"'} in ${textShape(text)}`);
  return [text.slice(0, i).trim(), text.slice(i + 1).trim()];
}

function hexPin(flag: string, v: string): string {
  const hex = v.replace(/^0x/, '');
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new CliUsageError(`${flag} must be hex`);
  if (![64, 96, 128].includes(hex.length)) throw new CliUsageError(`${flag} must be 96 hex digits (48 bytes, SHA-384; 64 or 128 for other banks), found ${hex.length}`);
  return hex.toLowerCase();
}

/** --pcrs (repeatable) or --pcr0/1/2[/8]; at least one set. */
export function pinsFromFlags(values: { pcrs?: string[]; pcr0?: string; pcr1?: string; pcr2?: string; pcr8?: string }): PcrPins[] {
  const sets = (values.pcrs ?? []).map(parsePins);
  const single = [values.pcr0, values.pcr1, values.pcr2, values.pcr8];
  if (single.some((v) => v !== undefined)) {
    if (values.pcr0 === undefined || values.pcr1 === undefined || values.pcr2 === undefined) throw new CliUsageError('--pcr0, --pcr1 and --pcr2 go together (--pcr8 optional)');
    sets.push({
      PCR0: hexPin('--pcr0', values.pcr0),
      PCR1: hexPin('--pcr1', values.pcr1),
      PCR2: hexPin('--pcr2', values.pcr2),
      ...(values.pcr8 === undefined ? {} : { PCR8: hexPin('--pcr8', values.pcr8) }),
    });
  }
  if (sets.length === 0) throw new CliUsageError('give the PCRs to pin: --pcrs FILE (enclave-agent start writes <state dir>/pcrs.json) or --pcr0/--pcr1/--pcr2');
  return sets;
}

export { rootsFromFlags } from './flags.ts';

/** The attestation summary --verbose and --json show. */
export function attestationSummary(client: Client): { moduleId: string; time: string; pcrs: Record<string, string>; features: readonly string[]; publicKey: boolean } {
  const d = client.attestation;
  const pick = [0, 1, 2, 8];
  const pcrs: Record<string, string> = {};
  for (const i of pick) {
    const v = d.pcrs.get(i);
    if (v !== undefined) pcrs[`PCR${i}`] = toHex(v);
  }
  return { moduleId: d.moduleId, time: new Date(d.timestamp).toISOString(), pcrs, features: client.features, publicKey: d.publicKey !== null };
}

/** One line for a failed attestation, naming the verifier's code. */
export function attestationFailureLine(command: string, err: ClientError): string {
  const cause = err.cause instanceof Error ? err.cause.message : err.message.replace(/^attestation failed: /, '');
  return `enclave-agent ${command}: attestation failed: ${err.attestationCode ?? err.code}: ${printable(cause)}`;
}

/** The hint under ATTESTATION_UNTRUSTED_ROOT when no --root was given (the local stack's documents need one). */
export const UNTRUSTED_ROOT_HINT =
  'hint: without --root only the AWS Nitro root G1 is trusted; the local stack (`enclave-agent start`) signs with its simulator CA: pass --root <state dir>/nsm-simulator/nsm-ca/root.pem (start prints the path)';

/**
 * Reports a failed connect and returns the exit status: 2 when our own expectations were malformed (a usage
 * error), else 1 — an untrusted root gets the --root hint, a connect failure its diagnosed cause.
 */
export async function reportConnectError(command: string, url: string, err: unknown, io: CliIo, rootGiven: boolean): Promise<number> {
  if (!(err instanceof ClientError)) throw err;
  if (err.code === 'CLIENT_ATTESTATION_FAILED') {
    if (err.attestationCode === 'ATTESTATION_BAD_EXPECTATIONS') {
      io.err(`enclave-agent ${command}: ${printable(err.cause instanceof Error ? err.cause.message : err.message)} (see --help)`);
      return 2;
    }
    io.err(attestationFailureLine(command, err));
    if (err.attestationCode === 'ATTESTATION_UNTRUSTED_ROOT' && !rootGiven) io.err(UNTRUSTED_ROOT_HINT);
    return 1;
  }
  if (err.code === 'CLIENT_CONNECT_FAILED') {
    // The diagnosis probes a WebSocket upgrade; an https:// failure already names its cause.
    io.err(`enclave-agent ${command}: CLIENT_CONNECT_FAILED: ${printable((/^https:/i.test(url) ? null : await explainConnectFailure(url)) ?? err.message)}`);
    return 1;
  }
  throw err;
}

/**
 * Streams `body` into `out` with back-pressure, as is (never decoded: a binary body stays intact). A slow reader of
 * our stdout holds the enclave back: the client stops reading the connection while the body has half of
 * maxBufferedBytes unread (onBufferFull 'pause'; https:// has TCP's own flow control).
 * False when stdout was closed under it (EPIPE).
 */
async function writeBody(body: ReadableStream<Uint8Array>, out: Writable): Promise<boolean> {
  try {
    // end: false keeps process.stdout open; it also resolves before `out` wrote what it queued, hence the last write.
    await pipeline(Readable.fromWeb(body as NodeReadableStream<Uint8Array>), out, { end: false });
    await new Promise<void>((resolve, reject) => out.write(new Uint8Array(0), (err) => (err ? reject(err) : resolve())));
    return true;
  } catch (err) {
    // `fetch … | head -c 10`: the reader left; that ends the command, it is not a failure of ours to report.
    if ((err as { code?: string }).code === 'EPIPE') return false;
    throw err;
  }
}

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    const { values, positionals } = parseFlags(
      args,
      {
        request: { type: 'string', short: 'X' },
        data: { type: 'string', short: 'd' },
        header: { type: 'string', short: 'H', multiple: true },
        include: { type: 'boolean', short: 'i', default: false },
        verbose: { type: 'boolean', short: 'v', default: false },
        fail: { type: 'boolean', short: 'f', default: false },
        ...PIN_FLAGS,
        json: { type: 'boolean', default: false },
        timeout: { type: 'string' },
        nonce: { type: 'boolean', default: false },
      },
      true,
    );
    if (positionals.length !== 2) throw new CliUsageError(`expected <url> <path>, found ${positionals.length} argument${positionals.length === 1 ? '' : 's'}`);
    const [url, reqPath] = positionals as [string, string];
    if (!/^(wss?|https):\/\//i.test(url)) throw new CliUsageError(`<url> must be ws:// or wss:// (the host bridge) or https:// (TLS ingress), found ${textShape(url)}`); // a URL may carry user:pass@
    if (values.nonce && !/^https:/i.test(url)) throw new CliUsageError('--nonce applies to https:// only (the Noise channel binds its own handshake hash)');
    if (!reqPath.startsWith('/')) throw new CliUsageError(`<path> must start with "/", found ${textShape(reqPath)}`); // a path may hold a token
    const pins = pinsFromFlags(values);
    const roots = rootsFromFlags(values.root);
    const timeoutMs = values.timeout === undefined ? 30_000 : intFlag('--timeout', values.timeout, 1, 3_600_000);
    const headers = (values.header ?? []).map(parseHeader);
    const body = values.data === undefined ? undefined : await readBody(values.data, io);
    const method = values.request ?? (body === undefined ? 'GET' : 'POST');

    let client: Client;
    try {
      // onBufferFull 'pause': one request, so pausing the connection for its body holds nothing else back.
      client = await connect(url, { pcrs: pins, ...(roots === undefined ? {} : { roots }), debug: values.debug, connectTimeoutMs: timeoutMs, reconnect: false, onBufferFull: 'pause', ...(values.nonce ? { nonce: true } : {}) });
    } catch (err) {
      return await reportConnectError('fetch', url, err, io, roots !== undefined);
    }
    try {
      const summary = attestationSummary(client);
      if (values.verbose) {
        io.err(`* connected to ${maskUserinfo(url)}: attestation verified (${values.debug ? 'DEBUG: chain and signature not checked' : roots ? 'chain to the given root' : 'chain to the AWS Nitro root G1'}, ${/^https:/i.test(url) ? `user_data = the TLS key${values.nonce ? ', SNI nonce' : ''}` : 'nonce'}, PCRs)`);
        io.err(`* module ${printable(summary.moduleId)}, document time ${summary.time}, features [${summary.features.join(', ')}]`);
        for (const [k, v] of Object.entries(summary.pcrs)) io.err(`* ${k} ${v}`);
        io.err(`> ${method} ${reqPath}`);
        for (const [k, v] of headers) io.err(`> ${k}: ${v}`);
      }
      const res = await client.fetch(reqPath, { method, headers, ...(body === undefined ? {} : { body }), timeoutMs });
      if (values.json) {
        const text = new TextDecoder().decode(await readCappedBody(res.body, JSON_BODY_MAX_BYTES, '--json'));
        const h: Record<string, string> = {};
        res.headers.forEach((v, k) => (h[k] = v));
        io.out(JSON.stringify({ status: res.status, headers: h, body: text, attestation: summary }));
      } else {
        if (values.include || values.verbose) {
          const head = [`HTTP/1.1 ${res.status} ${res.statusText}`.trimEnd()];
          res.headers.forEach((v, k) => head.push(`${k}: ${v}`));
          if (values.include) io.out(head.join('\n') + '\n');
          else for (const line of head) io.err(`< ${line}`);
        }
        if (res.body !== null && !(await writeBody(res.body, io.rawOut ?? process.stdout))) {
          io.err('enclave-agent fetch: stdout was closed before the whole body was written (EPIPE)');
          return 23; // curl's "write error"
        }
      }
      return values.fail && res.status >= 400 ? 22 : 0;
    } finally {
      await client.close().catch(() => {});
    }
  },
};

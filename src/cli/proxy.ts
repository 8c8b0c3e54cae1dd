/**
 * `enclave-agent proxy <url> --pcrs FILE|--pcr0.. [--root PEM] [--port N]`: a plain HTTP/1.1 door on 127.0.0.1
 * to an attested enclave, for any language (src/host/attested-proxy.ts says what it guarantees). Prints one line
 * (JSON with --json) once listening, then runs until SIGINT/SIGTERM.
 */
import pino from 'pino';
import { connect } from '../client/node.ts';
import { startAttestedProxy } from '../host/attested-proxy.ts';
import { isLoopbackHost } from '../host/listen.ts';
import { pinsFromFlags } from './fetch.ts';
import { intFlag, parseFlags, PIN_FLAGS, portFlag, rootsFromFlags } from './flags.ts';
import { untilSignal } from './signals.ts';
import { CliUsageError, type CliCommand } from './types.ts';
import { printable } from '../util/printable.ts';
import { textShape } from '../util/text-shape.ts';
import { maskUserinfo } from '../util/url-userinfo.ts';

const HELP = `Usage: enclave-agent proxy <url> [options]

Listens on 127.0.0.1 and forwards plain HTTP/1.1 (and WebSocket upgrades) from any local client — curl, Python,
Go, a browser on this machine — to the app inside an enclave, through an attested connection. Nothing is
forwarded before the enclave's attestation verified against the pinned PCRs; every reconnect (after the bridge
or the enclave restarts) verifies again. While the enclave cannot be verified, requests are answered 502 here
with the error code in the x-enclave-agent-error header (e.g. ATTESTATION_PCR_MISMATCH), and the app sees nothing.

  <url>   ws://host:port/ or wss://host:port/  the host bridge (Noise channel, attested end to end), or
          https://host:port/                   the enclave's attested TLS ingress (document in the certificate)

Listening:
  --port N               Local port (default 0: any free port; the first output line says which).
  --host ADDR            Local address (default 127.0.0.1). The local side is plain HTTP: an address off loopback
                         is refused unless --allow-remote is given (whoever reaches it uses the enclave).
  --allow-remote         Listen on a --host off loopback anyway.
  --max-unread-bytes N   Answer bytes held for local clients that do not read them, all together (default 67108864,
                         64 MiB). Past it the connection holding the most is closed (logged PROXY_UNREAD_LIMIT).
  --max-unread-bytes-per-connection N
                         The same for one local connection (default 16777216, 16 MiB): past it that connection is
                         closed, so one client that does not read cannot take the room the others share.

Attestation (one of --pcrs or --pcr0/--pcr1/--pcr2 is required):
  --pcrs FILE|PCR0=<hex>,PCR1=<hex>,PCR2=<hex>[,PCR<n>=<hex>...]   (n ≤ 31; repeatable: several allowed sets)
  --pcr0 HEX --pcr1 HEX --pcr2 HEX [--pcr8 HEX]
  --root PEM             Trusted root certificate (repeatable). Default: the AWS Nitro root G1.
  --nonce                https:// only: ask for a fresh document on every TLS connection (SNI nonce).
  --debug                Debug-mode enclave: skip the certificate chain and signature (PCRs still compared).
  --timeout MS           Connect + attestation budget (default 30000).

Output:
  --json                 The first line is JSON: {"url", "upstream", "attestation": "verified" | "<error code>"}.
  --log-level LEVEL      pino level for stderr (default info).`;

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    const { values, positionals } = parseFlags(
      args,
      {
        port: { type: 'string' },
        host: { type: 'string' },
        'allow-remote': { type: 'boolean', default: false },
        'max-unread-bytes': { type: 'string' },
        'max-unread-bytes-per-connection': { type: 'string' },
        ...PIN_FLAGS,
        nonce: { type: 'boolean', default: false },
        timeout: { type: 'string' },
        json: { type: 'boolean', default: false },
        'log-level': { type: 'string' },
      },
      true,
    );
    if (positionals.length !== 1) throw new CliUsageError(`expected one <url>, found ${positionals.length} arguments`);
    const url = positionals[0]!;
    const https = /^https:\/\//i.test(url);
    if (!https && !/^wss?:\/\//i.test(url)) throw new CliUsageError(`<url> must be ws://, wss:// (the host bridge) or https:// (TLS ingress), found ${textShape(url)}`); // a URL may carry user:pass@
    if (values.nonce && !https) throw new CliUsageError('--nonce applies to https:// only (the Noise channel binds its own handshake hash)');
    const pins = pinsFromFlags(values);
    const roots = rootsFromFlags(values.root);
    const host = values.host ?? '127.0.0.1';
    if (!isLoopbackHost(host)) {
      // Whoever reaches the port gets the attested channel, in plain HTTP: only on an explicit ask.
      const what = `--host "${printable(host)}" is not loopback: anyone who reaches it uses the enclave as this proxy, in plain HTTP`;
      if (!values['allow-remote']) throw new CliUsageError(`${what}; pass --allow-remote to listen there anyway`);
      io.err(`enclave-agent proxy: warning: ${what}`);
    }
    const port = portFlag('--port', values.port, 0);
    const timeoutMs = values.timeout === undefined ? 30_000 : intFlag('--timeout', values.timeout, 1, 3_600_000);
    const maxUnread = values['max-unread-bytes'];
    const maxUnreadBytes = maxUnread === undefined ? undefined : intFlag('--max-unread-bytes', maxUnread, 65_536, 2 ** 34);
    const perConnection = values['max-unread-bytes-per-connection'];
    const maxUnreadBytesPerConnection = perConnection === undefined ? undefined : intFlag('--max-unread-bytes-per-connection', perConnection, 65_536, 2 ** 34);
    const logger = pino({ level: values['log-level'] ?? 'info', base: { component: 'proxy' } }, pino.destination(2));

    const proxy = await startAttestedProxy({
      host,
      port,
      logger,
      ...(maxUnreadBytes === undefined ? {} : { maxUnreadBytes }),
      ...(maxUnreadBytesPerConnection === undefined ? {} : { maxUnreadBytesPerConnection }),
      connect: (signal) =>
        connect(url, {
          signal,
          pcrs: pins,
          ...(roots === undefined ? {} : { roots }),
          debug: values.debug,
          connectTimeoutMs: timeoutMs,
          ...(values.nonce ? { nonce: true } : {}),
        }),
    });
    try {
      const failure = await proxy.ready();
      const upstream = maskUserinfo(url); // printed without its user:pass@
      if (values.json) io.out(JSON.stringify({ url: proxy.url, upstream, attestation: failure ?? 'verified' }));
      else if (failure === null) io.out(`enclave-agent proxy: ${proxy.url} → ${upstream} (attestation verified)`);
      else io.out(`enclave-agent proxy: ${proxy.url} → ${upstream} (attestation NOT verified: ${printable(String(failure))}; requests get 502 until it does)`);
      await untilSignal();
      return 0;
    } finally {
      await proxy.close();
    }
  },
};

/**
 * `enclave-agent attest <url> [--config enclave.toml] [--pcrs ...] [--root PEM] [--debug] [--json]` (the
 * `ev-enclave attest` equivalent): connects through the bridge, runs the handshake, requests the attestation
 * document and verifies everything but the PCR values (chain to the root, ES384 signature, nonce = this
 * session's handshake hash), then prints the live PCRs and whether they match [attestation] in enclave.toml
 * (or --pcrs). Exit 0 when they match (or nothing was pinned), 1 on a mismatch or a failed verification.
 */
import { AttestationError } from '../attestation/errors.ts';
import { verifyAttestation, type PcrPins } from '../attestation/verify.ts';
import { Channel, type WebSocketConstructor } from '../client/channel.ts';
import { BoundedWebSocket } from '../client/node.ts';
import type { AttestationDocument } from '../attestation/document.ts';
import { AttestedCertError } from '../client/attested-cert-errors.ts';
import { ClientError } from '../client/errors.ts';
import { connectVerifiedTls } from '../client/tls-connect.ts';
import { loadConfig, pinnedPcrs } from '../config.ts';
import { nodePrimitives } from '../noise/suite-node.ts';
import { toHex } from '../util/bytes.ts';
import { pinsFromFlags, reportConnectError, rootsFromFlags, UNTRUSTED_ROOT_HINT } from './fetch.ts';
import { intFlag, parseFlags, resolveConfigPath } from './flags.ts';
import { CliUsageError, type CliCommand } from './types.ts';
import { printable } from '../util/printable.ts';
import { textShape } from '../util/text-shape.ts';
import { maskUserinfo } from '../util/url-userinfo.ts';

const HELP = `Usage: enclave-agent attest <url> [options]

Connects to an enclave through its host bridge (ws:// or wss://), verifies its attestation document (chain to
the root, ES384 signature, nonce bound to this session's handshake) and prints the live PCR0/1/2/8 with
whether they match the [attestation] table of enclave.toml (any other PCR pinned with --pcrs is shown and
compared too).

With https://host:port/ (the enclave's attested TLS ingress, or an Evervault enclave) the document comes from the
TLS certificate the server presents (hex in a subjectAltName): same checks, plus user_data = that certificate's
key; a fresh nonce is asked for via SNI <nonce>.attest.<host> (--no-nonce: take the certificate's document).

Options:
  --config FILE   enclave.toml whose [attestation] PCR0/PCR1/PCR2 (and PCR8 if set) are the expected values.
                  Default: $ENCLAVE_AGENT_CONFIG, else ./enclave.toml if it exists.
  --pcrs FILE|PCR0=<hex>,...  Compare with these instead (the format of fetch --pcrs). Repeatable: the PCRs
                  match when they match any one set (MISMATCH names the closest set's differences).
  --root PEM      Trusted root certificate (repeatable). Default: the AWS Nitro root G1.
                  For \`enclave-agent start\`: the simulator root it prints.
  --debug         Debug-mode enclave: skip the certificate chain and signature.
  --timeout MS    Connect + attestation budget (default 30000).
  --no-nonce      https:// only: do not ask for a fresh document (the certificate's may be hours old).
  --json          One JSON line: {"url", "moduleId", "time", "pcrs", "expected", "match", "mismatches", "sets"}
                  ("expected": the set that matched, else the closest; "sets": how many were given)

\`enclave-agent pcrs --toml\` prints the [attestation] table the local stack matches.
Exit status: 0 the PCRs match (or nothing is pinned: "match": null), 1 mismatch or verification failure,
2 usage error.`;

/** Always shown; every other pinned PCR (PCR3, PCR4, ...) is shown and compared too. */
const SHOWN = ['PCR0', 'PCR1', 'PCR2', 'PCR8'] as const;
/** PCR name → lowercase hex. */
type Expected = Record<string, string>;

/** The pinned PCRs as hex (parsePins and pinnedPcrs give only PCR<n> keys, already validated). */
function normalize(pins: PcrPins): Expected {
  const out: Expected = {};
  for (const [n, v] of Object.entries(pins as unknown as Record<string, string | Uint8Array | undefined>)) {
    if (v !== undefined && /^PCR[0-9]+$/.test(n)) out[n] = typeof v === 'string' ? v.replace(/^0x/, '').toLowerCase() : toHex(v);
  }
  return out;
}

const pcrIndex = (name: string): number => Number(name.slice(3));

/** Handshake + RequestAttestation on a fresh channel; resolves to the document bytes and the handshake hash. */
async function fetchDocument(url: string, timeoutMs: number): Promise<{ document: Uint8Array; nonce: Uint8Array; userData: Uint8Array }> {
  // Never globalThis.WebSocket (Node 22+: undici's, unbounded): the bridge is untrusted.
  const WebSocket = BoundedWebSocket as unknown as WebSocketConstructor;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new ClientError('CLIENT_TIMEOUT', `no attestation from ${maskUserinfo(url)} within ${timeoutMs} ms`)), timeoutMs);
  try {
    const channel = await Channel.open({ url, WebSocket, primitives: nodePrimitives, signal: ctl.signal });
    return await new Promise((resolve, reject) => {
      const onAbort = (): void => channel.close(ctl.signal.reason as ClientError);
      ctl.signal.addEventListener('abort', onAbort, { once: true });
      let done = false;
      channel.listen({
        message: (m) => {
          if (done) return;
          done = true;
          if (m.type === 'Attestation') resolve({ document: m.data, nonce: channel.handshakeHash, userData: m.control_nonce });
          else reject(new ClientError('CLIENT_PROTOCOL', `expected Attestation as the agent's first message, found ${m.type}`));
          channel.close();
        },
        closed: (err) => {
          if (!done) reject(err);
          done = true;
        },
      });
      channel.send({ type: 'RequestAttestation' });
    });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * https://: one TLS connection; the presented certificate's document verified (chain, signature, user_data = the
 * certificate's key, the SNI nonce) with no PCR pins — they are compared below. Rejects with the verifier's error.
 */
async function certificateAttestation(url: string, o: { roots: string[] | undefined; debug: boolean; nonce: boolean; timeoutMs: number }): Promise<AttestationDocument> {
  const u = new URL(url);
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  try {
    const v = await connectVerifiedTls({ host, port: u.port === '' ? 443 : Number(u.port), verify: { debug: o.debug, ...(o.roots === undefined ? {} : { roots: o.roots }) }, nonce: o.nonce, timeoutMs: o.timeoutMs });
    v.socket.destroy();
    return v.verified.attestation;
  } catch (err) {
    if (err instanceof ClientError && err.code === 'CLIENT_ATTESTATION_FAILED' && (err.cause instanceof AttestationError || err.cause instanceof AttestedCertError)) throw err.cause;
    throw err;
  }
}

export const command: CliCommand = {
  help: HELP,
  async run(args, io) {
    const { values, positionals } = parseFlags(
      args,
      {
        config: { type: 'string' },
        pcrs: { type: 'string', multiple: true },
        root: { type: 'string', multiple: true },
        debug: { type: 'boolean', default: false },
        timeout: { type: 'string' },
        json: { type: 'boolean', default: false },
        'no-nonce': { type: 'boolean', default: false },
      },
      true,
    );
    if (positionals.length !== 1) throw new CliUsageError(`expected one <url>, found ${positionals.length}`);
    const url = positionals[0]!;
    const https = /^https:\/\//i.test(url);
    if (!https && !/^wss?:\/\//i.test(url)) throw new CliUsageError(`<url> must be ws:// or wss:// (the host bridge) or https:// (TLS ingress), found ${textShape(url)}`); // a URL may carry user:pass@
    if (values['no-nonce'] && !https) throw new CliUsageError('--no-nonce applies to https:// only');
    // What this command prints names the URL without its user:pass@ (stdout ends up in CI logs too).
    const shown = maskUserinfo(url);
    const roots = rootsFromFlags(values.root);
    const timeoutMs = values.timeout === undefined ? 30_000 : intFlag('--timeout', values.timeout, 1, 3_600_000);
    /** The pinned sets (any one matching is a match); null: nothing pinned. */
    let sets: Expected[] | null;
    let source: string;
    if (values.pcrs !== undefined) {
      sets = pinsFromFlags({ pcrs: values.pcrs }).map(normalize);
      source = '--pcrs';
    } else {
      const configPath = resolveConfigPath(values.config);
      const pinned = pinnedPcrs(loadConfig(configPath));
      sets = pinned === null ? null : [normalize(pinned)];
      source = `${configPath ?? '(default config)'} [attestation]`;
    }

    let fetched: Awaited<ReturnType<typeof fetchDocument>> | undefined;
    let fromCertificate: Promise<AttestationDocument> | undefined;
    try {
      if (https) fromCertificate = certificateAttestation(url, { roots, debug: values.debug, nonce: !values['no-nonce'], timeoutMs });
      else fetched = await fetchDocument(url, timeoutMs);
    } catch (err) {
      if (!(err instanceof ClientError) || err.code !== 'CLIENT_CONNECT_FAILED') throw err;
      return await reportConnectError('attest', url, err, io, roots !== undefined);
    }
    let doc;
    try {
      doc = fromCertificate !== undefined ? await fromCertificate : await verifyAttestation(fetched!.document, { nonce: fetched!.nonce, userData: fetched!.userData, debug: values.debug, ...(roots === undefined ? {} : { roots }) });
    } catch (err) {
      if (err instanceof ClientError && err.code === 'CLIENT_CONNECT_FAILED') return await reportConnectError('attest', url, err, io, roots !== undefined);
      if (!(err instanceof AttestationError) && !(err instanceof AttestedCertError)) throw err;
      if (err.code === 'ATTESTATION_BAD_EXPECTATIONS') throw new CliUsageError(err.message);
      if (values.json) io.out(JSON.stringify({ url: shown, verified: false, code: err.code, message: err.message }));
      else {
        io.err(`enclave-agent attest: attestation failed: ${err.code}: ${printable(err.message)}`);
        if (err.code === 'ATTESTATION_UNTRUSTED_ROOT' && roots === undefined) io.err(UNTRUSTED_ROOT_HINT);
      }
      return 1;
    }

    const live: Expected = {};
    for (const [i, v] of doc.pcrs) live[`PCR${i}`] = toHex(v);
    const differ = (set: Expected): string[] => Object.keys(set).filter((n) => set[n] !== live[n]).sort((a, b) => pcrIndex(a) - pcrIndex(b));
    // The first set that matches, else the one with the fewest differences (the first of equals).
    let expected: Expected | null = null;
    let mismatches: string[] = [];
    for (const set of sets ?? []) {
      const d = differ(set);
      if (expected === null || d.length < mismatches.length) [expected, mismatches] = [set, d];
      if (d.length === 0) break;
    }
    const match = expected === null ? null : mismatches.length === 0;
    const names = [...new Set([...SHOWN, ...Object.keys(expected ?? {})])].sort((a, b) => pcrIndex(a) - pcrIndex(b));
    for (const n of Object.keys(live)) if (!names.includes(n)) delete live[n];

    if (values.json) {
      io.out(JSON.stringify({ url: shown, verified: true, debug: values.debug, moduleId: doc.moduleId, time: new Date(doc.timestamp).toISOString(), pcrs: live, expected, expectedFrom: source, match, mismatches, sets: sets?.length ?? 0 }));
    } else {
      const how = values.debug ? 'DEBUG: chain and signature NOT checked' : `chain to ${roots ? 'the given root' : 'the AWS Nitro root G1'}, ES384 signature`;
      const bound = https ? `document in the TLS certificate, user_data = its key; ${values['no-nonce'] ? 'no nonce asked: the document may be hours old' : 'fresh nonce via SNI'}` : 'nonce bound to this session';
      io.out(`Attestation of ${shown} verified (${how}; ${bound})`);
      io.out(`  module  ${printable(doc.moduleId)}`);
      io.out(`  time    ${new Date(doc.timestamp).toISOString()}`);
      for (const n of names) {
        const e = expected?.[n];
        const mark = e === undefined ? '' : e === live[n] ? '  matches' : `  MISMATCH, expected ${e}`;
        io.out(`  ${n.padEnd(5)}   ${live[n] ?? '(absent)'}${mark}`);
      }
      if (match === null) io.out(`Not compared: ${source} pins no PCRs (enclave-agent pcrs --toml prints the table for the local stack).`);
      else if (match) io.out(`MATCH: the enclave reports the PCRs pinned in ${source}.`);
      else if (sets!.length === 1) io.out(`MISMATCH: ${mismatches.join(', ')} differ from ${source}.`);
      else io.out(`MISMATCH: none of the ${sets!.length} sets of ${source} match; the closest (set ${sets!.indexOf(expected!) + 1}, shown above) differs in ${mismatches.join(', ')}.`);
    }
    return match === false ? 1 : 0;
  },
};

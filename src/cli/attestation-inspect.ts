/**
 * `enclave-agent attestation inspect <file|-|base64>`: decodes a Nitro attestation document, prints it, and
 * verifies it (chain to the AWS root or --root at --at, ES384 signature, --nonce, --pcrs pins). Exit 0 only when
 * the verification passes; 1 when the document is malformed or fails a check; 2 on bad usage.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { decodeStrict, type CborMap } from '../attestation/cbor.ts';
import { parseAttestationDocument, isDebugModeDocument, type ParsedAttestation } from '../attestation/document.ts';
import { AttestationError } from '../attestation/errors.ts';
import { pinKeyIndex, verifyAttestation, type PcrPins } from '../attestation/verify.ts';
import { parseCertificate } from '../attestation/x509.ts';
import { fromBase64, fromHex, toHex } from '../util/bytes.ts';
import { AttestedCertError, parseAttestedCertificate, verifyAttestedCertificate, type AttestedCertificate } from '../client/attested-cert.ts';
import { CliUsageError, type CliCommand, type CliIo } from './types.ts';
import { rootsFromFlags } from './flags.ts';
import { printable } from '../util/printable.ts';

const HELP = `Usage: enclave-agent attestation inspect <file|-|base64> [options]

Decodes a Nitro attestation document (COSE_Sign1, raw CBOR or base64; "-" reads standard input), prints
module, time, PCRs, certificates and field sizes, then verifies it and prints the verdict.

The input may also be an attested TLS certificate (PEM or DER) carrying the document hex-encoded in its
subjectAltName, as our TLS ingress and Evervault's enclaves serve it (e.g. saved with
\`openssl s_client -connect host:443 </dev/null | openssl x509 > cert.pem\`): the document is taken from it and
must also attest the certificate's key (user_data = its SubjectPublicKeyInfo DER).

Options:
  --pcrs <file|PCR0=<hex>,PCR1=<hex>,PCR2=<hex>[,PCR<n>=<hex>...]>
                      Pinned PCRs: inline, or a JSON file {"PCR0": "<hex>", ...} (a nitro-cli
                      "Measurements" object works too). PCR0/1/2 required; any of PCR3…PCR31 (PCR3: IAM
                      role, PCR4: instance id, PCR8: signing certificate) is compared when given; any
                      other key is an error. Names in any case here. Repeat for several allowed sets.
                      Without --pcrs the PCR values are printed but not compared.
  --root <pem file>   Trusted root certificate (repeatable). Default: the AWS Nitro root G1.
  --at <ISO 8601>     Verification time. Default: now.
  --nonce <hex>       The nonce the document must carry.
  --max-age <ms>      Reject documents older than this at --at.
  --debug             Debug-mode check: skip the certificate chain and the signature.
  --allow-debug-enclave
                      Accept a debug-mode enclave's document (all-zero PCR0/1/2) with the full chain check.
  --allow-empty-public-key
                      Treat an empty public_key as absent (rejected by default, like the reference client).
  --cert <file>       Check the document (e.g. from /.well-known/attestation) against this certificate
                      (PEM or DER): its user_data must be the certificate's key.
  --json              Machine-readable output.

Exit status: 0 the document passed, 1 it is malformed or failed a check, 2 usage error.`;

const REQUIRED_PIN_NAMES = ['PCR0', 'PCR1', 'PCR2'] as const;

async function readInput(arg: string, io: CliIo): Promise<Uint8Array> {
  let bytes: Uint8Array;
  if (arg === '-') bytes = await io.stdin();
  else if (existsSync(arg)) bytes = new Uint8Array(readFileSync(arg));
  else {
    try {
      return fromBase64(arg.replace(/\s+/g, ''));
    } catch {
      throw new CliUsageError(`"${arg.length > 40 ? arg.slice(0, 40) + '…' : arg}" is neither a readable file nor base64`);
    }
  }
  // A file (or stdin) holding base64 text rather than CBOR.
  const first = bytes[0];
  if (first !== undefined && first !== 0x84 && first !== 0xd2) {
    const text = new TextDecoder().decode(bytes).replace(/\s+/g, '');
    if (/^[A-Za-z0-9+/]+=*$/.test(text)) {
      try {
        return fromBase64(text);
      } catch {
        /* not base64 after all: let the parser report it */
      }
    }
  }
  return bytes;
}

/** Parses one --pcrs value: inline PCR0=<hex>,PCR1=<hex>,... or a JSON file ({"PCR0": ...} or nitro-cli {"Measurements": ...}). */
export function parsePins(value: string): PcrPins {
  let obj: Record<string, unknown>;
  if (value.includes('=')) {
    obj = {};
    for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
      const kv = part.split('=');
      const [k, v] = kv;
      if (kv.length !== 2 || !k || !v) throw new CliUsageError(`--pcrs: "${part}" is not NAME=<hex>${kv.length > 2 ? ' (more than one "=")' : ''}`);
      const name = k.trim().toUpperCase();
      if (name in obj) throw new CliUsageError(`--pcrs: ${name} is given twice`);
      obj[name] = v.trim();
    }
  } else {
    if (!existsSync(value)) throw new CliUsageError(`--pcrs: "${value}" is neither PCR0=<hex>,... nor a readable JSON file`);
    try {
      obj = JSON.parse(readFileSync(value, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new CliUsageError(`--pcrs: ${value} is not valid JSON (${(err as Error).message})`);
    }
    if (obj && typeof obj.Measurements === 'object' && obj.Measurements) obj = obj.Measurements as Record<string, unknown>;
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new CliUsageError(`--pcrs: ${value} must hold a JSON object {"PCR0": "<hex>", ...}`);
  }
  const pins: Record<string, string> = {};
  for (const [given, v] of Object.entries(obj)) {
    // PCR names in any case here (pcr8=… always worked inline); the library itself takes only "PCR8".
    const key = /^pcr[0-9]+$/i.test(given) ? given.toUpperCase() : given;
    const index = pinKeyIndex(key, v);
    if (index === null) continue; // nitro-cli's "HashAlgorithm": "Sha384 { ... }"
    if (typeof index === 'object') throw new CliUsageError(`--pcrs: ${index.error}`);
    const name = `PCR${index}`;
    if (name in pins) throw new CliUsageError(`--pcrs: ${name} is given twice`);
    if (typeof v !== 'string' || !/^(0x)?([0-9a-fA-F]{2})+$/.test(v)) throw new CliUsageError(`--pcrs: ${name} must be hex`);
    pins[name] = v.replace(/^0x/, '').toLowerCase();
  }
  for (const name of REQUIRED_PIN_NAMES) {
    if (!(name in pins)) throw new CliUsageError(`--pcrs: ${name} is required (PCR0, PCR1 and PCR2; any other of PCR3…PCR31 optional)`);
  }
  // Lengths after presence, so a missing PCR is named first.
  for (const [name, hex] of Object.entries(pins)) {
    if (![64, 96, 128].includes(hex.length)) throw new CliUsageError(`--pcrs: ${name} must be 96 hex digits (48 bytes, SHA-384; 64 or 128 for other banks), found ${hex.length}`);
  }
  return pins as unknown as PcrPins;
}

/** PEM text, or DER (a SEQUENCE: 0x30) — a COSE document starts 0x84 or 0xd2. */
function looksLikeCertificate(bytes: Uint8Array): boolean {
  return bytes[0] === 0x30 || new TextDecoder().decode(bytes.subarray(0, 64)).includes('-----BEGIN CERTIFICATE-----');
}

function readCertFile(file: string): Uint8Array {
  if (!existsSync(file)) throw new CliUsageError(`--cert: ${file} does not exist`);
  return new Uint8Array(readFileSync(file));
}

function certSummary(der: Uint8Array, label: string) {
  try {
    const c = parseCertificate(der, label);
    return { subject: c.subject, issuer: c.issuer, notBefore: c.notBefore.toISOString(), notAfter: c.notAfter.toISOString(), bytes: der.length };
  } catch (err) {
    return { error: (err as Error).message, bytes: der.length };
  }
}

function describeDocument(parsed: ParsedAttestation, size: number) {
  const { cose, document: d } = parsed;
  const field = (b: Uint8Array | null) => (b === null ? null : toHex(b));
  return {
    bytes: size,
    tagged: cose.tagged,
    moduleId: d.moduleId,
    digest: d.digest,
    timestamp: d.timestamp,
    time: new Date(d.timestamp).toISOString(),
    debugMode: isDebugModeDocument(d),
    pcrs: Object.fromEntries([...d.pcrs].map(([i, v]) => [String(i), toHex(v)])),
    certificate: certSummary(d.certificate, 'certificate'),
    cabundle: d.cabundle.map((c, i) => certSummary(c, `cabundle[${i}]`)),
    nonce: field(d.nonce),
    userData: field(d.userData),
    // Show a present-but-empty public_key as such (the lenient display parse maps it to null).
    publicKey: d.publicKey === null && (decodeStrict(cose.payload) as CborMap).get('public_key') instanceof Uint8Array ? '' : field(d.publicKey),
  };
}

function size(hex: string | null): string {
  return hex === null ? 'absent' : `${hex.length / 2} bytes`;
}

function printHuman(io: CliIo, desc: ReturnType<typeof describeDocument>): void {
  io.out(`Attestation document: ${desc.bytes} bytes, COSE_Sign1 ${desc.tagged ? '(tag 18)' : '(untagged)'}, ES384`);
  io.out(`  module_id   ${printable(desc.moduleId)}`);
  io.out(`  time        ${desc.time} (${desc.timestamp})`);
  io.out(`  digest      ${desc.digest}`);
  io.out(`  debug mode  ${desc.debugMode ? 'yes (PCR0/1/2/8 all zero)' : 'no'}`);
  io.out('  PCRs');
  for (const [i, v] of Object.entries(desc.pcrs)) io.out(`    PCR${i.padEnd(2)}  ${v}`);
  const cert = (label: string, c: ReturnType<typeof certSummary>) =>
    'error' in c ? io.out(`  ${label.padEnd(12)}(unparseable: ${printable(String(c.error))})`) : io.out(`  ${label.padEnd(12)}${printable(c.subject)}\n  ${''.padEnd(12)}valid ${c.notBefore} → ${c.notAfter}`);
  cert('certificate', desc.certificate);
  desc.cabundle.forEach((c, i) => cert(`cabundle[${i}]`, c));
  io.out(`  nonce       ${size(desc.nonce)}${desc.nonce !== null && desc.nonce.length <= 128 ? `  ${desc.nonce}` : ''}`);
  io.out(`  user_data   ${size(desc.userData)}`);
  io.out(`  public_key  ${size(desc.publicKey)}`);
}

export const command: CliCommand = {
  help: HELP,
  async run(args: string[], io: CliIo): Promise<number> {
    let parsed;
    try {
      parsed = parseArgs({
        args,
        allowPositionals: true,
        strict: true,
        options: {
          pcrs: { type: 'string', multiple: true },
          root: { type: 'string', multiple: true },
          at: { type: 'string' },
          nonce: { type: 'string' },
          'max-age': { type: 'string' },
          debug: { type: 'boolean', default: false },
          'allow-empty-public-key': { type: 'boolean', default: false },
          'allow-debug-enclave': { type: 'boolean', default: false },
          json: { type: 'boolean', default: false },
          cert: { type: 'string' },
        },
      });
    } catch (err) {
      throw new CliUsageError((err as Error).message);
    }
    const { values, positionals } = parsed;
    if (positionals.length !== 1) throw new CliUsageError(`expected one document (<file|-|base64>); found ${positionals.length}`);

    const pins = values.pcrs?.map(parsePins);
    const roots = rootsFromFlags(values.root);
    let at: Date | undefined;
    if (values.at !== undefined) {
      at = new Date(values.at);
      if (Number.isNaN(at.getTime())) throw new CliUsageError(`--at: "${values.at}" is not an ISO 8601 time`);
    }
    let nonce: Uint8Array | undefined;
    if (values.nonce !== undefined) {
      try {
        nonce = fromHex(values.nonce.replace(/^0x/, ''));
      } catch {
        throw new CliUsageError('--nonce must be hex');
      }
    }
    let maxAgeMs: number | undefined;
    if (values['max-age'] !== undefined) {
      maxAgeMs = Number(values['max-age']);
      if (!Number.isFinite(maxAgeMs) || maxAgeMs < 0) throw new CliUsageError('--max-age must be a number of milliseconds');
    }

    const input = await readInput(positionals[0]!, io);
    const when = at ?? new Date();
    const fail = (code: string, message: string): number => {
      if (values.json) io.out(JSON.stringify({ document: null, verdict: { ok: false, code, message } }, null, 2));
      else io.out(`Verdict: FAIL ${code}: ${printable(message)}`);
      return 1;
    };

    // A certificate: the document is in its SAN, or --cert pairs a separate document with it.
    let cert: AttestedCertificate | undefined;
    const certInput = values.cert !== undefined ? readCertFile(values.cert) : looksLikeCertificate(input) ? input : undefined;
    if (certInput !== undefined) {
      try {
        cert = parseAttestedCertificate(certInput);
      } catch (err) {
        if (!(err instanceof AttestedCertError)) throw err;
        return fail(err.code, `${values.cert ?? 'the input'}: ${err.message}`);
      }
    }
    const bytes = values.cert !== undefined || cert === undefined ? input : cert.document;
    if (bytes === null) return fail('ATTESTED_CERT_NO_DOCUMENT', `the certificate (${cert!.subject}) carries no attestation document in its subjectAltName`);

    // Decode leniently for display (an empty public_key is shown, not hidden); verification applies the rules.
    let desc: ReturnType<typeof describeDocument>;
    try {
      desc = describeDocument(parseAttestationDocument(bytes, { allowEmptyPublicKey: true }), bytes.length);
    } catch (err) {
      if (!(err instanceof AttestationError)) throw err;
      if (values.json) io.out(JSON.stringify({ document: null, verdict: { ok: false, code: err.code, message: err.message } }, null, 2));
      else io.out(`Verdict: FAIL ${err.code}: ${printable(err.message)}`);
      return 1;
    }

    let verdict: { ok: true; notes: string[] } | { ok: false; code: string; message: string };
    try {
      const exp = {
        ...(roots ? { roots } : {}),
        ...(pins ? { pcrs: pins } : {}),
        ...(nonce ? { nonce } : {}),
        ...(maxAgeMs !== undefined ? { maxAgeMs } : {}),
        now: when,
        debug: values.debug,
        allowEmptyPublicKey: values['allow-empty-public-key'],
        allowDebugEnclave: values['allow-debug-enclave'],
      };
      if (cert !== undefined) await verifyAttestedCertificate(cert.der, { ...exp, document: bytes });
      else await verifyAttestation(bytes, exp);
      const notes = [
        ...(cert !== undefined ? [`user_data = the certificate's key (SPKI, ${cert.spkiDer.length} bytes)`] : []),
        values.debug ? 'debug: certificate chain and signature NOT checked' : `chain to ${roots ? 'the given root' : 'the AWS Nitro root G1'} and ES384 signature valid at ${when.toISOString()}`,
        pins ? `PCRs match ${pins.length === 1 ? 'the pinned set' : `one of ${pins.length} pinned sets`}` : 'PCR values NOT pinned (give --pcrs)',
        ...(nonce ? ['nonce matches'] : []),
      ];
      verdict = { ok: true, notes };
    } catch (err) {
      if (!(err instanceof AttestationError) && !(err instanceof AttestedCertError)) throw err;
      verdict = { ok: false, code: err.code, message: err.message };
    }

    const certDesc =
      cert === undefined
        ? undefined
        : { subject: cert.subject, hostnames: cert.hostnames, notAfter: cert.notAfter.toISOString(), spkiBytes: cert.spkiDer.length, document: values.cert !== undefined ? 'separate (positional)' : 'subjectAltName' };
    if (values.json) {
      io.out(JSON.stringify({ ...(certDesc === undefined ? {} : { tlsCertificate: certDesc }), document: desc, verdict: { ...verdict, at: when.toISOString(), debug: values.debug } }, null, 2));
    } else {
      if (certDesc !== undefined) {
        io.out(`TLS certificate: ${printable(certDesc.subject)}; names ${printable(certDesc.hostnames.join(', ')) || '(none)'}; valid to ${certDesc.notAfter}; document from ${certDesc.document}`);
      }
      printHuman(io, desc);
      io.out(verdict.ok ? `Verdict: PASS (${verdict.notes.join('; ')})` : `Verdict: FAIL ${verdict.code}: ${printable(verdict.message)}`);
    }
    return verdict.ok ? 0 : 1;
  },
};


/**
 * An in-process NSM for development and tests (node-only). It answers the device's own request shape through
 * `handle(requestCbor)` and produces documents in the real format: COSE_Sign1 (untagged), protected {1: -35},
 * payload keys module_id, digest, timestamp, pcrs, certificate, cabundle, public_key, user_data, nonce in that
 * order, 16 PCRs of 48 bytes, cabundle [root, intermediate], a 3-hour leaf, ES384 signature.
 *
 * PKI. `stateDir/nsm-ca/` holds the simulated root and intermediate (P-384; keys PKCS#8 PEM, mode 0600; a
 * group/world-writable or foreign-owned stateDir or nsm-ca/, or a key file others can access, is refused with
 * NSM_SIMULATOR_INSECURE). It is
 * created once (atomically: built in a temporary directory, then renamed into place — a concurrent start uses
 * whichever CA won) and reused across restarts, so clients can pin `rootPath`. The root and intermediate
 * are valid from one day before creation for 20 years. The leaf key and certificate live in memory only:
 * 3 hours like AWS's, replaced when less than 30 minutes remain (checked on every document).
 *
 * PCRs (SHA-384; lp(x) = 4-byte big-endian length ‖ x; text as UTF-8; D = "enclave-agent/nsm-simulator/v1"):
 *   PCR0 = SHA384(D ‖ "/PCR0" ‖ lp(agentVersion) ‖ lp(app) ‖ lp(config))   — the whole "image"
 *   PCR1 = SHA384(D ‖ "/PCR1" ‖ lp(agentVersion))                            — the agent ("kernel + bootstrap")
 *   PCR2 = SHA384(D ‖ "/PCR2" ‖ lp(app))                                     — the application
 *   PCR3 = zeros (no IAM role)
 *   PCR4 = SHA384(D ‖ "/PCR4" ‖ lp(moduleId))                               — the "parent instance"
 *   PCR8 = SHA384(D ‖ "/PCR8" ‖ lp(signingCert)) when identity.signingCert is set, else zeros (unsigned image)
 *   PCR5–7, 9–15 = zeros.
 * Debug mode: PCR0, 1, 2 and 8 are all zero, as on real hardware.
 */
import { createHash, randomBytes, webcrypto } from 'node:crypto';
import type { Stats } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { concatBytes, fromBase64, toBase64, toHex, utf8 } from '../util/bytes.ts';
import { currentUid, unsafeDirReason, unsafePublicFileReason, unsafeSecretFileReason } from '../util/private-files.ts';
import { COSE_ALG_ES384, coseSign1SigStructure } from './document.ts';
import { AttestationError } from './errors.ts';
import type { AttestationRequest, Nsm } from './nsm.ts';
import { createDeviceNsm } from './nsm-device.ts';
import { encodeName, mintCertificate, OID_C as C, OID_CN as CN, OID_L as L, OID_O as O, OID_OU as OU, OID_ST as ST } from './simulator-x509.ts';
import { parseCertificate } from './x509.ts';
import {
  decodeNsmRequest,
  encodeCbor,
  encodeNsmResponse,
  NSM_MAX_NONCE,
  NSM_MAX_PUBLIC_KEY,
  NSM_MAX_USER_DATA,
} from './nsm-messages.ts';

/** What is being run: every PCR the simulator reports derives from this (see the file header). */
export interface SimulatorIdentity {
  /** The enclave-agent version (stands in for the kernel/bootstrap measured into PCR1). */
  agentVersion: string;
  /** The application: its command line or image digest (PCR2). */
  app: string;
  /** The enclave configuration, e.g. the bytes of enclave.toml. */
  config: Uint8Array | string;
  /** Stand-in for the image signing certificate (PCR8); absent = unsigned image, PCR8 all zero. */
  signingCert?: string;
}

export interface NsmSimulatorOptions {
  stateDir: string;
  identity: SimulatorIdentity;
  /** Debug-mode enclave: PCR0/1/2/8 all zero. */
  debug?: boolean;
  /** Clock in ms since the epoch (document timestamps, certificate windows, leaf rotation). */
  now?: () => number;
  /** Default: derived from the CA, stable per stateDir ("i-<17 hex>-enc<16 hex>"). */
  moduleId?: string;
}

/** For tests and tooling: adjust the payload map (real key order) before it is signed. */
export interface DocumentTweak {
  payload?: (payload: Map<string, unknown>) => void;
}

export interface NsmSimulator extends Nsm {
  /** The simulated root certificate, PEM and DER; `rootPath` is its PEM file in stateDir. */
  readonly rootPem: string;
  readonly rootDer: Uint8Array;
  readonly rootPath: string;
  readonly moduleId: string;
  /** The 16 PCRs documents report. */
  readonly pcrs: Record<number, Uint8Array>;
  /** Device-shaped: NSM request CBOR in, NSM response CBOR out (`{"Error": ...}` for bad requests). */
  handle(requestCbor: Uint8Array): Promise<Uint8Array>;
  /** Signs a document without the request limits, after `tweak` (tests build malformed-but-signed documents). */
  issueDocument(req: AttestationRequest, tweak?: DocumentTweak): Promise<Uint8Array>;
}

const DOMAIN = 'enclave-agent/nsm-simulator/v1';
const PCR_COUNT = 16;
const PCR_BYTES = 48;
const LEAF_LIFETIME_MS = 3 * 60 * 60 * 1000;
const LEAF_ROTATE_BEFORE_MS = 30 * 60 * 1000;
const CA_BACKDATE_MS = 24 * 60 * 60 * 1000;
const CA_LIFETIME_MS = 20 * 365 * 24 * 60 * 60 * 1000;
const RANDOM_BYTES_PER_CALL = 256;
const PROTECTED_HEADER = encodeCbor(new Map([[1, COSE_ALG_ES384]]));

function lp(x: Uint8Array | string): Uint8Array {
  const b = typeof x === 'string' ? utf8.encode(x) : x;
  const len = new Uint8Array(4);
  new DataView(len.buffer).setUint32(0, b.length);
  return concatBytes(len, b);
}

function measure(label: string, ...parts: (Uint8Array | string)[]): Uint8Array {
  const h = createHash('sha384');
  h.update(utf8.encode(`${DOMAIN}/${label}`));
  for (const p of parts) h.update(lp(p));
  return new Uint8Array(h.digest());
}

function checkIdentity(identity: SimulatorIdentity): void {
  if (!identity || typeof identity.agentVersion !== 'string' || typeof identity.app !== 'string') {
    throw new TypeError('SimulatorIdentity needs agentVersion and app as strings');
  }
  if (typeof identity.config !== 'string' && !(identity.config instanceof Uint8Array)) {
    throw new TypeError('SimulatorIdentity.config must be a string or bytes');
  }
}

/** PCR0, 1, 2 and 8 the simulator reports for `identity` (hex-ready for pinning; no state needed). */
export function simulatorPcrs(identity: SimulatorIdentity, debug = false): Record<0 | 1 | 2 | 8, Uint8Array> {
  checkIdentity(identity);
  if (debug) {
    const z = () => new Uint8Array(PCR_BYTES);
    return { 0: z(), 1: z(), 2: z(), 8: z() };
  }
  return {
    0: measure('PCR0', identity.agentVersion, identity.app, identity.config),
    1: measure('PCR1', identity.agentVersion),
    2: measure('PCR2', identity.app),
    8: identity.signingCert === undefined ? new Uint8Array(PCR_BYTES) : measure('PCR8', identity.signingCert),
  };
}

function allPcrs(identity: SimulatorIdentity, debug: boolean, moduleId: string): Record<number, Uint8Array> {
  const out: Record<number, Uint8Array> = {};
  for (let i = 0; i < PCR_COUNT; i++) out[i] = new Uint8Array(PCR_BYTES);
  Object.assign(out, simulatorPcrs(identity, debug));
  out[4] = measure('PCR4', moduleId.split('-enc')[0]!);
  return out;
}

// ---------------------------------------------------------------------------------------------- X.509 minting

const subtle = webcrypto.subtle as SubtleCrypto;
const EC_P384 = { name: 'ECDSA', namedCurve: 'P-384' } as const;

interface Issuer {
  der: Uint8Array;
  /** Its subject Name DER: what the certificates it signs name as their issuer. */
  subject: Uint8Array;
  key: CryptoKey;
}

/** The subject Name DER of a certificate the simulator wrote (read back from nsm-ca/). */
function subjectOf(der: Uint8Array, label: string): Uint8Array {
  return parseCertificate(der, label).subjectName.der;
}

function pem(label: string, der: Uint8Array): string {
  const b64 = toBase64(der);
  return `-----BEGIN ${label}-----\n${b64.replace(/.{1,64}/g, '$&\n')}-----END ${label}-----\n`;
}

function unpem(text: string, label: string): Uint8Array {
  const m = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`).exec(text);
  if (!m) throw new Error(`no ${label} block`);
  return fromBase64(m[1]!.replace(/\s+/g, ''));
}

interface Ca {
  root: Issuer;
  intermediate: Issuer;
  rootPem: string;
  rootPath: string;
}

const CA_DIR = 'nsm-ca';

async function createCa(stateDir: string, now: number): Promise<void> {
  const tmp = await mkdtemp(join(stateDir, '.nsm-ca-'));
  try {
    const rootKeys = (await subtle.generateKey(EC_P384, true, ['sign', 'verify'])) as CryptoKeyPair;
    const interKeys = (await subtle.generateKey(EC_P384, true, ['sign', 'verify'])) as CryptoKeyPair;
    const notBefore = now - CA_BACKDATE_MS;
    const notAfter = now + CA_LIFETIME_MS;
    const tag = toHex(randomBytes(8));
    const rootSubject = encodeName([[C, 'US'], [O, 'enclave-agent (simulated, not AWS)'], [OU, 'NSM simulator'], [CN, `sim-${tag}.nitro-enclaves`]]);
    const rootDer = await mintCertificate({ subject: rootSubject, issuer: rootSubject, publicKey: rootKeys.publicKey, signingKey: rootKeys.privateKey, notBefore, notAfter, ca: true });
    const interDer = await mintCertificate({
      subject: encodeName([[C, 'US'], [O, 'enclave-agent (simulated, not AWS)'], [OU, 'NSM simulator'], [CN, `sim-${tag}.intermediate.nitro-enclaves`]]),
      issuer: rootSubject,
      publicKey: interKeys.publicKey,
      signingKey: rootKeys.privateKey,
      notBefore,
      notAfter,
      ca: true,
      pathLen: 0,
    });
    const pkcs8 = async (k: CryptoKey) => pem('PRIVATE KEY', new Uint8Array(await subtle.exportKey('pkcs8', k)));
    await writeFile(join(tmp, 'root.pem'), pem('CERTIFICATE', rootDer), { mode: 0o644 });
    await writeFile(join(tmp, 'root.key.pem'), await pkcs8(rootKeys.privateKey), { mode: 0o600 });
    await writeFile(join(tmp, 'intermediate.pem'), pem('CERTIFICATE', interDer), { mode: 0o644 });
    await writeFile(join(tmp, 'intermediate.key.pem'), await pkcs8(interKeys.privateKey), { mode: 0o600 });
    await rename(tmp, join(stateDir, CA_DIR));
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err; // someone else created it first: use theirs
  }
}

/**
 * Refuses CA state others could have replaced or read: stateDir and nsm-ca/ group- or world-writable or another
 * user's, a key file with any group/other access or another owner, a certificate others can write. ENOENT passes
 * (the CA is created next).
 */
async function checkCaFiles(stateDir: string): Promise<void> {
  const dir = join(stateDir, CA_DIR);
  const uid = currentUid();
  const checks: [string, (st: Stats, uid: number | undefined) => string | null][] = [
    [stateDir, unsafeDirReason],
    [dir, unsafeDirReason],
    [join(dir, 'root.key.pem'), unsafeSecretFileReason],
    [join(dir, 'intermediate.key.pem'), unsafeSecretFileReason],
    [join(dir, 'root.pem'), unsafePublicFileReason],
    [join(dir, 'intermediate.pem'), unsafePublicFileReason],
  ];
  for (const [file, check] of checks) {
    let st: Stats;
    try {
      st = await stat(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    const problem = check(st, uid);
    if (problem) throw new AttestationError('NSM_SIMULATOR_INSECURE', `NSM simulator state ${file} is ${problem}; the simulated CA is refused`);
  }
}

async function loadCa(stateDir: string): Promise<Ca> {
  await checkCaFiles(stateDir);
  const dir = join(stateDir, CA_DIR);
  const read = (f: string) => readFile(join(dir, f), 'utf8');
  const importKey = async (f: string) =>
    subtle.importKey('pkcs8', unpem(await read(f), 'PRIVATE KEY') as Uint8Array<ArrayBuffer>, EC_P384, false, ['sign']);
  const rootPem = await read('root.pem');
  const rootDer = unpem(rootPem, 'CERTIFICATE');
  const interDer = unpem(await read('intermediate.pem'), 'CERTIFICATE');
  return {
    root: { der: rootDer, subject: subjectOf(rootDer, 'simulated root'), key: await importKey('root.key.pem') },
    intermediate: { der: interDer, subject: subjectOf(interDer, 'simulated intermediate'), key: await importKey('intermediate.key.pem') },
    rootPem,
    rootPath: join(dir, 'root.pem'),
  };
}

async function openCa(stateDir: string, now: number): Promise<Ca> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  try {
    return await loadCa(stateDir);
  } catch (err) {
    if (err instanceof AttestationError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`NSM simulator CA in ${join(stateDir, CA_DIR)} is unreadable: ${(err as Error).message}`, { cause: err });
  }
  await createCa(stateDir, now);
  return loadCa(stateDir);
}

// ---------------------------------------------------------------------------------------------- simulator

interface Leaf {
  der: Uint8Array;
  key: CryptoKey;
  notBefore: number;
  notAfter: number;
}

export async function createNsmSimulator(opts: NsmSimulatorOptions): Promise<NsmSimulator> {
  checkIdentity(opts.identity);
  const now = opts.now ?? Date.now;
  const ca = await openCa(opts.stateDir, now());
  const caId = toHex(createHash('sha256').update(ca.root.der).digest());
  const moduleId = opts.moduleId ?? `i-0${caId.slice(0, 16)}-enc0${caId.slice(16, 31)}`;
  const pcrs = allPcrs(opts.identity, opts.debug === true, moduleId);

  let leaf: Leaf | undefined;
  let minting: Promise<Leaf> | undefined;

  async function mintLeaf(t: number): Promise<Leaf> {
    const keys = (await subtle.generateKey(EC_P384, false, ['sign', 'verify'])) as CryptoKeyPair;
    const notBefore = Math.floor(t / 1000) * 1000;
    const notAfter = notBefore + LEAF_LIFETIME_MS;
    const der = await mintCertificate({
      // AWS's enclave leaf adds ST and L after C; root and intermediate are C, O, OU, CN.
      subject: encodeName([[C, 'US'], [ST, 'Washington'], [L, 'Seattle'], [O, 'enclave-agent (simulated, not AWS)'], [OU, 'NSM simulator'], [CN, `${moduleId}.sim`]]),
      issuer: ca.intermediate.subject,
      publicKey: keys.publicKey,
      signingKey: ca.intermediate.key,
      notBefore,
      notAfter,
      ca: false,
    });
    return { der, key: keys.privateKey, notBefore, notAfter };
  }

  async function currentLeaf(t: number): Promise<Leaf> {
    if (leaf && t >= leaf.notBefore && leaf.notAfter - t >= LEAF_ROTATE_BEFORE_MS) return leaf;
    minting ??= mintLeaf(t).finally(() => (minting = undefined));
    leaf = await minting;
    return leaf;
  }

  async function issueDocument(req: AttestationRequest, tweak?: DocumentTweak): Promise<Uint8Array> {
    const t = now();
    const signer = await currentLeaf(t);
    const pcrMap = new Map<number, Uint8Array>();
    for (let i = 0; i < PCR_COUNT; i++) pcrMap.set(i, pcrs[i]!);
    const payload = new Map<string, unknown>([
      ['module_id', moduleId],
      ['digest', 'SHA384'],
      ['timestamp', BigInt(Math.floor(t))],
      ['pcrs', pcrMap],
      ['certificate', signer.der],
      ['cabundle', [ca.root.der, ca.intermediate.der]],
      ['public_key', req.publicKey ?? null],
      ['user_data', req.userData ?? null],
      ['nonce', req.nonce ?? null],
    ]);
    tweak?.payload?.(payload);
    const payloadBytes = encodeCbor(payload);
    const toSign = coseSign1SigStructure(PROTECTED_HEADER, payloadBytes);
    const signature = new Uint8Array(await subtle.sign({ name: 'ECDSA', hash: 'SHA-384' }, signer.key, toSign as Uint8Array<ArrayBuffer>));
    return encodeCbor([PROTECTED_HEADER, new Map(), payloadBytes, signature]);
  }

  async function handle(requestCbor: Uint8Array): Promise<Uint8Array> {
    let req;
    try {
      req = decodeNsmRequest(requestCbor);
    } catch {
      return encodeNsmResponse({ kind: 'Error', code: 'InvalidArgument' });
    }
    if (req.kind === 'GetRandom') return encodeNsmResponse({ kind: 'GetRandom', random: new Uint8Array(randomBytes(RANDOM_BYTES_PER_CALL)) });
    if (req.kind === 'Other') return encodeNsmResponse({ kind: 'Error', code: 'InvalidOperation' });
    if (
      (req.userData?.length ?? 0) > NSM_MAX_USER_DATA ||
      (req.nonce?.length ?? 0) > NSM_MAX_NONCE ||
      (req.publicKey?.length ?? 0) > NSM_MAX_PUBLIC_KEY
    ) {
      return encodeNsmResponse({ kind: 'Error', code: 'InputTooLarge' });
    }
    try {
      return encodeNsmResponse({ kind: 'Attestation', document: await issueDocument(req) });
    } catch {
      return encodeNsmResponse({ kind: 'Error', code: 'InternalError' });
    }
  }

  // attest/random go through the device client: the same request/response bytes as on hardware.
  const device = createDeviceNsm(handle);
  return {
    rootPem: ca.rootPem,
    rootDer: ca.root.der,
    rootPath: ca.rootPath,
    moduleId,
    pcrs,
    handle,
    issueDocument,
    attest: (req) => device.attest(req),
    random: (n) => device.random(n),
  };
}

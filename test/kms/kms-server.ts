// A KMS of our own for tests (not a mock of our client): loopback HTTPS with a throwaway self-signed
// certificate, the KMS JSON 1.1 protocol (X-Amz-Target TrentService.GenerateDataKey / Decrypt), SigV4
// checked by an independent signer (the aws4 package), the Recipient attestation document verified against
// the simulator's root, `kms:RecipientAttestation:PCR<n>` / `ImageSha384` conditions evaluated from a key
// policy document, and CiphertextForRecipient built by `openssl cms` (BER, like KMS). KMS.md §2.
import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash, createDecipheriv, createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import aws4 from 'aws4';
import { pcrHex } from '../../src/attestation/document.ts';
import { verifyAttestation } from '../../src/attestation/verify.ts';
import { opensslRecipientEnvelope } from './openssl-cms.ts';

export interface KeyPolicy {
  Version?: string;
  Statement: {
    Sid?: string;
    Effect: 'Allow' | 'Deny';
    Principal?: unknown;
    Action: string | string[];
    Resource?: string;
    Condition?: Record<string, Record<string, string | string[]>>;
  }[];
}

/** The policy `keys seal` prints, filled in: GenerateDataKey for the operator, Decrypt only for these PCRs. */
export function attestedPolicy(pcrs: { PCR0: string; PCR1: string; PCR2: string }): KeyPolicy {
  return {
    Version: '2012-10-17',
    Statement: [
      { Sid: 'OperatorSeals', Effect: 'Allow', Action: ['kms:GenerateDataKey'], Resource: '*' },
      {
        Sid: 'EnclaveAttested',
        Effect: 'Allow',
        Action: ['kms:Decrypt'],
        Resource: '*',
        Condition: {
          StringEqualsIgnoreCase: {
            'kms:RecipientAttestation:PCR0': pcrs.PCR0,
            'kms:RecipientAttestation:PCR1': pcrs.PCR1,
            'kms:RecipientAttestation:PCR2': pcrs.PCR2,
          },
        },
      },
    ],
  };
}

export interface KmsTestServerOptions {
  region?: string;
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Trusted roots for Recipient documents (the simulator's root PEM). */
  roots: string[];
  /** Recipient documents older than this are refused (default 5 minutes). */
  maxDocumentAgeMs?: number;
}

export interface KmsCall {
  op: string;
  status: number;
  error?: string;
}

class KmsFault extends Error {
  constructor(readonly status: number, readonly type: string, message: string) {
    super(message);
  }
}

export class KmsTestServer {
  readonly region: string;
  readonly caPem: string;
  readonly calls: KmsCall[] = [];
  /** Flip a byte of the next envelopes' encrypted content (tests of a bad envelope). */
  tamperEnvelope = false;
  /** Answer an attested Decrypt as a hostile host would like: the data key in Plaintext, no envelope. */
  plaintextForRecipient = false;
  /**
   * Answer an attested Decrypt as a host that broke TLS would: a well-formed envelope, to the document's own
   * public_key, of this data key (the host's choice) instead of the key's.
   */
  forgedDataKey: Uint8Array | null = null;
  /** Pad each successful answer's JSON with this many bytes, in a field the SDK ignores (an oversize answer). */
  answerPadding = 0;
  /** With answerPadding: send the answer chunked, with no Content-Length, instead of declaring its length. */
  chunkedAnswers = false;
  port = 0;
  readonly #keys = new Map<string, { material: Buffer; policy: KeyPolicy }>();
  readonly #opts: KmsTestServerOptions;
  readonly #server: https.Server;

  readonly host: string;

  private constructor(opts: KmsTestServerOptions, host: string, cert: { key: string; cert: string }) {
    this.#opts = opts;
    this.host = host;
    this.region = opts.region ?? 'eu-west-1';
    this.caPem = cert.cert;
    this.#server = https.createServer({ key: cert.key, cert: cert.cert }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const op = String(req.headers['x-amz-target'] ?? '').replace(/^TrentService\./, '');
        this.#handle(op, req.headers, req.url ?? '/', body).then(
          (out) => {
            this.calls.push({ op, status: 200 });
            if (this.answerPadding === 0) return void res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' }).end(JSON.stringify(out));
            const text = Buffer.from(JSON.stringify({ ...out, Padding: 'x'.repeat(this.answerPadding) }));
            res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1', ...(this.chunkedAnswers ? {} : { 'content-length': text.length }) });
            for (let at = 0; at < text.length; at += 16_384) res.write(text.subarray(at, at + 16_384));
            res.end();
          },
          (err: unknown) => {
            const f = err instanceof KmsFault ? err : new KmsFault(500, 'KMSInternalException', (err as Error).message);
            this.calls.push({ op, status: f.status, error: f.type });
            res.writeHead(f.status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-errortype': f.type }).end(JSON.stringify({ __type: f.type, message: f.message }));
          },
        );
      });
    });
  }

  static async start(opts: KmsTestServerOptions, port = 0, host = '127.0.0.1'): Promise<KmsTestServer> {
    const dir = mkdtempSync(path.join(tmpdir(), 'kms-tls-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=kms-test-server', '-addext', `subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost,DNS:kms.${opts.region ?? 'eu-west-1'}.amazonaws.com`, '-days', '1', '-keyout', path.join(dir, 'k.pem'), '-out', path.join(dir, 'c.pem')], { stdio: 'ignore' });
      const s = new KmsTestServer(opts, host, { key: readFileSync(path.join(dir, 'k.pem'), 'utf8'), cert: readFileSync(path.join(dir, 'c.pem'), 'utf8') });
      await s.listen(port);
      return s;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  get endpoint(): string {
    return `https://${this.host}:${this.port}`;
  }

  /** Listen (again) — on the same port after `stop()`, for "KMS down then up". */
  listen(port = this.port): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, this.host, () => {
        this.#server.off('error', reject);
        this.port = (this.#server.address() as AddressInfo).port;
        resolve();
      });
    });
  }

  /** Stop listening (connections refused) and drop open connections. */
  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  createKey(policy: KeyPolicy): string {
    const arn = `arn:aws:kms:${this.region}:111122223333:key/${randomUUID()}`;
    this.#keys.set(arn, { material: randomBytes(32), policy });
    return arn;
  }

  setPolicy(arn: string, policy: KeyPolicy): void {
    this.#keys.get(arn)!.policy = policy;
  }

  // -------------------------------------------------------------------------------------------- requests

  async #handle(op: string, headers: Record<string, string | string[] | undefined>, url: string, body: string): Promise<object> {
    this.#checkSigV4(headers, url, body);
    if (headers['content-type'] !== 'application/x-amz-json-1.1') throw new KmsFault(400, 'SerializationException', 'expected application/x-amz-json-1.1');
    let req: Record<string, unknown>;
    try {
      req = JSON.parse(body) as Record<string, unknown>;
    } catch {
      throw new KmsFault(400, 'SerializationException', 'body is not JSON');
    }
    if (op === 'GenerateDataKey') return this.#generateDataKey(req);
    if (op === 'Decrypt') return this.#decrypt(req);
    throw new KmsFault(400, 'UnknownOperationException', `operation ${op} is not implemented by the test server`);
  }

  /** Recomputes the signature with aws4 over exactly the headers the client signed; compares. */
  #checkSigV4(headers: Record<string, string | string[] | undefined>, url: string, body: string): void {
    const auth = String(headers.authorization ?? '');
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
    const c = this.#opts.credentials;
    if (!m) throw new KmsFault(400, 'IncompleteSignatureException', 'no AWS4-HMAC-SHA256 Authorization header');
    if (m[1] !== c.accessKeyId) throw new KmsFault(400, 'UnrecognizedClientException', 'The security token included in the request is invalid.');
    if (m[3] !== this.region || m[4] !== 'kms') throw new KmsFault(400, 'InvalidSignatureException', `credential scope ${m[3]}/${m[4]} is not ${this.region}/kms`);
    const signedNames = m[5]!.split(';');
    for (const required of ['host', 'x-amz-date', 'x-amz-target', 'content-type']) {
      if (!signedNames.includes(required)) throw new KmsFault(400, 'InvalidSignatureException', `${required} is not signed`);
    }
    // aws4 takes a signed x-amz-content-sha256 as the payload hash: check it against the body ourselves.
    const payloadHash = headers['x-amz-content-sha256'];
    if (payloadHash !== undefined && payloadHash !== createHash('sha256').update(body).digest('hex')) throw new KmsFault(400, 'InvalidSignatureException', 'x-amz-content-sha256 does not match the body');
    const signed: Record<string, string> = {};
    for (const n of signedNames) signed[n] = String(headers[n] ?? '');
    const include = Object.fromEntries(signedNames.map((n) => [n, true]));
    const ours = aws4.sign(
      { host: signed.host, method: 'POST', path: url, service: 'kms', region: this.region, headers: signed, body, extraHeadersToInclude: include } as aws4.Request,
      { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, ...(c.sessionToken ? { sessionToken: c.sessionToken } : {}) },
    );
    const theirs = (ours.headers as Record<string, string>).Authorization;
    if (theirs !== auth.replace(/, ?/g, ', ')) throw new KmsFault(400, 'InvalidSignatureException', 'The request signature we calculated does not match the signature you provided.');
    const when = Date.parse(signed['x-amz-date']!.replace(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/, '$1-$2-$3T$4:$5:$6Z'));
    if (!(Math.abs(Date.now() - when) < 15 * 60_000)) throw new KmsFault(400, 'InvalidSignatureException', 'Signature expired');
  }

  #key(arn: unknown): { arn: string; material: Buffer; policy: KeyPolicy } {
    const k = typeof arn === 'string' ? this.#keys.get(arn) : undefined;
    if (!k) throw new KmsFault(400, 'NotFoundException', `Key '${String(arn)}' does not exist`);
    return { arn: arn as string, ...k };
  }

  #generateDataKey(req: Record<string, unknown>): object {
    const key = this.#key(req.KeyId);
    const n = req.KeySpec === 'AES_256' ? 32 : req.KeySpec === 'AES_128' ? 16 : typeof req.NumberOfBytes === 'number' ? req.NumberOfBytes : 0;
    if (!(n >= 1 && n <= 1024)) throw new KmsFault(400, 'ValidationException', 'KeySpec or NumberOfBytes is required');
    if (req.Recipient !== undefined) throw new KmsFault(400, 'ValidationException', 'the test server implements Recipient for Decrypt only');
    this.#authorize(key.policy, 'kms:GenerateDataKey', null);
    const plaintext = randomBytes(n);
    return { KeyId: key.arn, CiphertextBlob: this.#wrap(key.arn, key.material, plaintext).toString('base64'), Plaintext: plaintext.toString('base64') };
  }

  async #decrypt(req: Record<string, unknown>): Promise<object> {
    if (typeof req.CiphertextBlob !== 'string') throw new KmsFault(400, 'ValidationException', 'CiphertextBlob is required');
    const { arn, plaintext } = this.#unwrap(Buffer.from(req.CiphertextBlob, 'base64'));
    if (req.KeyId !== undefined && req.KeyId !== arn) throw new KmsFault(400, 'IncorrectKeyException', 'The key ID in the request does not identify the key that encrypted the ciphertext.');
    const key = this.#key(arn);
    const recipient = req.Recipient as { KeyEncryptionAlgorithm?: string; AttestationDocument?: string } | undefined;
    let pcrs: Map<number, string> | null = null;
    let spki: Buffer | null = null;
    if (recipient !== undefined) {
      if (recipient.KeyEncryptionAlgorithm !== 'RSAES_OAEP_SHA_256') throw new KmsFault(400, 'ValidationException', 'KeyEncryptionAlgorithm must be RSAES_OAEP_SHA_256');
      if (typeof recipient.AttestationDocument !== 'string' || recipient.AttestationDocument.length > 262144) throw new KmsFault(400, 'ValidationException', 'AttestationDocument is required (≤ 262144 chars)');
      let doc;
      try {
        doc = await verifyAttestation(Buffer.from(recipient.AttestationDocument, 'base64'), { roots: this.#opts.roots, maxAgeMs: this.#opts.maxDocumentAgeMs ?? 5 * 60_000 });
      } catch (err) {
        throw new KmsFault(400, 'ValidationException', `The attestation document is not valid: ${(err as { code?: string }).code ?? 'error'}`);
      }
      if (!doc.publicKey) throw new KmsFault(400, 'ValidationException', 'The attestation document has no public_key');
      spki = Buffer.from(doc.publicKey);
      let k: ReturnType<typeof createPublicKey> | null = null;
      try {
        k = createPublicKey({ key: spki, format: 'der', type: 'spki' });
      } catch {
        // not an SPKI at all (e.g. the 32-byte digest the agent's local API signs in place of a caller's key)
      }
      if (k?.asymmetricKeyType !== 'rsa' || k.asymmetricKeyDetails?.modulusLength !== 2048) throw new KmsFault(400, 'ValidationException', 'public_key must be an RSA-2048 SPKI');
      pcrs = new Map([0, 1, 2, 3, 4, 8].map((i) => [i, pcrHex(doc, i) ?? '']));
    }
    this.#authorize(key.policy, 'kms:Decrypt', pcrs);
    if (spki === null || this.plaintextForRecipient) return { KeyId: arn, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT', Plaintext: plaintext.toString('base64') };
    const envelope = opensslRecipientEnvelope(spki, this.forgedDataKey ?? plaintext, 'ber');
    if (this.tamperEnvelope) envelope[envelope.length - 10]! ^= 0x01;
    return { KeyId: arn, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT', CiphertextForRecipient: Buffer.from(envelope).toString('base64') };
  }

  /** Allow when an Allow statement names the action and all its conditions hold; any matching Deny wins. */
  #authorize(policy: KeyPolicy, action: string, pcrs: Map<number, string> | null): void {
    const names = (a: string | string[]) => (Array.isArray(a) ? a : [a]);
    const matches = (s: KeyPolicy['Statement'][number]) =>
      names(s.Action).some((a) => a === action || a === 'kms:*' || a === '*') && conditionsHold(s.Condition, pcrs);
    if (policy.Statement.some((s) => s.Effect === 'Deny' && matches(s))) throw accessDenied(action);
    if (!policy.Statement.some((s) => s.Effect === 'Allow' && matches(s))) throw accessDenied(action);
  }

  #wrap(arn: string, material: Buffer, plaintext: Buffer): Buffer {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', material, iv);
    c.setAAD(Buffer.from(arn));
    const ct = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
    const id = Buffer.from(arn);
    return Buffer.concat([Buffer.of(1, id.length >> 8, id.length & 0xff), id, iv, ct]);
  }

  #unwrap(blob: Buffer): { arn: string; plaintext: Buffer } {
    const invalid = new KmsFault(400, 'InvalidCiphertextException', '');
    if (blob.length < 3 || blob[0] !== 1) throw invalid;
    const n = (blob[1]! << 8) | blob[2]!;
    const arn = blob.subarray(3, 3 + n).toString();
    const key = this.#keys.get(arn);
    if (!key || blob.length < 3 + n + 12 + 16) throw invalid;
    const iv = blob.subarray(3 + n, 15 + n);
    const body = blob.subarray(15 + n);
    try {
      const d = createDecipheriv('aes-256-gcm', key.material, iv);
      d.setAAD(Buffer.from(arn));
      d.setAuthTag(body.subarray(body.length - 16));
      return { arn, plaintext: Buffer.concat([d.update(body.subarray(0, body.length - 16)), d.final()]) };
    } catch {
      throw invalid;
    }
  }
}

function accessDenied(action: string): KmsFault {
  return new KmsFault(400, 'AccessDeniedException', `User is not authorized to perform: ${action} on this resource because no resource-based policy allows the ${action} action`);
}

const RECIPIENT_KEY = /^kms:recipientattestation:(pcr(\d+)|imagesha384)$/;

/** StringEquals / StringEqualsIgnoreCase on the RecipientAttestation keys; anything else fails closed. */
function conditionsHold(cond: KeyPolicy['Statement'][number]['Condition'], pcrs: Map<number, string> | null): boolean {
  if (!cond) return true;
  for (const [op, entries] of Object.entries(cond)) {
    if (op !== 'StringEquals' && op !== 'StringEqualsIgnoreCase') return false;
    for (const [k, want] of Object.entries(entries)) {
      const m = RECIPIENT_KEY.exec(k.toLowerCase());
      if (!m || pcrs === null) return false; // a missing key fails a String* condition
      const got = pcrs.get(m[2] === undefined ? 0 : Number(m[2]));
      if (got === undefined) return false;
      const ok = (Array.isArray(want) ? want : [want]).some((w) => (op === 'StringEquals' ? w === got : w.toLowerCase() === got.toLowerCase()));
      if (!ok) return false;
    }
  }
  return true;
}

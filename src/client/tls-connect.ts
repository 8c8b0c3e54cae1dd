// One TLS connection to an enclave's attested ingress, verified before anyone may write to it (Node only: reached
// from node.ts, never from index.ts).
//
// Trust comes ONLY from the attestation. The enclave's certificate is self-signed, so system roots and host-name
// checks prove nothing and are off (rejectUnauthorized: false). What is checked instead, on 'secureConnect' and
// before the socket is handed to anyone: the presented leaf carries a Nitro document (SAN, Evervault's format)
// that chains to the pinned root, reports the pinned PCRs, carries the nonce we sent in SNI (when we sent one),
// and whose user_data is this leaf's public key — whose private key the handshake just proved the peer holds (the
// key OpenSSL read from the leaf is compared with the one the check read, so the binding rests on no one parser).
// On failure the socket is destroyed: not one request byte was written.
import { createPublicKey, randomBytes, type X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { callerNonceRefusal } from '../attestation/caller-nonce.ts';
import { AttestationError } from '../attestation/errors.ts';
import type { VerifyExpectations } from '../attestation/verify.ts';
import { AttestedCertError, verifyAttestedCertificate, type VerifiedCertificate } from './attested-cert.ts';
import { ClientError, transportErrorName } from './errors.ts';

export interface VerifiedTlsOptions {
  host: string;
  port: number;
  /** Checks of the document (pins, roots, maxAgeMs, ...); `nonce` is set from `nonce` below. */
  verify: Omit<VerifyExpectations, 'nonce'>;
  /**
   * Ask for a fresh document: SNI `<base64(nonce)>.attest.<host>` (Evervault's convention), and the document's
   * nonce must equal it. `true` = 24 fresh random bytes for this connection.
   */
  nonce?: boolean | Uint8Array;
  /** TLS handshake + verification must finish within this (default 30 000 ms). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface VerifiedTls {
  socket: TLSSocket;
  verified: VerifiedCertificate;
  /** The nonce sent in SNI, if any. */
  nonce: Uint8Array | undefined;
}

/** 24 random bytes whose standard base64 has no '+' or '/' (an LDH DNS label), as TLS-INGRESS.md R4 advises. */
export function randomSniNonce(): Uint8Array {
  for (;;) {
    const b = randomBytes(24);
    if (!/[+/]/.test(b.toString('base64'))) return new Uint8Array(b);
  }
}

/** The SNI label of a nonce: standard base64 (Evervault decodes that), base64url when it would hold '+' or '/'. */
export function sniNonceLabel(nonce: Uint8Array): string {
  const std = Buffer.from(nonce).toString('base64').replace(/=+$/, '');
  const label = /[+/]/.test(std) ? Buffer.from(nonce).toString('base64url') : std;
  if (nonce.length === 0 || label.length > 63) {
    throw new ClientError('CLIENT_BAD_OPTIONS', `nonce: expected 1–47 bytes (one DNS label of base64), found ${nonce.length}`);
  }
  const refused = callerNonceRefusal(nonce); // the agent refuses it (caller-nonce.ts): say so before connecting
  if (refused !== null) throw new ClientError('CLIENT_BAD_OPTIONS', `nonce: ${refused}`);
  return label;
}

function attestationFailed(err: unknown, where: string): ClientError {
  if (err instanceof AttestationError || err instanceof AttestedCertError) {
    return new ClientError('CLIENT_ATTESTATION_FAILED', `the enclave at ${where} did not pass attestation (${err.code}): ${err.message}`, {
      cause: err,
      attestationCode: err.code,
    });
  }
  if (err instanceof ClientError) return err;
  return new ClientError('CLIENT_ATTESTATION_FAILED', `verifying the certificate of ${where} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

function ignoreError(): void {
  // the owner hears the failure as 'close' or through its own listener
}

/**
 * Whether the leaf's key as OpenSSL read it (the key the handshake proved) is the SPKI the attestation check read
 * with its own DER reader: the binding must not rest on two parsers agreeing about one certificate.
 */
function sameKey(leaf: X509Certificate, spkiDer: Uint8Array): boolean {
  try {
    // leaf.publicKey throws for a key OpenSSL will not hand out: inside the try, or the .then callback rejects unheard.
    return createPublicKey({ key: Buffer.from(spkiDer.buffer, spkiDer.byteOffset, spkiDer.byteLength), format: 'der', type: 'spki' }).equals(leaf.publicKey);
  } catch {
    return false;
  }
}

export function connectVerifiedTls(opts: VerifiedTlsOptions): Promise<VerifiedTls> {
  const where = `${opts.host}:${opts.port}`;
  const nonce = opts.nonce === true ? randomSniNonce() : opts.nonce instanceof Uint8Array ? opts.nonce : undefined;
  // No SNI for a bare IP (RFC 6066), unless a nonce needs it.
  const servername = nonce !== undefined ? `${sniNonceLabel(nonce)}.attest.${opts.host}` : isIP(opts.host) === 0 ? opts.host : undefined;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise<VerifiedTls>((resolve, reject) => {
    let settled = false;
    const socket = tls.connect({
      host: opts.host,
      port: opts.port,
      ...(servername === undefined ? {} : { servername }),
      // Self-signed by design: trust is the attestation checked below, not a CA.
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
      minVersion: 'TLSv1.2',
    });
    const fail = (err: ClientError): void => {
      if (settled) return;
      settled = true;
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onAbort = (): void => fail(new ClientError('CLIENT_ABORTED', `connecting to ${where} was aborted`, { cause: opts.signal?.reason }));
    const timer = setTimeout(() => fail(new ClientError('CLIENT_TIMEOUT', `TLS handshake and attestation with ${where} did not finish within ${timeoutMs} ms`)), timeoutMs);
    // A TLS alert or bad record: its code only, no cause — OpenSSL's text ("error:0A00010B:SSL routines:...") is not ours.
    const onError = (err: Error): void =>
      fail(
        transportErrorName(err).startsWith('ERR_SSL_')
          ? new ClientError('CLIENT_CONNECT_FAILED', `TLS connection to ${where} failed (${transportErrorName(err)})`, { retryable: true })
          : new ClientError('CLIENT_CONNECT_FAILED', `TLS connection to ${where} failed: ${err.message}`, { cause: err, retryable: true }),
      );
    const onClose = (): void => fail(new ClientError('CLIENT_CONNECT_FAILED', `${where} closed the connection during the TLS handshake`, { retryable: true }));
    const cleanup = (): void => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    // For the socket's whole life: between verification and the new owner's own listener (undici's comes a tick
    // later), a peer that sends a bad record makes the socket emit 'error', and one nobody hears ends the process.
    socket.on('error', ignoreError);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.once('secureConnect', () => {
      const leaf = socket.getPeerX509Certificate();
      if (leaf === undefined) {
        fail(new ClientError('CLIENT_ATTESTATION_FAILED', `${where} presented no certificate`, { attestationCode: 'ATTESTED_CERT_NO_DOCUMENT' }));
        return;
      }
      verifyAttestedCertificate(new Uint8Array(leaf.raw), { ...opts.verify, ...(nonce === undefined ? {} : { nonce }) }).then(
        (verified) => {
          if (settled) return;
          if (!sameKey(leaf, verified.certificate.spkiDer)) {
            fail(
              new ClientError('CLIENT_ATTESTATION_FAILED', `${where}: the key the TLS handshake proved is not the key the attestation names (two readings of one certificate disagree)`, {
                attestationCode: 'ATTESTED_CERT_KEY_MISMATCH',
              }),
            );
            return;
          }
          settled = true;
          cleanup();
          resolve({ socket, verified, nonce });
        },
        (err: unknown) => fail(attestationFailed(err, where)),
      );
    });
  });
}

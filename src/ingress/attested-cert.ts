/*
 * Attested TLS certificate: the exact format (Evervault-compatible, see shared/protocol/TLS-INGRESS.md §1.4).
 *
 *  Key       ECDSA P-384, generated in the enclave (one per boot; a fresh one per SNI-nonce handshake).
 *  Cert      X.509 v3, self-signed (ecdsa-with-SHA384) — no operator CA yet. Random 16-byte positive serial.
 *            subject = issuer = CN=<host> (host truncated to 64 chars), O=enclave-agent.
 *            notBefore = now − 10 s; notAfter = notAfter of the NSM signing certificate inside the document.
 *            BasicConstraints CA:FALSE; KeyUsage (critical) digitalSignature; ExtendedKeyUsage serverAuth.
 *  SAN       exactly two dNSName entries, in this order:
 *              1. `<host>`
 *              2. `<lowercase hex of the whole COSE_Sign1 document>.<host>`
 *            The document is NOT split: the whole hex string is ONE first label (≈9–10k chars, beyond DNS's 63;
 *            OpenSSL, Node and Python `cryptography` accept it). Verifier rule (Evervault's): over all dNSNames,
 *            take the text before the first '.', keep the LONGEST, hex-decode it → COSE_Sign1 bytes.
 *  Document  NSM Attestation{ user_data = the leaf's SubjectPublicKeyInfo DER (120 bytes for P-384, the exact
 *            bytes in the certificate), nonce = client nonce or 32 NSM-random bytes, public_key = absent }.
 *  <host>    the SNI the client sent if any (lowercased), else the configured host (default `localhost`).
 *  Nonce     SNI `<nonce>.attest.<host>`: labels split on '.', ≥ 3 labels, label[1] == "attest" (case-insensitive);
 *            label[0] (≤ 63 chars) decoded as standard base64 (padded or not), falling back to base64url;
 *            1–64 bytes. Recommended: 24 random bytes → 32 base64 chars, resampled until no '+' or '/'.
 *            Such a handshake gets a freshly minted key + cert + document with that nonce, SAN =
 *            [`<full SNI>`, `<hex>.<full SNI>`]; rate-limited, never reused for another nonce.
 *  Well-known GET /.well-known/attestation on the TLS port → 200 application/json
 *            {"attestation_doc": "<standard base64 COSE_Sign1>"} with user_data = SPKI DER of the key served
 *            by default (no SNI nonce); `?nonce=<base64url>` (1–64 bytes) → uncached document with that nonce.
 *  Rotation  cert + document re-issued when now ≥ NSM-cert notAfter − 10 min (checked per handshake and on a
 *            timer); the key stays the same for the process.
 */
export {};

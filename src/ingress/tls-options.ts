// The secure-context options every TLS ingress certificate is served with (attested, fresh-nonce, ACME).
// No session tickets: a resumed handshake skips the SNI callback and stays on the default context, so the
// connection's certificate would no longer be the one the client was shown, and /.well-known/attestation binds
// the connection's certificate (tls-ingress.ts). Every connection gets a full handshake instead.
import { constants } from 'node:crypto';

export const INGRESS_TLS_OPTIONS = { minVersion: 'TLSv1.2', ecdhCurve: 'X25519:P-256:P-384', secureOptions: constants.SSL_OP_NO_TICKET } as const;

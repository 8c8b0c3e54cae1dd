// acme-client (with axios and its crypto helpers) is loaded when the first ACME certificate is configured, not at
// boot: an agent without [tls] acme never pays for it (measured: several MiB of heap in the bundled agent).
import type acmeModule from 'acme-client';

export type AcmeLibrary = typeof acmeModule;

let loading: Promise<AcmeLibrary> | undefined;

/** The acme-client module, imported once on first call. */
export function loadAcme(): Promise<AcmeLibrary> {
  loading ??= import('acme-client').then((m) => m.default);
  return loading;
}

import type { CliCommand } from './types.ts';

export interface CommandEntry {
  /** Words that select it: ['start'] or ['attestation', 'inspect']. */
  readonly path: readonly string[];
  readonly summary: string;
  /** Imported only when the command runs, so one command never pays for the others' start-up. */
  load(): Promise<{ command: CliCommand }>;
}

/** Every command of the CLI: one line per command file. */
export const COMMANDS: readonly CommandEntry[] = [
  { path: ['start'], summary: 'run the local stack: agent + bridge + simulated NSM (+ a demo app), print how to connect', load: () => import('./start.ts') },
  { path: ['fetch'], summary: 'send one HTTP request through the attested channel (curl for the enclave)', load: () => import('./fetch.ts') },
  { path: ['proxy'], summary: 'plain HTTP on 127.0.0.1 to an attested enclave (ws:// bridge or https://), for any language', load: () => import('./proxy.ts') },
  { path: ['attest'], summary: "verify a live enclave's attestation and compare its PCRs with enclave.toml [attestation]", load: () => import('./attest.ts') },
  { path: ['pcrs'], summary: 'print the PCRs the local simulator reports for the current config', load: () => import('./pcrs.ts') },
  { path: ['run'], summary: 'in-enclave entrypoint: listen, attest, supervise the app (run -- <app command>)', load: () => import('./run-command.ts') },
  { path: ['bridge'], summary: 'run the host-side WebSocket ⇄ agent stream bridge', load: () => import('./bridge.ts') },
  { path: ['logs'], summary: "run the host-side log sink: receive the agent's JSON-line log stream (vsock), write it to stdout or a file", load: () => import('./logs.ts') },
  { path: ['attestation', 'inspect'], summary: 'decode a Nitro attestation document and verify it (PCRs, root, time, nonce)', load: () => import('./attestation-inspect.ts') },
  { path: ['keys', 'seal'], summary: 'seal a fresh ev: keyring under an AWS KMS data key; print the public keys and a PCR-conditioned key policy', load: () => import('./keys-seal.ts') },
  { path: ['keys', 'rotate'], summary: 'add a new current ev: key pair to a KMS-sealed keyring, keeping the older pairs for decryption', load: () => import('./keys-rotate.ts') },
  { path: ['keys', 'public'], summary: "print the enclave's ev: public keys (P-256 and secp256k1)", load: () => import('./keys-public.ts') },
  { path: ['secrets', 'seal'], summary: 'encrypt a secret from standard input into an ev: value for [secrets] in enclave.toml', load: () => import('./secrets-seal.ts') },
  { path: ['encrypt'], summary: 'encrypt the values of a JSON document into ev: strings', load: () => import('./encrypt.ts') },
];

// Whether a state directory or a file holding secrets can be trusted, from its stat: a directory others can write
// lets them swap the key files inside it; a key file others can read leaks it, one others own or can write may be
// theirs. Each returns a reason (for the caller's own typed error) or null. Pure checks on stat values, so the
// owner is compared with the uid the caller passes (process.getuid(); undefined on Windows: not compared).

export interface StatLike {
  mode: number;
  uid: number;
  isDirectory(): boolean;
  isFile(): boolean;
}

const octal = (mode: number): string => `0${(mode & 0o777).toString(8)}`;

function ownerProblem(st: StatLike, uid: number | undefined): string | null {
  return uid !== undefined && st.uid !== uid ? `owned by uid ${st.uid}, expected the agent's uid ${uid}` : null;
}

/** A directory that holds secrets: a directory, not group- or world-writable, owned by `uid`. */
export function unsafeDirReason(st: StatLike, uid: number | undefined): string | null {
  if (!st.isDirectory()) return 'not a directory';
  if ((st.mode & 0o022) !== 0) return `group- or world-writable (mode ${octal(st.mode)}); expected 0700 or 0755 at most`;
  return ownerProblem(st, uid);
}

/** A file holding a private key: a regular file, no access for group or others, owned by `uid`. */
export function unsafeSecretFileReason(st: StatLike, uid: number | undefined): string | null {
  if (!st.isFile()) return 'not a regular file';
  if ((st.mode & 0o077) !== 0) return `readable or writable by group or others (mode ${octal(st.mode)}); expected 0600`;
  return ownerProblem(st, uid);
}

/** A public file whose integrity matters (a CA certificate): a regular file, not group- or world-writable, owned by `uid`. */
export function unsafePublicFileReason(st: StatLike, uid: number | undefined): string | null {
  if (!st.isFile()) return 'not a regular file';
  if ((st.mode & 0o022) !== 0) return `group- or world-writable (mode ${octal(st.mode)}); expected 0644 at most`;
  return ownerProblem(st, uid);
}

/** The uid files must belong to: this process's (undefined where the platform has none). */
export function currentUid(): number | undefined {
  return process.getuid?.();
}

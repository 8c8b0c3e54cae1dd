// The activity page's token: fixed (--ui-token, $ENCLAVE_AGENT_UI_TOKEN) or read from a file (--ui-token-file)
// that is looked at again (one stat) on every sign-in and API call, and by the server's sweep (a live tail makes
// no request), so rotating the file takes effect without a restart: a changed file is re-read, its token is the one
// asked for from then on, and `generation` moves on (the server ends every session signed in before). A file that
// cannot be read, or no longer holds a valid token, opens nothing until it does again (failing open would keep a
// token its operator meant to retire).
import { createHash } from 'node:crypto';
import { readFileSync, statSync, type Stats } from 'node:fs';
import { AgentError } from '../errors.ts';

export const MIN_TOKEN_CHARS = 16;

export type PageTokenErrorCode = 'ACTIVITY_TOKEN_FILE_UNREADABLE' | 'ACTIVITY_TOKEN_FILE_INVALID';

export class PageTokenError extends AgentError {
  declare readonly code: PageTokenErrorCode;
  constructor(code: PageTokenErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export interface TokenFileContent {
  token: string;
  /** Group or others may read the file (worth a warning). */
  othersCanRead: boolean;
}

/** The token file's text without its line end: one line of 16+ characters, or a PageTokenError saying what is wrong. */
export function readTokenFile(file: string): TokenFileContent {
  let text: string;
  let mode: number;
  try {
    text = readFileSync(file, 'utf8');
    mode = statSync(file).mode;
  } catch (err) {
    throw new PageTokenError('ACTIVITY_TOKEN_FILE_UNREADABLE', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, { cause: err });
  }
  const token = text.replace(/\r?\n$/, '');
  if (/[\r\n]/.test(token)) throw new PageTokenError('ACTIVITY_TOKEN_FILE_INVALID', `${file} holds more than one line; it must hold the token alone`);
  if (token.length < MIN_TOKEN_CHARS) throw new PageTokenError('ACTIVITY_TOKEN_FILE_INVALID', `${file}: the token needs at least ${MIN_TOKEN_CHARS} characters`);
  return { token, othersCanRead: (mode & 0o077) !== 0 };
}

export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export interface PageToken {
  /** SHA-256 of the token now in force; null: none (an unreadable or invalid file), so nothing signs in. */
  digest(): Buffer | null;
  /** Moves on each time the token changes: sessions signed in under an earlier one end. */
  generation(): number;
}

export function fixedToken(token: string): PageToken {
  const d = tokenDigest(token);
  return { digest: () => d, generation: () => 0 };
}

/** What identifies one version of the file: a rename over it changes ino, a rewrite mtime/ctime or size. */
function signature(s: Stats): string {
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
}

/**
 * The token of `file`, read now (a PageTokenError when it is unreadable or invalid) and again whenever its stat
 * changes. `onChange` hears of each change after the first read: the new token in force, or why there is none.
 */
export function watchedTokenFile(file: string, onChange: (problem: PageTokenError | null) => void = () => {}): PageToken {
  const statOf = (): string | null => {
    try {
      return signature(statSync(file));
    } catch {
      return null;
    }
  };
  let seen = statOf();
  let digest: Buffer | null = tokenDigest(readTokenFile(file).token);
  let generation = 0;
  const look = (): void => {
    const now = statOf();
    if (now === seen) return;
    seen = now;
    generation++;
    try {
      digest = tokenDigest(readTokenFile(file).token);
      onChange(null);
    } catch (err) {
      digest = null;
      onChange(err as PageTokenError);
    }
  };
  return {
    digest() {
      look();
      return digest;
    },
    generation() {
      look();
      return generation;
    },
  };
}

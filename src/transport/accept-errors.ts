// What a listener does with an accept error (EMFILE, ENFILE, ...): count it and hand it to the owner's
// onError (which logs it, rate-limited); without one, the first becomes a process warning. Never swallowed.
import type { ListenOptions } from './types.ts';

export class AcceptErrors {
  count = 0;
  readonly #onError: ListenOptions['onError'];
  readonly #where: string;

  constructor(opts: ListenOptions, where: string) {
    this.#onError = opts.onError;
    this.#where = where;
  }

  readonly report = (err: Error): void => {
    this.count++;
    if (this.#onError !== undefined) {
      try {
        this.#onError(err);
      } catch {
        // a throwing hook must not stop the listener
      }
    } else if (this.count === 1) {
      process.emitWarning(`listener ${this.#where}: accept failed (${(err as NodeJS.ErrnoException).code ?? err.message}); further errors are only counted`, 'ListenerAcceptError');
    }
  };
}

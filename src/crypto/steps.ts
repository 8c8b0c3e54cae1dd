// Work written as steps (an iterator whose next() does one unit) runs either sliced on a DecryptScheduler or,
// for callers that hold the event loop knowingly (CLI, tests, a worker thread), at once with drain().

/** Runs steps to completion synchronously; returns the iterator's return value. */
export function drain<T>(steps: Iterator<unknown, T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done === true) return r.value;
  }
}

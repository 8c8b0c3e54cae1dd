// "Did you mean …?" for a mistyped name (a flag, a config key, a command): the closest known name by edit
// distance, only when it is close enough to be a typo rather than a different word.

/** Edit distance: insert, delete, substitute, or swap two adjacent characters (the commonest typo); each 1. */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, j) => j)];
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    const prev = rows[i - 1]!;
    for (let j = 1; j <= b.length; j++) {
      let d = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2]![j - 2]! + 1);
      cur[j] = d;
    }
    rows.push(cur);
  }
  return rows[a.length]![b.length]!;
}

/** The known name closest to `typed` (case-insensitive), or undefined when none is within a typo's distance. */
export function closest(typed: string, known: Iterable<string>): string | undefined {
  const t = typed.toLowerCase();
  // Short names are one keystroke from many others: only a difference of case counts there.
  const limit = t.length < 4 ? 0 : Math.min(3, Math.floor(t.length / 3));
  const names = [...known];
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of names) {
    const d = editDistance(t, k.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  if (bestDistance <= limit) return best;
  // A unique name that starts with what was typed (`pub` for `public`).
  const prefixed = t.length >= 2 ? names.filter((k) => k.toLowerCase().startsWith(t)) : [];
  return prefixed.length === 1 ? prefixed[0] : undefined;
}

/** ` (did you mean "x"?)` or '' — to append to an error message. */
export function didYouMean(typed: string, known: Iterable<string>): string {
  const s = closest(typed, known);
  return s === undefined ? '' : ` (did you mean "${s}"?)`;
}

// Prometheus' own checker on an exposition: `promtool check metrics` (installed at /usr/bin/promtool) reads the
// text on stdin and says nothing, exit 0, when the output is clean.
import { spawnSync } from 'node:child_process';

/** What `promtool check metrics` says of `text` ('' when clean) and its exit status. */
export function promtoolCheck(text: string): { output: string; status: number | null } {
  const r = spawnSync('/usr/bin/promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { output: r.stdout + r.stderr, status: r.status };
}

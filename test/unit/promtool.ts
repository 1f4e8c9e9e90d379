// Prometheus' own checker (Debian's `prometheus` package ships promtool): `check metrics` lints scraped text
// (names, types, units, _total), `check rules` parses alert rules. Tests that need it are skipped where it
// is missing, unless CI is set: then they fail (.ci/run installs it).
import { spawnSync } from 'node:child_process';

export const PROMTOOL = ((): string | null => {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? 'promtool' : null;
})();
export const IN_CI = process.env.CI !== undefined && process.env.CI !== '' && process.env.CI !== 'false';
/** Skip tests that need promtool: only where it is missing and CI is not set. */
export const SKIP_PROMTOOL = PROMTOOL === null && !IN_CI;
if (SKIP_PROMTOOL) console.warn('promtool tests skipped: no promtool on PATH (apt-get install prometheus); with CI set they fail instead');

/** Runs `promtool <args>` with `input` on stdin: its exit status and what it printed. */
export function promtool(args: string[], input = ''): { status: number | null; output: string } {
  if (PROMTOOL === null) throw new Error('promtool is not installed (Debian: apt-get install prometheus); CI needs it for this test');
  const r = spawnSync(PROMTOOL, args, { input, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

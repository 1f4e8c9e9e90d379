// Builds dist/ and the CLI's bundle (npm run build:ts) so that tests can run the CLI (bin/dmremap-ublk.js)
// as a child process.
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  // test/run-all.sh (npm test) has just built everything: it says so, and the second build is skipped.
  if (process.env.DMREMAP_BUILT === '1') return;
  execFileSync('npm', ['run', '--silent', 'build:ts'], { stdio: 'inherit' });
}

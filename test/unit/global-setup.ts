// Builds dist/ and the CLI's bundle (npm run build:ts) so that tests can run the CLI (bin/dmremap-ublk.js)
// as a child process.
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync('npm', ['run', '--silent', 'build:ts'], { stdio: 'inherit' });
}

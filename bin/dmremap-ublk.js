#!/usr/bin/env node
// The CLI, from one bundled file (npm run build:bundle) loaded with V8's code cache (bin/bundle-loader.js):
// node starts it in a fraction of the time the hundreds of modules of dist/ (zod's among them) take to
// resolve, load and compile one by one. Where the bundle is missing or older than dist/cli/main.js (tsc
// ran alone since: it rewrites every file), dist/ runs. Only that file is compared (a stat of each of
// dist/'s files would cost what the bundle saves): after an incremental or --watch tsc, which rewrites only
// the files that changed, run `npm run build:bundle` (npm run build does both).
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startEarlyDaemon } from './early-daemon.js';

// A supervisor or foreground daemon never stops for SIGHUP (logs reopen, forwarded by its daemon), but the
// default action of SIGHUP is to terminate: until the CLI sets its own handler (a second or two of loading in
// a slow VM), one is ignored.
const argv2 = process.argv.slice(2);
if (argv2[0] === 'supervise' || ((argv2[0] === 'add' || argv2[0] === 'recover') && argv2.includes('--foreground'))) process.on('SIGHUP', () => {});

// The supervisor's daemon starts before the bundle loads (bin/early-daemon.js); run() hands it over.
const early = startEarlyDaemon(process.argv.slice(2));

const bundle = fileURLToPath(new URL('../dist/cli/main.bundle.cjs', import.meta.url));
const modules = new URL('../dist/cli/main.js', import.meta.url);
const mtime = (p) => {
  try {
    return fs.statSync(p).mtimeMs;
  } catch {
    return null;
  }
};
const b = mtime(bundle);
const m = mtime(modules);
let run;
if (b !== null && (m === null || b >= m)) {
  const { loadBundle } = await import('./bundle-loader.js');
  ({ run } = loadBundle(bundle).exports);
} else {
  ({ run } = await import(modules.href));
}
await run({ earlyDaemon: early });

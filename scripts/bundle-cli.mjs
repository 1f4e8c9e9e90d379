// npm run build:bundle: the CLI as one CommonJS file, dist/cli/main.bundle.cjs, and V8's code cache for it,
// main.bundle.cjs.cache (bin/bundle-loader.js loads both). Each is written to a temporary file and renamed.
// The cache is made after running a few commands that touch nothing (help texts), so that the functions
// every command runs (argument parsing, the schemas) are in it already compiled, not only the top level.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { BUILD_ID_PREFIX, loadBundle } from '../bin/bundle-loader.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(repo, 'dist', 'cli', 'main.bundle.cjs');
const id = `${new Date().toISOString()} ${randomBytes(8).toString('hex')}`;

await build({
  entryPoints: [path.join(repo, 'dist', 'cli', 'main.js')],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  outfile: `${out}.tmp`,
  logLevel: 'warning',
  // Every module's import.meta.url is the bundle's own URL, as it was in the ESM bundle: paths are resolved
  // from dist/cli/ (src/native-select.ts and the CLI's paths to bin/ and package.json rely on it).
  define: { 'import.meta.url': '__dmrImportMetaUrl' },
  banner: { js: `${BUILD_ID_PREFIX}${id}\nconst __dmrImportMetaUrl = require('node:url').pathToFileURL(__filename).href;` },
});
fs.renameSync(`${out}.tmp`, out);
fs.rmSync(path.join(repo, 'dist', 'cli', 'main.bundle.js'), { force: true }); // the ESM bundle of older builds

const { exports, script, id: loaded } = loadBundle(out);
if (loaded !== id) throw new Error(`bundle-cli: ${out} does not carry its build id`);
const sink = { write: () => true };
const ctx = { env: {}, stdout: sink, stderr: sink, stderrIsTTY: false, stdoutIsTTY: false, loadNative: () => Promise.reject(new Error('no addon while building')), exitsAfter: false };
for (const argv of [['help'], ['add', '--help'], ['status', '--help'], ['scan', '--help'], ['list', '--help']]) {
  const code = await exports.main(argv, ctx);
  if (code !== 0) throw new Error(`bundle-cli: \`${argv.join(' ')}\` ran by the new bundle exited ${code}`);
}
fs.writeFileSync(`${out}.cache.tmp`, Buffer.concat([Buffer.from(`${id}\n`, 'latin1'), script.createCachedData()]));
fs.renameSync(`${out}.cache.tmp`, `${out}.cache`);

// Loads the CLI's bundle (dist/cli/main.bundle.cjs, one CommonJS file made by scripts/bundle-cli.mjs) with
// V8's code cache beside it (main.bundle.cjs.cache): node then skips parsing and compiling most of the
// bundle's 0.9 MB at every start, the largest part of a command's start-up after node's own (in the TCG
// test VM about half a second per process, and `add` starts three: the CLI, the supervisor, the daemon).
//
// V8 checks a cache only against the source's length, not its content: a cache is used only when its first
// line is the build id on the bundle's first line, both written by the same build. A cache that is missing,
// from another build, or refused by V8 (another node) costs nothing but the compile it would have saved.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

export const BUILD_ID_PREFIX = '// dmremap-ublk build ';

/** The build id on the bundle's first line, or null. */
export function buildIdOf(source) {
  const nl = source.indexOf('\n');
  const first = nl < 0 ? source : source.slice(0, nl);
  return first.startsWith(BUILD_ID_PREFIX) ? first.slice(BUILD_ID_PREFIX.length).trim() : null;
}

/** The cache's data when its first line is `id`, else undefined. */
function cacheFor(cacheFile, id) {
  if (id === null) return undefined;
  let c;
  try {
    c = fs.readFileSync(cacheFile);
  } catch {
    return undefined;
  }
  const nl = c.indexOf(10);
  return nl > 0 && c.subarray(0, nl).toString('latin1') === id ? c.subarray(nl + 1) : undefined;
}

/**
 * Runs the bundle's module code and returns { exports, script, id, cache: 'used' | 'rejected' | 'none' }.
 * The wrapper keeps the bundle's line numbers (it adds nothing before its first line but the function head).
 */
export function loadBundle(file) {
  const source = fs.readFileSync(file, 'utf8');
  const id = buildIdOf(source);
  const cachedData = cacheFor(`${file}.cache`, id);
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, { filename: file, cachedData });
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(file), module, file, path.dirname(file));
  const cache = cachedData === undefined ? 'none' : script.cachedDataRejected ? 'rejected' : 'used';
  return { exports: module.exports, script, id, cache };
}

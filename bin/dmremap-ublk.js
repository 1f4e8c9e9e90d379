#!/usr/bin/env node
// The CLI, from one bundled file (npm run build:bundle): node starts it in a fraction of the time the
// hundreds of modules of dist/ (zod's locales among them) take to resolve and load one by one. Where the
// bundle is missing or older than dist/ (compiled by tsc alone since), dist/ runs: never stale code.
import fs from 'node:fs';

const bundle = new URL('../dist/cli/main.bundle.js', import.meta.url);
const modules = new URL('../dist/cli/main.js', import.meta.url);
const mtime = (u) => {
  try {
    return fs.statSync(u).mtimeMs;
  } catch {
    return null;
  }
};
const b = mtime(bundle);
const m = mtime(modules);
const { run } = await import(b !== null && (m === null || b >= m) ? bundle.href : modules.href);
await run();

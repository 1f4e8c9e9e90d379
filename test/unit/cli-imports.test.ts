// A refused `add` answers without waiting for modules it does not run: the CLI's dispatcher and the detached
// `add` (dist/cli/add.js, which refuses in its precheck) load neither the daemon (device/daemon.js, its engine
// and control server) nor the logger (pino) through their static imports. Those load when a daemon runs in
// this process (add --foreground, recover --foreground, supervise). Read from the built dist/, the files
// that run: type-only imports are gone there.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { REPO } from './helpers.js';

const DIST = path.join(REPO, 'dist');

/** The module specifiers of `file`'s static import and export-from declarations (not import()). */
function staticSpecifiers(file: string): string[] {
  const src = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false, ts.ScriptKind.JS);
  const out: string[] = [];
  for (const st of src.statements) {
    if ((ts.isImportDeclaration(st) || ts.isExportDeclaration(st)) && st.moduleSpecifier !== undefined && ts.isStringLiteral(st.moduleSpecifier)) {
      out.push(st.moduleSpecifier.text);
    }
  }
  return out;
}

/** Every module `entry` loads through static imports: files of dist/ by path, packages by name. */
function staticGraph(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  for (let f = todo.pop(); f !== undefined; f = todo.pop()) {
    if (seen.has(f)) continue;
    seen.add(f);
    if (!f.startsWith('/')) continue;
    for (const spec of staticSpecifiers(f)) {
      if (spec.startsWith('.')) todo.push(path.resolve(path.dirname(f), spec));
      else if (!spec.startsWith('node:')) seen.add(spec.split('/')[0] as string);
    }
  }
  return seen;
}

const rel = (s: Set<string>): string[] => [...s].map((f) => (f.startsWith('/') ? path.relative(DIST, f) : f));

describe('the modules a refused add loads', () => {
  it('dist/cli/add.js reaches the precheck, but neither the daemon nor pino', () => {
    const g = rel(staticGraph(path.join(DIST, 'cli', 'add.js')));
    // The walk follows imports: what the precheck runs is there.
    expect(g).toEqual(expect.arrayContaining(['device/precheck.js', 'device/validate.js', 'device/signatures.js', 'zod']));
    expect(g.filter((m) => m === 'device/daemon.js' || m === 'log.js' || m === 'pino')).toEqual([]);
  });

  it('the dispatcher (dist/cli/main.js) reaches neither', () => {
    const g = rel(staticGraph(path.join(DIST, 'cli', 'main.js')));
    expect(g).toContain('cli/schemas.js');
    expect(g.filter((m) => m === 'device/daemon.js' || m === 'log.js' || m === 'pino' || m === 'cli/add.js')).toEqual([]);
  });
});

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

/** The relative specifiers of `file`'s import('...') calls with a string literal. */
function dynamicSpecifiers(file: string): string[] {
  const src = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false, ts.ScriptKind.JS);
  const out: string[] = [];
  const visit = (n: ts.Node): void => {
    if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [arg] = n.arguments;
      if (arg !== undefined && ts.isStringLiteral(arg)) out.push(arg.text);
    }
    ts.forEachChild(n, visit);
  };
  visit(src);
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

describe('the warm standby (cli/supervise.js runStandby)', () => {
  it('has loaded every module `recover --foreground` loads, the ones add.js imports only when a daemon runs included', () => {
    const supervise = path.join(DIST, 'cli', 'supervise.js');
    // What runStandby imports while it waits (its import() calls), and everything those load statically.
    const warm = new Set<string>();
    for (const spec of dynamicSpecifiers(supervise)) for (const m of staticGraph(path.resolve(path.dirname(supervise), spec))) warm.add(m);
    // What the successor loads once told: recover.js, and add.js's modules loaded on demand (the daemon, the logger).
    const add = path.join(DIST, 'cli', 'add.js');
    const needed = new Set(staticGraph(path.join(DIST, 'cli', 'recover.js')));
    for (const spec of dynamicSpecifiers(add)) for (const m of staticGraph(path.resolve(path.dirname(add), spec))) needed.add(m);
    expect(rel(needed)).toEqual(expect.arrayContaining(['device/daemon.js', 'log.js', 'pino']));
    expect(rel(new Set([...needed].filter((m) => !warm.has(m))))).toEqual([]);
  });
});

describe('zod in the CLI bundle', () => {
  // `import { z } from 'zod'` takes zod's whole namespace object, its ~50 locales among it (757 KiB of the
  // bundle against 170 KiB); `import * as z` lets the bundler keep only what is used. Each CLI command parses
  // the bundle first: in the TCG VM that difference was 0.4-0.7 s per command.
  it('no module takes zod through its named `z` export', () => {
    const offenders: string[] = [];
    const walk = (dir: string): void => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ts') && /import\s+(type\s+)?\{\s*z\s*\}\s+from\s+'zod'/.test(fs.readFileSync(p, 'utf8'))) offenders.push(path.relative(REPO, p));
      }
    };
    walk(path.join(REPO, 'src'));
    expect(offenders).toEqual([]);
  });

  it('the bundle holds no zod locale but English', () => {
    const bundle = fs.readFileSync(path.join(DIST, 'cli', 'main.bundle.cjs'), 'utf8');
    expect(bundle).not.toMatch(/node_modules\/zod\/v4\/locales\/(?!en\.js|index\.js)[a-zA-Z-]+\.js/);
  });
});

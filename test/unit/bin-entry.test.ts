// bin/dmremap-ublk.js runs the bundle (dist/cli/main.bundle.cjs, through bin/bundle-loader.js) unless it is
// missing or older than dist/ (tsc ran alone since): then dist/cli/main.js, never stale code. Checked on a
// copy of bin/ beside a dist/ whose two entries say which one ran. The loader uses a code cache only when it
// carries the bundle's build id: checked on the real bundle.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { REPO } from './helpers.js';

let root: string;
const entry = (file: string, said: string): void => {
  fs.writeFileSync(file, `export async function run() { process.stdout.write(${JSON.stringify(said)}); }\n`);
};
const at = (file: string, secondsAgo: number): void => {
  const t = new Date(Date.now() - secondsAgo * 1000);
  fs.utimesSync(file, t, t);
};
const ran = (): string => {
  const r = spawnSync(process.execPath, [path.join(root, 'bin', 'dmremap-ublk.js')], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
};

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-bin-'));
  fs.mkdirSync(path.join(root, 'bin'));
  fs.mkdirSync(path.join(root, 'dist', 'cli'), { recursive: true });
  for (const f of ['dmremap-ublk.js', 'bundle-loader.js', 'early-daemon.js', 'spawn-env.js']) fs.copyFileSync(path.join(REPO, 'bin', f), path.join(root, 'bin', f));
  entry(path.join(root, 'dist', 'cli', 'main.js'), 'modules');
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe('bin/dmremap-ublk.js', () => {
  const bundle = (): string => path.join(root, 'dist', 'cli', 'main.bundle.cjs');
  const modules = (): string => path.join(root, 'dist', 'cli', 'main.js');

  const cjs = (file: string, said: string): void => {
    fs.writeFileSync(file, `// dmremap-ublk build test-1\nexports.run = async function run() { process.stdout.write(${JSON.stringify(said)}); };\n`);
  };

  it('runs the bundle when it is as new as dist/', () => {
    cjs(bundle(), 'bundle');
    at(modules(), 10);
    expect(ran()).toBe('bundle');
  });

  it('runs dist/ when the bundle is older (tsc ran alone since) or missing', () => {
    cjs(bundle(), 'bundle');
    at(bundle(), 10);
    expect(ran()).toBe('modules');
    fs.rmSync(bundle());
    expect(ran()).toBe('modules');
  });
});

describe('bin/bundle-loader.js', () => {
  const real = path.join(REPO, 'dist', 'cli', 'main.bundle.cjs');
  const load = async (file: string): Promise<{ cache: string; id: string | null; exports: Record<string, unknown> }> => {
    const { loadBundle } = (await import(path.join(REPO, 'bin', 'bundle-loader.js'))) as { loadBundle: (f: string) => { cache: string; id: string | null; exports: Record<string, unknown> } };
    return loadBundle(file);
  };

  it('the build leaves a bundle whose cache V8 takes', async () => {
    const r = await load(real);
    expect(r.id).toMatch(/\S/);
    expect(r.cache).toBe('used');
    expect(typeof r.exports.run).toBe('function');
  });

  it('a cache of another build is not used, even when V8 would take it (it checks only the length)', async () => {
    const dir = path.join(root, 'dist', 'cli');
    const copy = path.join(dir, 'main.bundle.cjs');
    const source = fs.readFileSync(real, 'utf8');
    const cache = fs.readFileSync(`${real}.cache`);
    // The same bundle under another id of the same length: V8 alone would accept this cache.
    const id = source.slice(0, source.indexOf('\n')).split(' ').pop() as string;
    const other = id.replace(/[0-9a-f]$/, (c) => (c === '0' ? '1' : '0'));
    fs.writeFileSync(copy, source.replace(id, other));
    fs.writeFileSync(`${copy}.cache`, cache);
    expect((await load(copy)).cache).toBe('none');
    // With its own id again, the same cache is used.
    fs.writeFileSync(copy, source);
    expect((await load(copy)).cache).toBe('used');
  });
});

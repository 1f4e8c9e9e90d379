// bin/dmremap-ublk.js runs the bundle (dist/cli/main.bundle.js) unless it is missing or older than dist/
// (tsc ran alone since): then dist/cli/main.js, never stale code. Checked on a copy of bin/ beside a dist/
// whose two entries say which one ran.
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
  fs.copyFileSync(path.join(REPO, 'bin', 'dmremap-ublk.js'), path.join(root, 'bin', 'dmremap-ublk.js'));
  entry(path.join(root, 'dist', 'cli', 'main.js'), 'modules');
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

describe('bin/dmremap-ublk.js', () => {
  const bundle = (): string => path.join(root, 'dist', 'cli', 'main.bundle.js');
  const modules = (): string => path.join(root, 'dist', 'cli', 'main.js');

  it('runs the bundle when it is as new as dist/', () => {
    entry(bundle(), 'bundle');
    at(modules(), 10);
    expect(ran()).toBe('bundle');
  });

  it('runs dist/ when the bundle is older (tsc ran alone since) or missing', () => {
    entry(bundle(), 'bundle');
    at(bundle(), 10);
    expect(ran()).toBe('modules');
    fs.rmSync(bundle());
    expect(ran()).toBe('modules');
  });
});

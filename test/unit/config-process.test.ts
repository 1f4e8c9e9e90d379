// The config commands and add's policy through the built CLI (node bin/dmremap-ublk.js, fake addon), as a
// user runs them: the detached daemon is started with the policy add resolved, so a config file changed
// (or broken) afterwards does not reach it.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lockPathOf } from '../../src/config/lock.js';
import { request } from '../../src/control/client.js';
import { readEntries } from '../../src/control/registry.js';
import { DEFAULT_HEALTH_SETTINGS } from '../../src/health/settings.js';
import { DEFAULT_SCAN_SETTINGS } from '../../src/scan/settings.js';
import { BIN, makeWorld, pidAlive, type World } from './helpers.js';

/** The outage settings' defaults (DEFAULT_POLICY's), where a test spells a whole policy out. */
const OUTAGE_DEFAULTS = { outageRegions: 4, writeOutageRegions: 8, outageWindowMs: 2000, outageHoldMs: 30000 } as const;

let w: World;
let cfgFile: string;
beforeEach(() => {
  w = makeWorld();
  cfgFile = path.join(w.root, 'etc', 'dmremap-ublk', 'config.json');
});
afterEach(() => {
  for (const e of readEntries(w.runDir).live) {
    try {
      process.kill(e.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  w.cleanup();
});

const cliEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  VITEST: 'true',
  DMREMAP_RUN_DIR: w.runDir,
  DMREMAP_CONFIG: cfgFile,
  DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir }),
});

function cli(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { env: cliEnv(), encoding: 'utf8', timeout: 30_000 });
}

/** The daemon's command line, from /proc. */
function cmdline(pid: number): string[] {
  return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
}

/** cli() without blocking this process (several at once). */
function cliAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], { env: cliEnv() });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const flagValue = (args: string[], flag: string): string | undefined => args[args.indexOf(flag) + 1];

describe('config and add (built CLI, fake addon)', () => {
  it('config set / get through the binary', () => {
    const set = cli(['config', 'set', 'retry_backoff_ms', '250', '--device', 'vol']);
    expect(set.stderr).toBe('');
    expect(set.status).toBe(0);
    expect(set.stdout).toBe('retry_backoff_ms = 250 for device vol (was 10)\n');
    expect(JSON.parse(fs.readFileSync(cfgFile, 'utf8'))).toEqual({ devices: { vol: { retryBackoffMs: 250 } } });
    const get = cli(['config', 'get', '--device', 'vol', '--json']);
    expect(JSON.parse(get.stdout)).toEqual({ autoRemap: true, errorThreshold: 1, readRetries: 3, retryBackoffMs: 250, ...OUTAGE_DEFAULTS, ...DEFAULT_SCAN_SETTINGS, ...DEFAULT_HEALTH_SETTINGS, alertCommand: null });
    const bad = cli(['config', 'set', 'read_retries', '99']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe('dmremap-ublk: read_retries must be from 0 to 16, got 99\n');
  });

  it('the detached daemon runs with the policy add resolved, whatever the file says later', async () => {
    fs.mkdirSync(path.dirname(cfgFile), { recursive: true });
    fs.writeFileSync(cfgFile, JSON.stringify({ readRetries: 7, devices: { vol: { autoRemap: false } } }));
    const add = cli(['add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--error-threshold', '9', '--outage-hold-ms', '2500', '--json']);
    expect(add.stderr).toBe('');
    expect(add.status).toBe(0);
    const { pid } = JSON.parse(add.stdout) as { pid: number };
    expect(pidAlive(pid)).toBe(true);
    const args = cmdline(pid);
    expect(args).toContain('--foreground');
    expect(flagValue(args, '--auto-remap')).toBe('off');
    expect(flagValue(args, '--error-threshold')).toBe('9');
    expect(flagValue(args, '--read-retries')).toBe('7');
    expect(flagValue(args, '--retry-backoff-ms')).toBe('10');
    expect(flagValue(args, '--outage-hold-ms')).toBe('2500');
    expect(flagValue(args, '--outage-regions')).toBe('4');
    // ...and the daemon reports that policy as the one it applies.
    const [entry] = readEntries(w.runDir).live;
    const stats = await request(entry?.socket ?? '', 'stats', {});
    expect(stats.autoRemap).toBe(false);
    expect(stats.policy).toEqual({ errorThreshold: 9, readRetries: 7, retryBackoffMs: 10 });

    // A broken file now stops new adds, not the running device.
    fs.writeFileSync(cfgFile, '{"readRetries": 17}');
    const again = cli(['add', '--main', w.file('m2.img', 8 << 20), '--spare', w.file('s2.img', 4 << 20)]);
    expect(again.status).toBe(1);
    expect(again.stderr).toBe(`dmremap-ublk: ${cfgFile}: readRetries: must be at most 16\n`);
    expect(readEntries(w.runDir).live.map((e) => e.pid)).toEqual([pid]);

    const del = cli(['del', 'vol']);
    expect(del.status).toBe(0);
    expect(pidAlive(pid)).toBe(false);
  });

  it('add with a bad config file fails with one line before anything is created', () => {
    fs.mkdirSync(path.dirname(cfgFile), { recursive: true });
    fs.writeFileSync(cfgFile, '{ not json');
    const r = cli(['add', '--main', w.main, '--spare', w.spare, '--json']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^dmremap-ublk: ${cfgFile}: not valid JSON \\([^\\n]+\\)\\n$`));
    expect(JSON.parse(r.stdout)).toMatchObject({ error: { code: 'E_CONFIG' } });
    expect(w.runDirEntries()).toEqual([]);
    expect(w.devNodes()).toEqual([]);
  });

  it('concurrent config set runs lose no update (the lock serialises them)', async () => {
    const runs = Array.from({ length: 8 }, (_, i) => cliAsync(['config', 'set', 'read_retries', String(i + 1), '--device', `vol${i}`]));
    const out = await Promise.all(runs);
    for (const r of out) expect(r).toMatchObject({ status: 0, stderr: '' });
    const devices = (JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as { devices: Record<string, { readRetries: number }> }).devices;
    expect(Object.keys(devices).sort()).toEqual(Array.from({ length: 8 }, (_, i) => `vol${i}`));
    for (let i = 0; i < 8; i++) expect(devices[`vol${i}`]?.readRetries).toBe(i + 1);
    expect(fs.existsSync(lockPathOf(cfgFile))).toBe(false);
  }, 60_000);

  it('a lock left by a dead process is taken over; a live holder is waited for', async () => {
    fs.mkdirSync(path.dirname(cfgFile), { recursive: true });
    const lock = lockPathOf(cfgFile);
    // A dead owner (a pid that is not running).
    const dead = spawnSync(process.execPath, ['-e', '0']).pid as number;
    fs.writeFileSync(lock, JSON.stringify({ pid: dead, pidStart: null }));
    expect(cli(['config', 'set', 'error_threshold', '3'])).toMatchObject({ status: 0, stderr: '' });
    expect(fs.existsSync(lock)).toBe(false);
    // A live owner (this test): the command waits until the lock is gone, then does its change.
    fs.writeFileSync(lock, JSON.stringify({ pid: process.pid, pidStart: null }));
    const waiting = cliAsync(['config', 'set', 'error_threshold', '4']);
    await new Promise((r) => setTimeout(r, 700));
    expect(JSON.parse(fs.readFileSync(cfgFile, 'utf8'))).toEqual({ errorThreshold: 3 });
    fs.rmSync(lock);
    expect(await waiting).toMatchObject({ status: 0, stderr: '' });
    expect(JSON.parse(fs.readFileSync(cfgFile, 'utf8'))).toEqual({ errorThreshold: 4 });
  }, 60_000);
});


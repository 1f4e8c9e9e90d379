// The built CLI as a user runs it (node bin/dmremap-ublk.js), with the fake addon: add detaches and
// prints the path, list/status/del find the device by path, id or name, del waits until everything is
// gone, and a foreground daemon stops cleanly on SIGTERM and SIGINT.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { markQuiesced, readEntries } from '../../src/control/registry.js';
import { deviceLogFile } from '../../src/paths.js';
import { cli, cliSpawn, makeWorld, pidAlive, waitFor, type World } from './helpers.js';

let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  // Never leave a daemon (or its supervisor, killed first so that it does not recover it) behind, even when
  // a test failed half-way.
  for (const e of readEntries(w.runDir).live) {
    try {
      const parent = parentPid(e.pid);
      if (fs.readFileSync(`/proc/${parent}/cmdline`, 'utf8').split('\0').includes('supervise')) process.kill(parent, 'SIGKILL');
      process.kill(e.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  w.cleanup();
});

function parentPid(pid: number): number {
  const m = /^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]);
}

describe('dmremap-ublk (built CLI, fake addon)', () => {
  it('add detaches, prints the path; list, status, del work by path, id and name', async () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--queues', '2']);
    expect(add.stderr).toBe('');
    expect(add.status).toBe(0);
    const blockPath = path.join(w.devDir, 'ublkb0');
    expect(add.stdout).toBe(`${blockPath}\n`);
    const [entry] = readEntries(w.runDir).live;
    expect(entry).toBeDefined();
    expect(entry?.pid).not.toBe(process.pid);
    expect(pidAlive(entry?.pid ?? 0)).toBe(true);
    expect(entry?.logFile).toBe(path.join(w.logDir, 'vol.log')); // the device's own log file, by its name

    const list = cli(w, ['list', '--json']);
    expect(list.status).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({ devId: 0, name: 'vol', blockPath, main: w.main, spare: w.spare, state: 'running', supervisorPid: parentPid(entry?.pid ?? 0) }),
    ]);
    const human = cli(w, ['list']);
    expect(human.stdout).toMatch(/^DEVICE\s+NAME\s+LINK\s+MAIN\s+SPARE\s+PID\s+STATE\n/);
    // The daemon linked the stable name (/dev/dmremap/vol in production) once the device was live.
    const link = path.join(w.nameDir, 'vol');
    expect(fs.readlinkSync(link)).toBe(blockPath);
    expect(human.stdout).toContain(`${blockPath}  vol   ${link}`);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ stableName: link })]);

    for (const target of [blockPath, '0', 'ublkb0', 'vol', link]) {
      const st = cli(w, ['status', target, '--json']);
      expect(st.status, st.stderr).toBe(0);
      expect(JSON.parse(st.stdout)).toMatchObject({ devId: 0, name: 'vol', blockPath, queues: 2, state: 'live' });
    }
    const hs = cli(w, ['status', 'vol']);
    const [line, title] = hs.stdout.split('\n');
    expect(line).toMatch(/^0 16384 remap v2\.0 0\/\d+ 0\/\d+ 0\/\d+ health=healthy errors=W0:R0 auto_remaps=0 manual_remaps=0 scan=0%$/);
    expect(title).toMatch(new RegExp(`^${blockPath} \\(vol\\): live, device id 0`));
    // The detached daemon serves the remap messages.
    const rm = cli(w, ['remap', 'vol', '3']);
    expect(rm.stderr).toBe('');
    expect(rm.stdout).toBe('remapped sector 3 (block 3) to spare slot 0\n');
    const msg = cli(w, ['message', 'vol', 'table']);
    expect(msg.stdout).toMatch(/^1 remapped block\(s\)\nblock 3 sector 3 slot 0 mapped manual /);

    const supervisor = parentPid(entry?.pid ?? 0);
    const del = cli(w, ['del', 'vol']);
    expect(del.stderr).toBe('');
    expect(del.status).toBe(0);
    expect(del.stdout).toBe(`removed ${blockPath}\n`);
    // del returns only once the daemon has exited and the device is gone; its supervisor exits after it.
    expect(pidAlive(entry?.pid ?? 0)).toBe(false);
    await waitFor(() => !pidAlive(supervisor), 10_000);
    expect(w.devNodes()).toEqual([]);
    expect(w.runDirEntries()).toEqual([]);
    // The device is deleted: its stable name is gone with it.
    expect(fs.existsSync(link)).toBe(false);
    expect(cli(w, ['list', '--json']).stdout).toBe('[]\n');
  }, 60_000); // about 20 CLI processes: 20 s was too little on a loaded 2-core host

  it('add --json and del --json', () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--json']);
    expect(add.status).toBe(0);
    const out = JSON.parse(add.stdout) as { devId: number; blockPath: string; name: null; pid: number };
    expect(out).toMatchObject({ devId: 0, blockPath: path.join(w.devDir, 'ublkb0'), name: null });
    const del = cli(w, ['del', out.blockPath, '--json']);
    expect(JSON.parse(del.stdout)).toEqual({ devId: 0, blockPath: out.blockPath, name: null, removed: true });
    expect(pidAlive(out.pid)).toBe(false);
  });

  it('a daemon failing after validation reports its error through the parent, exit 1, nothing left', () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare], { failStart: 'ENOMEM' });
    expect(add.status).toBe(1);
    expect(add.stdout).toBe('');
    expect(add.stderr).toBe('dmremap-ublk: cannot start the ublk device: START_DEV: not enough memory (ENOMEM)\n');
    expect(w.devNodes()).toEqual([]);
    expect(w.runDirEntries()).toEqual([]);
    // The detached daemon's log (no name: called after main's file name), saying why.
    expect(fs.readFileSync(deviceLogFile({ DMREMAP_LOG_DIR: w.logDir }, null, w.main), 'utf8')).toContain('E_KERNEL');
  });

  it('bad input: one line, exit code, and --json error object', () => {
    const r = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--depth', 'deep', '--json']);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('dmremap-ublk: --depth must be a whole number, got "deep"\n');
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'E_USAGE', message: '--depth must be a whole number, got "deep"' } });
    expect(w.runDirEntries()).toEqual([]);
  });

  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`add --foreground prints the path and stops cleanly on ${sig}`, async () => {
      const child = cliSpawn(w, ['add', '--main', w.main, '--spare', w.spare, '--foreground']);
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      await waitFor(() => out.includes('\n'), 10_000);
      expect(out).toBe(`${path.join(w.devDir, 'ublkb0')}\n`);
      expect(readEntries(w.runDir).live.map((e) => e.pid)).toEqual([child.pid]);
      child.kill(sig);
      expect(await exited).toBe(0);
      expect(w.devNodes()).toEqual([]);
      expect(w.runDirEntries()).toEqual([]);
    });
  }

  // A fake kernel that offers UBLK_F_USER_RECOVERY | _REISSUE (0x18): the device outlives its daemon.
  const RECOVERY = { features: '0xda' };
  it('a device whose daemon and supervisor were killed is quiesced (list, status exit 0 with the reason); del deletes it', async () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--name', 'crashy', '--json'], RECOVERY);
    const { pid } = JSON.parse(add.stdout) as { pid: number };
    // add runs the daemon under a supervisor (its parent): kill that first, or it would recover the device.
    const supervisor = parentPid(pid);
    expect(fs.readFileSync(`/proc/${supervisor}/cmdline`, 'utf8').split('\0')).toContain('supervise');
    process.kill(supervisor, 'SIGKILL');
    process.kill(pid, 'SIGKILL');
    await waitFor(() => !pidAlive(pid) && !pidAlive(supervisor));
    expect(w.devNodes()).toEqual(['ublkb0', 'ublkc0']); // the kernel keeps a dead server's device
    const blockPath = path.join(w.devDir, 'ublkb0');
    const noReason = `daemon pid ${pid} is gone (no supervisor)`;
    expect(JSON.parse(cli(w, ['list', '--json'], RECOVERY).stdout)).toEqual([expect.objectContaining({ name: 'crashy', pid, state: 'quiesced', reason: noReason })]);
    expect(cli(w, ['list'], RECOVERY).stdout).toContain(`quiesced: ${noReason}`);
    // What a supervisor that gave up records.
    const why = 'gave up after 5 crashes in 60 s (last: signal SIGKILL)';
    expect(markQuiesced(w.runDir, 0, why, new Date('2026-01-02T03:04:05.000Z'))).toBe(true);
    const st = cli(w, ['status', 'crashy'], RECOVERY);
    expect(st.stderr).toBe('');
    expect(st.status).toBe(0);
    expect(st.stdout).toBe(
      `${blockPath} (crashy): quiesced, device id 0, no daemon (last pid ${pid}): I/O waits\n` +
        `  reason ${why} since 2026-01-02T03:04:05.000Z\n` +
        '  action run "dmremap-ublk recover 0" to serve it again, or "dmremap-ublk del 0" to remove it\n',
    );
    const sj = cli(w, ['status', '0', '--json'], RECOVERY);
    expect(sj.status).toBe(0);
    expect(JSON.parse(sj.stdout)).toMatchObject({ devId: 0, state: 'quiesced', pid: null, lastPid: pid, reason: why, since: '2026-01-02T03:04:05.000Z' });
    expect(JSON.parse(cli(w, ['list', '--json'], RECOVERY).stdout)).toEqual([expect.objectContaining({ state: 'quiesced', reason: why })]);
    const del = cli(w, ['del', 'crashy'], RECOVERY);
    expect(del.stderr).toBe('');
    expect(del.status).toBe(0);
    expect(w.devNodes()).toEqual([]);
    expect(w.runDirEntries()).toEqual([]);
  });

  it('--help and --version', () => {
    const h = cli(w, ['add', '--help']);
    expect(h.status).toBe(0);
    expect(h.stdout).toMatch(/^Usage: dmremap-ublk add --main <path> --spare <path>/);
    const v = cli(w, ['--version']);
    const pkg = JSON.parse(fs.readFileSync(path.resolve(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string };
    expect(v.stdout).toBe(`${pkg.version}\n`);
  });
});

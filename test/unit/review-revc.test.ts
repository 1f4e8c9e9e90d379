// Hostile review (revC) of the table-UUID / install-systemd / NOTIFY_SOCKET / spawn-env change
// (1569585 07333b7 5d2d7a0 e4fb624 0aad090 217d217). Each test states what the change should do and FAILS on
// main as merged: they show findings, they are not fixes.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntries } from '../../src/control/registry.js';
import { installUnits, unedited, type Systemctl } from '../../src/service/systemd.js';
import { supervisorOf } from '../../src/supervisor/find.js';
import { cli, makeWorld, pidAlive, REPO, waitFor, type World } from './helpers.js';

const FAKE = { features: '0xd8' }; // user recovery: a killed daemon leaves its device quiesced
let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  for (const e of readEntries(w.runDir).live) {
    try {
      const sup = supervisorOf(e.pid);
      if (sup !== null) process.kill(sup, 'SIGKILL');
      process.kill(e.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  w.cleanup();
});

const run = (args: string[]) => cli(w, args, FAKE);
interface Line {
  name: string | null;
  result: string;
  error: { code: string; message: string } | null;
}
const lines = (args: string[]): Line[] => JSON.parse(run([...args, '--json']).stdout) as Line[];
const record = (name: string): Record<string, unknown> => JSON.parse(fs.readFileSync(path.join(w.devicesDir, `${name}.json`), 'utf8')) as Record<string, unknown>;
const pairIdOf = (dev: string): string => (JSON.parse(run(['status', dev, '--json']).stdout) as { remap: { pairId: string } }).remap.pairId;

/**
 * Leaves `a` running on a second table of the same main (UUID `second`), with the record naming it, and returns
 * a byte copy of the spare holding the first table (UUID `first`): the "old copy of the spare" of the change.
 */
function twoTables(): { first: string; second: string; clone: Buffer } {
  expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist']).status).toBe(0);
  const first = pairIdOf('a');
  expect(lines(['down', 'a'])[0]?.result).toBe('down');
  const clone = fs.readFileSync(w.spare);
  fs.writeFileSync(w.spare, Buffer.alloc(clone.length));
  expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a']).status).toBe(0);
  const second = pairIdOf('a');
  expect(second).not.toBe(first);
  expect(run(['enable', 'a']).status).toBe(0);
  expect(record('a').tableUuid).toBe(second);
  return { first, second, clone };
}

describe('revC: the record\'s table UUID', () => {
  // MEDIUM. src/service/define.ts recordFromEntry: `...withTableUuid(e.spare.path, r.spareOffset)` reads whatever
  // disk is at the entry's spare *path* now, with a plain read, instead of the table the running daemon serves
  // (it knows it: status --json remap.pairId). A spare path that now names another disk holding another table of
  // the same main (an old copy) makes `enable` record that copy's UUID: `up` will later accept the old copy and
  // refuse the real spare.
  it('enable records the UUID of the table the running daemon serves, not whatever is at the spare path now', () => {
    const { first, second, clone } = twoTables();
    // The live spare is still open in the daemon; its path now names an old copy (another disk took the name).
    fs.renameSync(w.spare, `${w.spare}.live`);
    fs.writeFileSync(w.spare, clone);
    expect(pairIdOf('a')).toBe(second);
    expect(run(['enable', 'a']).status).toBe(0);
    // Fails on main: the record now names `first`, the old copy's table.
    expect({ recorded: record('a').tableUuid, serving: second, oldCopy: first }).toEqual({ recorded: second, serving: second, oldCopy: first });
  }, 90_000);

  // LOW/MEDIUM. Same place, and src/cli/enable.ts warnUnstable: when the plain read finds no table (the path names
  // a blank disk, or the read fails), `enable` of an already-recorded device rewrites the record WITHOUT the UUID
  // it had (a warning only): the protection is silently dropped for the next boot.
  it('enable again does not drop a recorded table UUID when the spare cannot be read through its path', () => {
    const { second, clone } = twoTables();
    fs.renameSync(w.spare, `${w.spare}.live`);
    fs.writeFileSync(w.spare, Buffer.alloc(clone.length));
    const en = run(['enable', 'a']);
    expect(en.status).toBe(0);
    expect(en.stderr).toContain('recorded without it');
    // Fails on main: tableUuid is gone from the record.
    expect(record('a').tableUuid).toBe(second);
  }, 90_000);

  // LOW (the left-out case, src/cli/up.ts upOne / startUnit(quiesced) / upForeground: a quiesced device goes to
  // runRecover with no disksProblem, and Daemon.recover's recoveredConfig has no tableUuid, so neither side checks).
  // checkSameDevices compares the disk's identity only: the spare's contents replaced by an old copy while the
  // device waits quiesced are served (the old copy's remap table) to the kernel device that still holds I/O.
  it('up refuses to recover a quiesced device whose spare now holds another table of the same main', async () => {
    const { first, second, clone } = twoTables();
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    expect(readEntries(w.runDir).quiesced.map((q) => q.name)).toEqual(['a']);
    fs.writeFileSync(w.spare, clone); // same file (inode): the same identity, the old table
    const up = lines(['up', 'a']);
    const serving = up[0]?.result === 'recovered' ? pairIdOf('a') : null;
    // Fails on main: result 'recovered', serving the old copy's table `first` although the record names `second`.
    expect({ result: up[0]?.result, code: up[0]?.error?.code ?? null, serving }).toEqual({ result: 'failed', code: 'E_SPARE_OTHER_TABLE', serving: null });
    expect(first).not.toBe(second);
  }, 90_000);
});

describe('revC: install-systemd keeps edited files', () => {
  // LOW. src/service/systemd.ts unmarkedShipped: for a file from before the mark line, ANY ExecStart line ending in
  // " up --foreground %i" is put back to the shipped one before hashing, so an admin's edit of ExecStart (a wrapper
  // such as ionice/nice, a node option) is taken for "unedited" and install-systemd overwrites it without --force.
  it('an unmarked earlier unit whose ExecStart the admin edited is kept, not overwritten', () => {
    const fixture = fs.readFileSync(path.join(REPO, 'test/unit/fixtures/units-8855ced/dmremap-ublk@.service'), 'utf8');
    expect(unedited('dmremap-ublk@.service', fixture)).toBe(true); // as that version wrote it: replaceable
    const edited = fixture.replace(
      /^ExecStart=.*$/m,
      'ExecStart=/usr/bin/ionice -c3 /opt/old/node --max-old-space-size=256 /opt/old/dmremap-ublk/bin/dmremap-ublk.js up --foreground %i',
    );
    expect(edited).not.toBe(fixture);
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'revc-units-'));
    try {
      const units = path.join(root, 'etc/systemd/system');
      const udev = path.join(root, 'etc/udev/rules.d');
      fs.mkdirSync(units, { recursive: true });
      fs.writeFileSync(path.join(units, 'dmremap-ublk@.service'), edited);
      const ctl = { running: false } as unknown as Systemctl;
      const r = installUnits(units, udev, ctl, false, ['/usr/bin/node', '/srv/dmr/bin/dmremap-ublk.js'], false);
      const unit = r.files.find((f) => f.file.endsWith('dmremap-ublk@.service'));
      // Fails on main: action 'written', the admin's ExecStart is gone.
      expect({ action: unit?.action, text: fs.readFileSync(path.join(units, 'dmremap-ublk@.service'), 'utf8') }).toEqual({ action: 'kept', text: edited });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('revC: checked sound (these pass)', () => {
  // NOTIFY_SOCKET: the unit's restart is systemd's Restart=on-failure running `up --foreground` again, which
  // recovers the quiesced device in its own process (runRecover --foreground -> serveForeground): it keeps the
  // unit's NOTIFY_SOCKET (only spawnDaemon and daemonEnv strip it) and tells READY=1 with its own MAINPID.
  it('a restarted unit (up --foreground recovering a quiesced device) still sends READY=1, STATUS= and STOPPING=1', async () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'svc', '--persist']).status).toBe(0);
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    expect(readEntries(w.runDir).quiesced.map((q) => q.name)).toEqual(['svc']);
    const sock = path.join(w.root, 'notify.sock');
    const link = path.join(w.nameDir, 'svc');
    const recv = spawn('python3', [path.join(REPO, 'test/unit/notify-receiver.py'), sock, link, '20'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let got = '';
    recv.stdout.on('data', (d: Buffer) => (got += d.toString()));
    await waitFor(() => got.startsWith('bound\n'));
    const daemon = spawn(process.execPath, [path.join(REPO, 'bin/dmremap-ublk.js'), 'up', '--foreground', 'svc'], {
      env: { ...process.env, VITEST: 'true', NOTIFY_SOCKET: sock, DMREMAP_RUN_DIR: w.runDir, DMREMAP_NAME_DIR: w.nameDir, DMREMAP_DEVICES_DIR: w.devicesDir, DMREMAP_DISK_DIR: w.diskDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...FAKE }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    await waitFor(() => got.includes('READY=1'), 20_000);
    const first = JSON.parse(got.split('\n')[1] ?? '{}') as { text: string; linked: boolean };
    expect(first).toEqual({ text: `READY=1\nMAINPID=${daemon.pid}\nSTATUS=serving ${path.join(w.devDir, 'ublkb0')} (svc), 0 remaps`, linked: true });
    expect(readEntries(w.runDir).live).toEqual([expect.objectContaining({ name: 'svc', pid: daemon.pid })]);
    const exited = new Promise<number | null>((r) => daemon.on('exit', (code) => r(code)));
    daemon.kill('SIGTERM');
    expect(await exited).toBe(0);
    await waitFor(() => got.includes('STOPPING=1'));
    recv.kill();
  }, 90_000);
});

// The record's table UUID against the table the device really runs with (built CLI, fake addon): `enable`
// takes it from the running daemon, never from whatever disk the spare's path names now, and never drops a
// recorded one; `up` does not recover a quiesced device whose spare now holds another table of its main. And
// install-systemd keeps an unmarked earlier unit whose ExecStart an admin edited; a restarted unit (recovering
// its quiesced device in the foreground) still talks to systemd.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntries } from '../../src/control/registry.js';
import { tableUuidFor } from '../../src/service/define.js';
import { installUnits, unedited, type Systemctl } from '../../src/service/systemd.js';
import { supervisorOf } from '../../src/supervisor/find.js';
import { cli, killDaemons, makeWorld, pidAlive, REPO, waitFor, type World } from './helpers.js';

const FAKE = { features: '0xd8' }; // user recovery: a killed daemon leaves its device quiesced
let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  killDaemons(w);
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
 * a byte copy of the spare holding the first table (UUID `first`): an old copy of the spare disk.
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

describe('the record\'s table UUID is the one the device runs with', () => {
  // A spare path that now names another disk holding another table of the same main (an old copy): recording
  // that copy's UUID would make `up` later accept the old copy and refuse the real spare.
  it('enable records the UUID of the table the running daemon serves, not whatever is at the spare path now, and warns', () => {
    const { first, second, clone } = twoTables();
    // The live spare is still open in the daemon; its path now names an old copy (another disk took the name).
    fs.renameSync(w.spare, `${w.spare}.live`);
    fs.writeFileSync(w.spare, clone);
    expect(pairIdOf('a')).toBe(second);
    const en = run(['enable', 'a']);
    expect(en.status).toBe(0);
    expect({ recorded: record('a').tableUuid, serving: second, oldCopy: first }).toEqual({ recorded: second, serving: second, oldCopy: first });
    expect(en.stderr).toBe(
      `dmremap-ublk: warning: a: the spare at ${w.spare} holds remap table ${first}, not table ${second} the daemon serves and the record names: \`up\` refuses it until that path leads to the served spare again\n`,
    );
  }, 90_000);

  // Dropping it would silently take the protection away for the next boot.
  it('enable again does not drop a recorded table UUID when the spare cannot be read through its path', () => {
    const { second, clone } = twoTables();
    fs.renameSync(w.spare, `${w.spare}.live`);
    fs.writeFileSync(w.spare, Buffer.alloc(clone.length));
    const en = run(['enable', 'a']);
    expect(en.status).toBe(0);
    expect(en.stderr).toContain(`holds no remap table that can be read, not table ${second} the daemon serves`);
    expect(record('a').tableUuid).toBe(second);
  }, 90_000);

  // The recovery compares the disk's identity only: the spare's contents replaced by an old copy while the
  // device waits quiesced would be served (the old copy's remap table) to the kernel device that still holds I/O.
  it('up refuses to recover a quiesced device whose spare now holds another table of the same main (it stays quiesced)', async () => {
    const { first, second, clone } = twoTables();
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    expect(readEntries(w.runDir).quiesced.map((q) => q.name)).toEqual(['a']);
    const live = fs.readFileSync(w.spare);
    fs.writeFileSync(w.spare, clone); // same file (inode): the same identity, the old table
    const up = lines(['up', 'a']);
    const serving = up[0]?.result === 'recovered' ? pairIdOf('a') : null;
    expect({ result: up[0]?.result, code: up[0]?.error?.code ?? null, serving }).toEqual({ result: 'failed', code: 'E_SPARE_OTHER_TABLE', serving: null });
    expect(up[0]?.error?.message).toBe(
      `the spare ${w.spare} holds remap table ${first}, not table ${second} recorded for device a (an old copy of the spare, or one formatted again since?): not recovered, nothing written: the device stays quiesced`,
    );
    expect(readEntries(w.runDir).quiesced.map((q) => q.name)).toEqual(['a']);
    expect(fs.readFileSync(w.spare).equals(clone)).toBe(true);
    // The unit's command refuses it too, with the exit code the unit does not restart on (73).
    const fg = run(['up', '--foreground', 'a']);
    expect([fg.status, fg.stderr]).toEqual([73, `dmremap-ublk: ${up[0]?.error?.message}\n`]);
    expect(readEntries(w.runDir).quiesced.map((q) => q.name)).toEqual(['a']);
    expect(readEntries(w.runDir).live).toEqual([]);
    // The recorded table back in place: it is recovered.
    fs.writeFileSync(w.spare, live);
    expect(lines(['up', 'a'])[0]?.result).toBe('recovered');
    expect(pairIdOf('a')).toBe(second);
  }, 90_000);

  it('enable of a quiesced device (no daemon answers) reads the spare and says so, and keeps a recorded UUID over what it reads', async () => {
    const { first, second, clone } = twoTables();
    const [e] = readEntries(w.runDir).live;
    const sup = supervisorOf(e?.pid ?? 0);
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(e?.pid ?? 0, 'SIGKILL');
    await waitFor(() => !pidAlive(e?.pid ?? 0));
    const none = 'no daemon answers for it (its daemon is gone, the device waits quiesced)';
    // A record without the UUID (written before it was kept): the one read from the spare, said so.
    const { tableUuid: _dropped, ...old } = record('a');
    fs.writeFileSync(path.join(w.devicesDir, 'a.json'), JSON.stringify(old));
    const read = run(['enable', 'a', '--json']);
    expect(read.status).toBe(0);
    expect(read.stderr).toBe(`dmremap-ublk: warning: a: ${none}: recorded remap table ${second} as read from the spare at ${w.spare}, not as a daemon serves it (\`dmremap-ublk enable a\` once it runs checks it)\n`);
    expect(JSON.parse(read.stdout)).toMatchObject({ name: 'a', tableUuid: second, tableUuidFrom: 'spare' });
    expect(record('a').tableUuid).toBe(second);
    // An old copy at the spare's path now: the recorded UUID stays, and the warning names both.
    fs.writeFileSync(w.spare, clone);
    const kept = run(['enable', 'a', '--json']);
    expect(kept.status).toBe(0);
    expect(kept.stderr).toBe(
      `dmremap-ublk: warning: a: ${none}: kept the recorded remap table ${second} (the spare at ${w.spare} holds remap table ${first}; only a running daemon's table replaces a recorded one)\n`,
    );
    expect(JSON.parse(kept.stdout)).toMatchObject({ tableUuid: second, tableUuidFrom: 'record' });
    expect(record('a').tableUuid).toBe(second);
  }, 90_000);

  it('enable replaces a recorded UUID only with the table a running daemon serves, saying so; add --persist records the table its daemon opened', () => {
    expect(run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist', '--json']).status).toBe(0);
    const first = pairIdOf('a');
    expect(record('a').tableUuid).toBe(first);
    expect(lines(['down', 'a'])[0]?.result).toBe('down');
    fs.writeFileSync(w.spare, Buffer.alloc(fs.statSync(w.spare).size));
    const again = run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--json']);
    expect(again.status).toBe(0);
    const second = pairIdOf('a');
    const en = run(['enable', 'a', '--json']);
    expect(en.stderr).toBe(`dmremap-ublk: a: the record named remap table ${first}; the running daemon serves table ${second}: recorded that one\n`);
    expect(JSON.parse(en.stdout)).toMatchObject({ tableUuid: second, tableUuidFrom: 'daemon' });
    expect(record('a').tableUuid).toBe(second);
    // Again: nothing to say.
    expect(run(['enable', 'a']).stderr).toBe('');
    // add --persist names the table in --json too.
    expect(lines(['down', 'a'])[0]?.result).toBe('down');
    fs.rmSync(path.join(w.devicesDir, 'a.json'));
    const p = run(['add', '--main', w.main, '--spare', w.spare, '--name', 'a', '--persist', '--json']);
    expect(JSON.parse(p.stdout)).toMatchObject({ name: 'a', tableUuid: second });
    // From the daemon's readiness line: no fallback read, nothing to warn about.
    expect(p.stderr).toContain(`dmremap-ublk: a: recorded in ${path.join(w.devicesDir, 'a.json')}\n`);
    expect(p.stderr).not.toContain('warning');
    expect(record('a').tableUuid).toBe(second);
  }, 90_000);
});

describe('tableUuidFor', () => {
  const reads = (t: string | null) => (): string | null => t;
  const A = '00000000-0000-4000-8000-00000000000a';
  const B = '00000000-0000-4000-8000-00000000000b';
  it('takes the running daemon\'s table; replaces a recorded other one (a note); warns when the path holds another or none', () => {
    expect(tableUuidFor('d', { uuid: A }, undefined, '/s', 0, reads(A))).toEqual({ tableUuid: A, from: 'daemon', notes: [], warnings: [] });
    expect(tableUuidFor('d', { uuid: A }, A, '/s', 0, reads(A))).toEqual({ tableUuid: A, from: 'daemon', notes: [], warnings: [] });
    const replaced = tableUuidFor('d', { uuid: A }, B, '/s', 0, reads(A));
    expect(replaced).toMatchObject({ tableUuid: A, from: 'daemon', warnings: [] });
    expect(replaced.notes).toEqual([`the record named remap table ${B}; the running daemon serves table ${A}: recorded that one`]);
    for (const at of [B, null]) {
      const r = tableUuidFor('d', { uuid: A }, B, '/s', 0, reads(at));
      expect(r.tableUuid).toBe(A);
      expect(r.warnings).toHaveLength(1);
      expect(r.warnings[0]).toContain(`not table ${A} the daemon serves`);
    }
  });
  it('without a daemon: keeps a recorded UUID whatever the read finds; else the read (said so); else none (said so)', () => {
    for (const at of [A, B, null]) expect(tableUuidFor('d', { none: 'quiesced' }, A, '/s', 0, reads(at))).toMatchObject({ tableUuid: A, from: 'record' });
    expect(tableUuidFor('d', { none: 'quiesced' }, undefined, '/s', 0, reads(B))).toMatchObject({ tableUuid: B, from: 'spare', warnings: [expect.stringContaining('no daemon answers for it (quiesced)')] });
    expect(tableUuidFor('d', { none: 'quiesced' }, undefined, '/s', 0, reads(null))).toMatchObject({ tableUuid: null, from: null, warnings: [expect.stringContaining('recorded without it')] });
  });
  it('reads the spare region at the offset given', () => {
    const seen: Array<[string, number]> = [];
    tableUuidFor('d', { uuid: A }, undefined, '/dev/x', 4096, (p, o) => (seen.push([p, o]), A));
    tableUuidFor('d', { uuid: A }, undefined, '/dev/x', null, (p, o) => (seen.push([p, o]), A));
    expect(seen).toEqual([['/dev/x', 4096], ['/dev/x', 0]]);
  });
});

describe('install-systemd keeps edited files', () => {
  // Only an ExecStart exactly as an earlier install-systemd rendered it counts as shipped: a wrapper (ionice,
  // nice) or a node option is an edit.
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
      expect({ action: unit?.action, text: fs.readFileSync(path.join(units, 'dmremap-ublk@.service'), 'utf8') }).toEqual({ action: 'kept', text: edited });
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('an unmarked unit counts as shipped only with an ExecStart an earlier install-systemd rendered (node, then bin/dmremap-ublk.js, its quoting)', () => {
    const fixture = fs.readFileSync(path.join(REPO, 'test/unit/fixtures/units-8855ced/dmremap-ublk@.service'), 'utf8');
    const withExec = (words: string): string => fixture.replace(/^ExecStart=.*$/m, `ExecStart=${words} up --foreground %i`);
    const shipped = [
      '/usr/bin/node /srv/dmr/bin/dmremap-ublk.js',
      '/usr/bin/nodejs /srv/dmr/bin/dmremap-ublk.js',
      '/usr/bin/node-20 /srv/dmr/bin/dmremap-ublk.js', // Fedora's versioned node
      '/usr/local/bin/node22 /srv/dmr/bin/dmremap-ublk.js',
      // execWord: white space quoted, % and $ doubled.
      '"/opt/my node/bin/node" "/srv/a b/100%%/bin/dmremap-ublk.js"',
      '/opt/n$$/node /srv/dmr/bin/dmremap-ublk.js',
      // Before execWord: the paths as they were (a $ not doubled; no % or white space was allowed).
      '/opt/n$/node /srv/dmr/bin/dmremap-ublk.js',
    ];
    for (const words of shipped) expect([words, unedited('dmremap-ublk@.service', withExec(words))]).toEqual([words, true]);
    const edits = [
      '/usr/bin/ionice /srv/dmr/bin/dmremap-ublk.js', // a wrapper in node's place
      '/usr/bin/nice /usr/bin/node /srv/dmr/bin/dmremap-ublk.js',
      '/usr/bin/node --max-old-space-size=256 /srv/dmr/bin/dmremap-ublk.js',
      '/usr/bin/node /srv/dmr/bin/other.js',
      'node /srv/dmr/bin/dmremap-ublk.js', // not an absolute path
      '"/usr/bin/node" /srv/dmr/bin/dmremap-ublk.js', // quotes execWord does not write
      '/usr/bin/node  /srv/dmr/bin/dmremap-ublk.js', // two spaces
      '/opt/100%/node /srv/dmr/bin/dmremap-ublk.js', // a single %: neither version wrote it
      "/opt/it's/node /srv/dmr/bin/dmremap-ublk.js",
    ];
    for (const words of edits) expect([words, unedited('dmremap-ublk@.service', withExec(words))]).toEqual([words, false]);
  });

  // An admin's wrapper script in node's place whose name starts with node (limits, an env, a version manager's
  // shim) is an edit: install-systemd must keep it (it once took any name starting with node for node's).
  it('a wrapper in node\'s place whose file name starts with "node" is an edit, not a shipped rendering', () => {
    const fixture = fs.readFileSync(path.join(REPO, 'test/unit/fixtures/units-8855ced/dmremap-ublk@.service'), 'utf8');
    const withExec = (words: string): string => fixture.replace(/^ExecStart=.*$/m, `ExecStart=${words} up --foreground %i`);
    const edits = [
      '/usr/local/sbin/node-with-limits /srv/dmr/bin/dmremap-ublk.js', // the admin's wrapper script (ulimit, ionice, then exec node)
      '/usr/local/bin/nodeenv-exec /srv/dmr/bin/dmremap-ublk.js',
    ];
    for (const words of edits) expect([words, unedited('dmremap-ublk@.service', withExec(words))]).toEqual([words, false]);
  });
});

describe('a unit restarted by systemd', () => {
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

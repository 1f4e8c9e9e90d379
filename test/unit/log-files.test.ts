// Logs: each detached device logs to its own file (paths.ts deviceLogFile), or to stderr when that is the
// journal; SIGHUP (`logs reopen`, logrotate's postrotate) makes the daemon and its supervisor reopen the file
// by name without stopping; and on a terminal, control characters from outside are escaped.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readEntries } from '../../src/control/registry.js';
import { createLogger, formatPretty, reopenLogFile } from '../../src/log.js';
import { stderrIsJournal } from '../../src/journal.js';
import { DEFAULT_LOG_DIR, deviceLogFile, logDir } from '../../src/paths.js';
import { detachedLogFile } from '../../src/cli/add.js';
import { table } from '../../src/cli/format.js';
import { formatQuiesced } from '../../src/cli/quiesced.js';
import { escapeControls } from '../../src/terminal-text.js';
import { runLogsReopen } from '../../src/cli/logs.js';
import { BIN, cli, cliSpawn, makeWorld, pidAlive, waitFor, type World } from './helpers.js';
import { IN_CI } from './promtool.js';
import { loadNative } from '../../src/native.js';

let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => {
  for (const e of readEntries(w.runDir).live) {
    try {
      process.kill(e.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  w.cleanup();
});

const ESC = '\x1b';

describe('terminal escaping', () => {
  it('formatPretty: an ESC sequence and a newline in a path or message reach the terminal as text', () => {
    const line = JSON.stringify({ level: 50, time: Date.UTC(2026, 0, 1, 12, 0, 1, 234), pid: 1, msg: `cannot open ${ESC}[2J`, path: `/tmp/a\nb${ESC}]0;owned\x07`, n: 3 });
    const out = formatPretty(`${line}\n`);
    expect(out).toBe('12:00:01.234 ERROR cannot open \\u001b[2J  path=/tmp/a\\u000ab\\u001b]0;owned\\u0007 n=3\n');
    expect(out.slice(0, -1)).not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
    // A line that is not JSON is escaped too.
    expect(formatPretty(`raw ${ESC}[31m\r\n`)).toBe('raw \\u001b[31m\\u000d\n');
  });

  it('escapeControls: C0, DEL and C1 (CSI \\x9b) escaped, everything else kept', () => {
    expect(escapeControls('a\tb\x7fc\x9b31md é ✓')).toBe('a\\u0009b\\u007fc\\u009b31md é ✓');
  });

  it('list and status lines: names, paths and reasons escaped', () => {
    expect(table([['NAME', 'MAIN'], ['x', `/dev/${ESC}[31mred\n`]])).toBe('NAME  MAIN\nx     /dev/\\u001b[31mred\\u000a\n');
    const q = formatQuiesced({ devId: 1, name: null, blockPath: '/dev/ublkb1', charPath: '/dev/ublkc1', lastPid: 5, since: null, reason: `died${ESC}[A\nfake line`, action: 'recover it' } as Parameters<typeof formatQuiesced>[0]);
    expect(q.split('\n')).toHaveLength(4);
    expect(q).toContain('reason died\\u001b[A\\u000afake line');
  });
});

describe('log files', () => {
  it('one per device: by name, else by main\'s file name, under DMREMAP_LOG_DIR (default /var/log/dmremap-ublk)', () => {
    expect(logDir({})).toBe(DEFAULT_LOG_DIR);
    expect(DEFAULT_LOG_DIR).toBe('/var/log/dmremap-ublk');
    expect(deviceLogFile({ DMREMAP_LOG_DIR: '/l' }, 'vol', '/dev/sdb')).toBe('/l/vol.log');
    expect(deviceLogFile({ DMREMAP_LOG_DIR: '/l' }, null, '/dev/disk/by-id/ata-X Y:1')).toMatch(/^\/l\/main@ata-X_Y_1-[0-9a-f]{8}\.log$/);
    expect(deviceLogFile({ DMREMAP_LOG_DIR: '/l' }, null, '/dev/sdb')).toBe('/l/main@sdb-97177c7b.log'); // README's example
    // The same main (also given relative to the working directory): the same file, so a re-add keeps its log.
    expect(deviceLogFile({ DMREMAP_LOG_DIR: '/l' }, null, path.resolve('main.img'))).toBe(deviceLogFile({ DMREMAP_LOG_DIR: '/l' }, null, 'main.img'));
    expect(detachedLogFile({ DMREMAP_LOG_DIR: '/l' }, '/given.log', 'vol', '/dev/sdb', true)).toBe('/given.log');
    expect(detachedLogFile({ DMREMAP_LOG_DIR: '/l' }, null, 'vol', '/dev/sdb', true)).toBeNull(); // the journal
    expect(detachedLogFile({ DMREMAP_LOG_DIR: '/l' }, null, 'vol', '/dev/sdb', false)).toBe('/l/vol.log');
  });

  it('two devices never share a log file: unnamed mains with the same file name, a name like main-<file>, names differing in a replaced character', () => {
    const env = { DMREMAP_LOG_DIR: '/l' };
    expect(deviceLogFile(env, null, '/dev/mapper/sdb')).not.toBe(deviceLogFile(env, null, '/dev/sdb'));
    expect(deviceLogFile(env, 'main-sdb', '/dev/sdc')).not.toBe(deviceLogFile(env, null, '/dev/sdb'));
    expect(deviceLogFile(env, null, '/dev/disk/by-id/a b')).not.toBe(deviceLogFile(env, null, '/dev/disk/by-id/a:b'));
  });

  it('stderrIsJournal: only when JOURNAL_STREAM names the very file on the fd', () => {
    const f = w.file('journal', 0);
    const fd = fs.openSync(f, 'r');
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      expect(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd)).toBe(true);
      expect(stderrIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1n}` }, fd)).toBe(false);
      expect(stderrIsJournal({}, fd)).toBe(false);
      expect(stderrIsJournal({ JOURNAL_STREAM: 'junk' }, fd)).toBe(false);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('reopenLogFile: after a rename, the next lines go to a new file at the same path', () => {
    const file = path.join(w.root, 'x.log');
    const log = createLogger({ file });
    log.info('before');
    fs.renameSync(file, `${file}.1`);
    log.info('still the old file');
    // This process's stdout and stderr are not that file: they are left alone.
    const asked: number[] = [];
    expect(reopenLogFile(log, (_fd, target) => void asked.push(target))).toEqual({ stdio: [], stdioError: null });
    expect(asked).toEqual([]);
    log.info('after');
    expect(fs.readFileSync(`${file}.1`, 'utf8')).toMatch(/"before".*\n.*"still the old file"/);
    const now = fs.readFileSync(file, 'utf8');
    expect(now).toContain('"after"');
    expect(now).not.toContain('before');
    expect(reopenLogFile(createLogger({ stderr: { write: () => {} } }))).toBe(false);
  });

  it('redirectStdio (the addon\'s dup2) moves only fd 1 or 2, and says what is wrong otherwise', () => {
    const native = loadNative();
    const fd = fs.openSync(path.join(w.root, 'r.log'), 'a');
    try {
      expect(() => native.redirectStdio(fd, 3 as 1)).toThrow(expect.objectContaining({ code: 'EINVAL', command: 'dup2' }) as Error);
      expect(() => native.redirectStdio(-1, 2)).toThrow(expect.objectContaining({ code: 'EINVAL', command: 'dup2' }) as Error);
      const closed = fs.openSync(path.join(w.root, 'r.log'), 'a');
      fs.closeSync(closed);
      expect(() => native.redirectStdio(closed, 2)).toThrow(expect.objectContaining({ code: 'EBADF', command: 'dup2' }) as Error);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('SIGHUP (logs reopen) after the file was renamed: daemon and supervisor write a new file and keep running', async () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--name', 'vol', '--json']);
    expect(add.stderr).toBe('');
    const { pid } = JSON.parse(add.stdout) as { pid: number };
    const file = path.join(w.logDir, 'vol.log');
    expect(readEntries(w.runDir).live[0]?.logFile).toBe(file);
    await waitFor(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('supervising daemon'));
    fs.renameSync(file, `${file}.1`);
    const reopen = cli(w, ['logs', 'reopen', '--json']);
    expect(reopen.stderr).toBe('');
    expect(reopen.status).toBe(0);
    expect(JSON.parse(reopen.stdout)).toEqual([{ devId: 0, name: 'vol', pid, logFile: file, signalled: true }]);
    await waitFor(() => fs.existsSync(file) && /supervisor: log file reopened/.test(fs.readFileSync(file, 'utf8')));
    const fresh = fs.readFileSync(file, 'utf8');
    expect(fresh).toContain('log file reopened (SIGHUP)');
    expect(fs.statSync(file).mode & 0o777).toBe(0o640);
    expect(pidAlive(pid)).toBe(true);
    expect(cli(w, ['status', 'vol']).status).toBe(0);
    // What the daemon logs from now on goes to the new file: del's shutdown lines.
    expect(cli(w, ['del', 'vol']).status).toBe(0);
    expect(fs.readFileSync(file, 'utf8').length).toBeGreaterThan(fresh.length);
    expect(fs.readFileSync(`${file}.1`, 'utf8')).not.toContain('reopened');
  });

  it('SIGHUP to a supervisor still starting (its daemon live and forwarding a reopen before the handler is set): it keeps running', async () => {
    const file = path.join(w.logDir, 'early.log');
    fs.mkdirSync(w.logDir, { recursive: true });
    const sup = cliSpawn(w, ['supervise', 'add', '--main', w.main, '--spare', w.spare, '--name', 'early', '--foreground', '--log-file', file]);
    const exited = new Promise<NodeJS.Signals | null>((r) => sup.on('exit', (_code, sig) => r(sig)));
    try {
      // Its early daemon spawned (bin/early-daemon.js): node is up, the CLI bundle still loading.
      const children = `/proc/${sup.pid}/task/${sup.pid}/children`;
      await waitFor(() => fs.existsSync(children) && fs.readFileSync(children, 'utf8').trim() !== '', 10_000);
      sup.kill('SIGHUP');
      const outcome = await Promise.race([exited, new Promise<'running'>((r) => setTimeout(() => r('running'), 3000))]);
      expect(outcome).toBe('running');
    } finally {
      sup.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    }
  });

  it('after logs reopen, what daemon and supervisor write to stderr (a native abort, node\'s fatal errors, a crash trace) goes to the new file too', async () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--name', 'fd2', '--json']);
    expect(add.status).toBe(0);
    const { pid } = JSON.parse(add.stdout) as { pid: number };
    const file = path.join(w.logDir, 'fd2.log');
    await waitFor(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('supervising daemon'));
    fs.renameSync(file, `${file}.1`);
    expect(cli(w, ['logs', 'reopen']).status).toBe(0);
    await waitFor(() => fs.existsSync(file) && /supervisor: log file reopened/.test(fs.readFileSync(file, 'utf8')));
    const ppid = Number(fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[1]);
    try {
      expect(fs.readlinkSync(`/proc/${pid}/fd/2`)).toBe(file);
      expect(fs.readlinkSync(`/proc/${ppid}/fd/2`)).toBe(file);
    } finally {
      expect(cli(w, ['del', 'fd2']).status).toBe(0);
    }
  });

  it('add with its stderr on the journal (JOURNAL_STREAM names it): daemon and supervisor log there, no file', async () => {
    const journal = path.join(w.root, 'journal');
    const fd = fs.openSync(journal, 'a');
    try {
      const st = fs.fstatSync(fd);
      const env = { ...process.env, VITEST: 'true', DMREMAP_RUN_DIR: w.runDir, DMREMAP_LOG_DIR: w.logDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir }), JOURNAL_STREAM: `${st.dev}:${st.ino}` };
      const add = spawnSync(process.execPath, [BIN, 'add', '--main', w.main, '--spare', w.spare, '--name', 'j', '--json'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', fd], timeout: 30_000 });
      expect(add.status).toBe(0);
    } finally {
      fs.closeSync(fd);
    }
    await waitFor(() => fs.readFileSync(journal, 'utf8').includes('supervising daemon'));
    const lines = fs.readFileSync(journal, 'utf8').trim().split('\n');
    for (const l of lines) expect(() => JSON.parse(l) as unknown).not.toThrow(); // JSON lines, one per record
    expect(lines.some((l) => l.includes('device live') || l.includes('"devId":0'))).toBe(true);
    expect(readEntries(w.runDir).live[0]?.logFile).toBeNull();
    expect(fs.existsSync(w.logDir)).toBe(false);
    expect(cli(w, ['del', 'j']).status).toBe(0);
  });

  it('logs reopen: none running is fine (exit 0, one line); a wrong action is a usage error', () => {
    let out = '';
    const ctx = { env: { DMREMAP_RUN_DIR: w.runDir }, stdout: { write: (s: string) => (out += s) }, stderr: { write: () => {} }, stderrIsTTY: false, loadNative: () => Promise.reject(new Error('unused')) };
    expect(runLogsReopen(ctx, false)).toBe(0);
    expect(out).toBe('no running dmremap-ublk daemons\n');
    expect(cli(w, ['logs', 'reopen', 'now']).stderr).toBe('dmremap-ublk: logs takes one action, "reopen" (got "reopen now")\n');
  });
});

const LOGROTATE = spawnSync('logrotate', ['--version']).status === 0;
if (!LOGROTATE && !IN_CI) console.warn('logrotate test skipped: no logrotate (apt-get install logrotate); with CI set it fails instead');

describe.skipIf(!LOGROTATE && !IN_CI)('the logrotate snippet (scripts/logrotate/dmremap-ublk)', () => {
  it('logrotate -f rotates the device\'s file and its postrotate makes the daemon write a new one', async () => {
    const add = cli(w, ['add', '--main', w.main, '--spare', w.spare, '--name', 'rot', '--json']);
    expect(add.status).toBe(0);
    const { pid } = JSON.parse(add.stdout) as { pid: number };
    const file = path.join(w.logDir, 'rot.log');
    await waitFor(() => fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('supervising daemon'));
    // The shipped snippet with the test's log directory and this checkout's CLI in place of the installed one.
    const snippet = fs.readFileSync(path.join(BIN, '../../scripts/logrotate/dmremap-ublk'), 'utf8');
    expect(snippet).toContain('/var/log/dmremap-ublk/*.log {');
    expect(snippet).toContain('/usr/local/bin/dmremap-ublk logs reopen');
    const conf = path.join(w.root, 'logrotate.conf');
    fs.writeFileSync(conf, snippet.replaceAll('/var/log/dmremap-ublk', w.logDir).replaceAll('/usr/local/bin/dmremap-ublk', `${process.execPath} ${BIN}`), { mode: 0o644 });
    const env = { ...process.env, DMREMAP_RUN_DIR: w.runDir, DMREMAP_LOG_DIR: w.logDir, DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir }) };
    const r = spawnSync('logrotate', ['-f', '-v', '-s', path.join(w.root, 'logrotate.state'), conf], { env, encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
    expect(fs.existsSync(`${file}.1`)).toBe(true); // delaycompress: the first rotation stays uncompressed
    await waitFor(() => fs.existsSync(file) && /supervisor: log file reopened/.test(fs.readFileSync(file, 'utf8')));
    expect(pidAlive(pid)).toBe(true);
    expect(cli(w, ['del', 'rot']).status).toBe(0);
  });
});

// The locked-down control socket on a live daemon: SO_PEERCRED decides who gets in (setpriv as another uid,
// outside and inside the configured controlGroup), and the seeded fuzz run (test/e2e/tools/control-fuzz.mjs,
// as a control group member) changes nothing: the daemon answers, the table, counters and status line are as
// before, data written before verifies, and its memory comes back. Userspace decides all of this (the
// kernel's part, SO_PEERCRED, is the same on every kernel): primary run only, one device for everything.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { addDevice, BIN, dmr, parseFio, REPO, RUN_DIR, sh, waitFor, type Result } from './helpers.js';
import { primaryKernelOnly, scratchPerTest } from './setup.js';
import { request } from '../../src/control/client.js';

const s = scratchPerTest();

/** The control group of this test (a gid no account has: /etc/group is read-only in the VM). */
const GID = 4711;
const UID = 1000;

/** The CLI as uid 1000, in the control group or in no group at all. */
function asUser(member: boolean, ...args: string[]): Result {
  const groups = member ? ['--groups', String(GID)] : ['--clear-groups'];
  return sh('setpriv', ['--reuid', String(UID), '--regid', String(UID), ...groups, process.execPath, BIN, ...args], 120_000);
}

function oneLine(r: Result): string {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  return lines[0] as string;
}

const rssKib = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);

const fioArgs = (dev: string, verifyOnly: boolean): string[] => [
  '--name=before',
  `--filename=${dev}`,
  '--rw=randwrite',
  '--bs=4k',
  '--size=8m',
  '--direct=1',
  '--ioengine=psync',
  '--verify=crc32c',
  '--randseed=15',
  verifyOnly ? '--verify_only' : '--do_verify=0',
  '--output-format=json',
];

primaryKernelOnly('the control socket', () => {
  it('SO_PEERCRED: a stranger is refused at connect, the control group reads but changes nothing, root does everything; the fuzz run changes nothing', async () => {
    const config = path.join(s.dir, 'config.json');
    fs.writeFileSync(config, JSON.stringify({ controlGroup: GID, scanIntervalDays: 0 }));
    const savedConfig = process.env.DMREMAP_CONFIG;
    process.env.DMREMAP_CONFIG = config;
    try {
      const dev = addDevice(s.loop(64), s.loop(16), '--name', 'sock');
      // The run directory and the socket are the group's; the registry file is readable to it.
      const dirSt = fs.statSync(RUN_DIR);
      expect({ mode: (dirSt.mode & 0o7777).toString(8), gid: dirSt.gid }).toEqual({ mode: '2750', gid: GID });
      const sockFile = path.join(RUN_DIR, `${dev.devId}.sock`);
      const sockSt = fs.statSync(sockFile);
      expect({ mode: (sockSt.mode & 0o777).toString(8), gid: sockSt.gid }).toEqual({ mode: '660', gid: GID });
      const regSt = fs.statSync(path.join(RUN_DIR, `${dev.devId}.json`));
      expect({ mode: (regSt.mode & 0o777).toString(8), gid: regSt.gid }).toEqual({ mode: '640', gid: GID });

      // Root: everything (a remap, so the table is not empty).
      expect(dmr('remap', 'sock', '800').status).toBe(0);
      const w = sh('fio', fioArgs(dev.blockPath, false));
      expect(parseFio(w.status, w.stdout).errors, w.stderr).toEqual([0]);

      // A stranger: the directory keeps it out; and were the socket reachable, the daemon refuses it at connect.
      const stranger = asUser(false, 'status', 'sock');
      expect(stranger.status).toBe(1);
      expect(oneLine(stranger)).toBe(`dmremap-ublk: cannot read run directory ${RUN_DIR}: EACCES`);
      fs.chmodSync(RUN_DIR, 0o2751);
      fs.chmodSync(sockFile, 0o666);
      // Connects and sends nothing: the refusal comes at connect (a request written after it would fail, EPIPE).
      const connect = `const c=require('net').connect(process.argv[1]);let b='';const t=setTimeout(()=>c.destroy(),20000);c.on('data',d=>b+=d);c.on('error',()=>{});c.on('close',()=>{clearTimeout(t);process.stdout.write(b);})`;
      const raw = sh('setpriv', ['--reuid', String(UID), '--regid', String(UID), '--clear-groups', process.execPath, '-e', connect, sockFile], 60_000);
      fs.chmodSync(RUN_DIR, 0o2750);
      fs.chmodSync(sockFile, 0o660);
      expect(raw.status, raw.stderr).toBe(0);
      expect(raw.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as unknown)).toEqual([
        { id: null, ok: false, error: { code: 'E_PERMISSION', message: `uid ${UID} may not use this control socket: not root, nor in the control group (gid ${GID})` } },
      ]);

      // A member: the read-only commands work, the others get E_PERMISSION.
      const status = asUser(true, 'status', 'sock', '--json');
      expect(status.status, status.stderr).toBe(0);
      expect((JSON.parse(status.stdout) as { remap: { line: string } }).remap.line).toMatch(/^0 131072 remap v2\.0 1\//);
      const table = asUser(true, 'table', 'sock', '--json');
      expect(table.status, table.stderr).toBe(0);
      const tableBefore = JSON.parse(table.stdout) as unknown;
      expect(tableBefore).toMatchObject({ total: 1 });
      expect(asUser(true, 'list').status).toBe(0);
      expect(asUser(true, 'stats', 'sock').status).toBe(0);
      const remap = asUser(true, 'remap', 'sock', '1600');
      expect(remap.status).toBe(1);
      expect(oneLine(remap)).toMatch(/^dmremap-ublk: remap needs root: the control group may use only ping, status, /);
      const del = asUser(true, 'del', 'sock');
      expect(del.status).toBe(1);
      expect(oneLine(del)).toMatch(/^dmremap-ublk: del needs root/);
      // watch as a member: root's remap shows up.
      const watcher = spawn('setpriv', ['--reuid', String(UID), '--regid', String(UID), '--groups', String(GID), process.execPath, BIN, 'watch', 'sock', '--json'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let watched = '';
      watcher.stdout.on('data', (d: Buffer) => (watched += d.toString()));
      watcher.stderr.resume();
      await new Promise((r) => setTimeout(r, 3000));
      expect(dmr('remap', 'sock', '2400').status).toBe(0);
      await waitFor('the member watching the remap', () => watched.includes('"type":"remap"'), 30_000);
      watcher.kill('SIGTERM');
      expect(dmr('unremap', 'sock', '2400').status).toBe(0);

      // The fuzz run, as a member (so valid mutating commands are sent too, and must be refused).
      // Over the socket from this process (root): the CLI's start-up costs seconds in the VM.
      const snapshot = async (): Promise<unknown> => ({
        line: (await request(sockFile, 'status', {})).remap.line,
        table: await request(sockFile, 'table', {}),
        stats: await request(sockFile, 'stats', {}),
      });
      const before = await snapshot();
      expect(before).toMatchObject({ table: { total: (tableBefore as { total: number }).total } });
      const rssBefore = rssKib(dev.pid);
      const seed = Number(process.env.DMREMAP_FUZZ_SEED ?? Date.now() % 1_000_000);
      console.log(`control socket fuzz: seed ${seed} (DMREMAP_FUZZ_SEED=${seed} repeats it)`);
      const t0 = Date.now();
      const fuzz = sh('setpriv', ['--reuid', String(UID), '--regid', String(UID), '--groups', String(GID), process.execPath, path.join(REPO, 'test/e2e/tools/control-fuzz.mjs'), sockFile, String(seed), '10000'], 300_000);
      expect(fuzz.status, fuzz.stderr).toBe(0);
      const report = JSON.parse(fuzz.stdout) as {
        fuzz: { sent: number; replies: number; codes: Record<string, number>; adminAllowed: number; malformed: string[] };
        pingWhileStuck: Record<string, number>;
        neverReads: { closedByDaemon: boolean; written: number };
        overlong: Array<{ lines: string[]; closed: boolean }>;
        flood: { pong: number; refused: number; other: string[] };
        seconds: number;
      };
      const rssPeak = rssKib(dev.pid);
      console.log(`control socket fuzz: ${JSON.stringify(report)} in ${Date.now() - t0} ms; daemon RSS ${rssBefore} KiB before, ${rssPeak} KiB after`);
      expect(report.fuzz).toMatchObject({ sent: 10_000, replies: 10_000, adminAllowed: 0, malformed: [] });
      expect(report.fuzz.codes.E_INTERNAL).toBeUndefined();
      expect(report.fuzz.codes.E_PERMISSION).toBeGreaterThan(0);
      expect(report.pingWhileStuck).toEqual({ ok: 1 });
      expect(report.neverReads.written).toBeGreaterThan(0);
      // The 256 KiB line: closed (its reply may be lost to the client's own EPIPE); the 65 KiB one: the reply, then closed.
      for (const o of report.overlong) expect(o.closed).toBe(true);
      expect(report.overlong[0]?.lines.length).toBeLessThanOrEqual(1);
      expect(report.overlong[1]?.lines.map((l) => (JSON.parse(l) as { error: { code: string } }).error.code)).toEqual(['E_PROTOCOL']);
      expect(report.flood.other).toEqual([]);
      expect(report.flood.pong + report.flood.refused).toBe(40);
      expect(report.flood.refused).toBeGreaterThanOrEqual(40 - 16);

      // After it: ping, the same table, counters and status line, the data verifies, the memory came back.
      // (The flood's connections are gone once the daemon has seen them close: ping until it takes clients again.)
      await waitFor('ping answered after the fuzz run', () => dmr('message', 'sock', 'ping').status === 0, 30_000);
      expect(await snapshot()).toEqual(before);
      const v = sh('fio', fioArgs(dev.blockPath, true));
      expect(parseFio(v.status, v.stdout).errors, v.stderr).toEqual([0]);
      await waitFor('the daemon RSS back near its level before', () => rssKib(dev.pid) <= rssBefore + 64 * 1024, 20_000);
      expect(dmr('del', 'sock').status).toBe(0);
    } finally {
      if (savedConfig === undefined) delete process.env.DMREMAP_CONFIG;
      else process.env.DMREMAP_CONFIG = savedConfig;
    }
  });
});

// Removing devices: `del` while idle, SIGTERM to a daemon while fio is writing, and `del` after the daemon
// was killed -9. Each time the device goes away completely, no task hangs, and nothing is left behind.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { addDevice, BIN, dmr, must, pidAlive, registryFiles, REPO, ublkNodes, waitFor } from './helpers.js';
import { promtool, SKIP_PROMTOOL } from '../unit/promtool.js';
import type { DeviceStatus, Stats } from '../../src/control/protocol.js';
import { itPrimary, scratchPerTest } from './setup.js';
import { supervisorOf } from '../../src/supervisor/find.js';

const s = scratchPerTest();

/** Name and nice value of each thread of `pid` (/proc/<pid>/task/<tid>/stat). */
function threadNices(pid: number): Array<{ tid: number; name: string; nice: number }> {
  return fs.readdirSync(`/proc/${pid}/task`).map((t) => {
    const st = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
    const name = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
    const fields = st.slice(st.lastIndexOf(')') + 2).split(' '); // fields[0] is field 3 (state)
    return { tid: Number(t), name, nice: Number(fields[16]) }; // field 19: nice
  });
}

const exitOf = (c: import('node:child_process').ChildProcess): Promise<number | null> =>
  new Promise((r) => (c.exitCode !== null ? r(c.exitCode) : c.on('exit', (code) => r(code))));

describe('device removal', () => {
  it('del while idle: daemon exits, device nodes and registry are gone', () => {
    const dev = addDevice(s.loop(64), s.loop(16), '--name', 'idle', '--queues', '2');
    expect(ublkNodes()).toEqual([`ublkb${dev.devId}`, `ublkc${dev.devId}`]);
    // The data path comes first: the queue threads keep the daemon's start priority, the JS thread (the
    // control path) runs 5 nice levels below them.
    const threads = threadNices(dev.pid);
    const queues = threads.filter((t) => t.name.startsWith('dmremap-q'));
    expect(queues.map((t) => t.name).sort()).toEqual(['dmremap-q0', 'dmremap-q1']);
    const main = threads.find((t) => t.tid === dev.pid);
    for (const q of queues) expect(main?.nice).toBe(q.nice + 5);
    const del = dmr('del', 'idle');
    expect(del.stderr).toBe('');
    expect(del.status).toBe(0);
    expect(del.stdout).toBe(`removed ${dev.blockPath}\n`);
    expect(pidAlive(dev.pid)).toBe(false);
    expect(ublkNodes()).toEqual([]);
    expect(registryFiles()).toEqual([]);
  });

  it('SIGTERM while fio writes: the daemon stops the device and exits 0, fio ends, nothing hangs', async () => {
    const main = s.loop(256);
    const spare = s.loop(16);
    const daemon = s.spawn(process.execPath, [BIN, 'add', '--main', main, '--spare', spare, '--queues', '2', '--foreground']);
    let out = '';
    daemon.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor('the device path on stdout', () => out.includes('\n'));
    const blockPath = out.trim();
    expect(blockPath).toMatch(/^\/dev\/ublkb\d+$/);

    const fio = s.spawn('fio', [
      '--name=load',
      `--filename=${blockPath}`,
      '--rw=randrw',
      '--bsrange=4k-256k',
      '--iodepth=32',
      '--ioengine=io_uring',
      '--direct=1',
      '--time_based',
      '--runtime=300',
      '--output-format=json',
    ]);
    await waitFor('fio to be writing', () => {
      const st = dmr('status', blockPath, '--json');
      return st.status === 0 && (JSON.parse(st.stdout) as { io: { writes: number } }).io.writes > 100;
    });
    daemon.kill('SIGTERM');
    expect(await exitOf(daemon)).toBe(0);
    // fio sees its device vanish and stops with I/O errors instead of hanging.
    const fioExit = await Promise.race([exitOf(fio), new Promise((r) => setTimeout(() => r('hung'), 60_000))]);
    expect(fioExit).not.toBe('hung');
    await waitFor('device nodes to disappear', () => ublkNodes().length === 0, 30_000);
    expect(registryFiles()).toEqual([]);
  });

  it('del after the daemon was killed -9 deletes the orphaned device', async () => {
    const dev = addDevice(s.loop(64), s.loop(16), '--name', 'crashed');
    // Its supervisor would recover the device: kill it first, so that nothing brings the device back.
    const sup = supervisorOf(dev.pid);
    expect(sup).not.toBeNull();
    process.kill(sup ?? 0, 'SIGKILL');
    process.kill(dev.pid, 'SIGKILL');
    await waitFor('the daemon to die', () => !pidAlive(dev.pid));
    expect(JSON.parse(dmr('list', '--json').stdout)).toEqual([expect.objectContaining({ name: 'crashed', pid: dev.pid, state: 'quiesced' })]);
    const del = dmr('del', 'crashed');
    expect(del.stderr).toBe('');
    expect(del.status).toBe(0);
    await waitFor('device nodes to disappear', () => ublkNodes().length === 0, 30_000);
    expect(registryFiles()).toEqual([]);
  });

  it('a new device can reuse main and spare after del', () => {
    const main = s.loop(64);
    const spare = s.loop(16);
    const first = addDevice(main, spare);
    expect(dmr('del', first.blockPath).status).toBe(0);
    const second = addDevice(main, spare);
    expect(second.blockPath).toMatch(/^\/dev\/ublkb\d+$/);
    expect(dmr('del', second.blockPath).status).toBe(0);
  });
});

describe('dmremap-ublk demo', () => {
  const loops = (): string => must('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE']);
  const dmDevices = (): string => must('dmsetup', ['ls']);
  const demoDirs = (): string[] => fs.readdirSync('/tmp').filter((f) => f.startsWith('dmremap-demo-'));

  itPrimary('runs to exit 0 with the data read back right, and leaves no ublk, dm or loop device or file behind', () => {
    const before = { loops: loops(), dm: dmDevices(), dirs: demoDirs() };
    const t0 = performance.now();
    const r = dmr('demo', '--json');
    const seconds = (performance.now() - t0) / 1000;
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const res = JSON.parse(r.stdout) as { ok: boolean; written: string; readBack: string; error: unknown; steps: Array<{ command: string; status: number; ms: number }>; cleanup: Array<{ command: string; ms: number }> };
    expect(res.error).toBeNull();
    expect(res.ok).toBe(true);
    expect(res.written).toMatch(/^[0-9a-f]{64}$/);
    expect(res.readBack).toBe(res.written);
    // The writes over the error segments were remapped: the table lists them.
    const table = res.steps.find((st) => st.command === 'dmremap-ublk table dmremap-demo') as { output: string } | undefined;
    expect(table?.output).toMatch(/mapped auto/);
    expect(ublkNodes()).toEqual([]);
    expect(registryFiles()).toEqual([]);
    expect({ loops: loops(), dm: dmDevices(), dirs: demoDirs() }).toEqual(before);
    const slowest = [...res.steps, ...res.cleanup].sort((a, b) => b.ms - a.ms).slice(0, 4);
    console.log(`demo: ${seconds.toFixed(1)} s; slowest steps: ${slowest.map((st) => `${st.command.split(' ').slice(0, 2).join(' ')} ${st.ms} ms`).join(', ')}`);
  });
});

describe('the Prometheus exporter', () => {
  itPrimary('serves /metrics of a live device over HTTP: values as status and stats say, promtool accepts it; SIGTERM ends it', async () => {
    const dev = addDevice(s.loop(64), s.loop(16), '--name', 'prom');
    must('dd', ['if=/dev/urandom', `of=${dev.blockPath}`, 'bs=4096', 'count=256', 'oflag=direct', 'status=none']);
    must('dd', [`if=${dev.blockPath}`, 'of=/dev/null', 'bs=4096', 'count=64', 'iflag=direct', 'status=none']);
    expect(dmr('remap', 'prom', '100').status).toBe(0);
    // The test VM's guest boots with its loopback interface down (connect: ENETUNREACH); a no-op where it is up.
    must('ip', ['link', 'set', 'lo', 'up']);
    const ex = spawn(process.execPath, [BIN, 'exporter', '--listen', '127.0.0.1:0', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let err = '';
      ex.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
      const started = await new Promise<{ url: string }>((resolve, reject) => {
        let out = '';
        ex.stdout.setEncoding('utf8').on('data', (t: string) => {
          out += t;
          if (out.includes('\n')) resolve(JSON.parse(out.slice(0, out.indexOf('\n'))) as { url: string });
        });
        ex.on('exit', (code) => reject(new Error(`exporter exited ${code}: ${err}`)));
      });
      const res = await fetch(started.url);
      expect(res.status).toBe(200);
      const text = await res.text();
      const status = JSON.parse(must(process.execPath, [BIN, 'status', 'prom', '--json'])) as DeviceStatus;
      const stats = JSON.parse(must(process.execPath, [BIN, 'stats', 'prom', '--json'])) as Stats;
      const value = (series: string): number | undefined => {
        const line = text.split('\n').find((l) => l.startsWith(`${series} `));
        return line === undefined ? undefined : Number(line.slice(series.length + 1));
      };
      const l = `device="${dev.blockPath}",name="prom"`;
      expect(value(`dmremap_up{${l}}`)).toBe(1);
      expect(value(`dmremap_io_bytes_total{${l},op="write"}`)).toBe(status.io.writeBytes);
      expect(status.io.writeBytes).toBeGreaterThanOrEqual(1 << 20);
      expect(value(`dmremap_io_bytes_total{${l},op="read"}`)).toBe(status.io.readBytes);
      expect(value(`dmremap_io_requests_total{${l},op="write"}`)).toBe(status.io.writes);
      expect(value(`dmremap_remaps_total{${l},origin="manual"}`)).toBe(stats.manualRemaps);
      expect(stats.manualRemaps).toBe(1);
      expect(value(`dmremap_spare_slots_used{${l}}`)).toBe(status.remap.used);
      expect(value(`dmremap_spare_slots_free{${l}}`)).toBe(status.remap.free);
      expect(value(`dmremap_health_score{${l}}`)).toBe(status.health.score);
      const count = value(`dmremap_io_latency_seconds_count{${l}}`) ?? 0;
      expect(count).toBeGreaterThan(0);
      expect(value(`dmremap_io_latency_seconds_bucket{${l},le="+Inf"}`)).toBe(count);
      if (!SKIP_PROMTOOL) expect(promtool(['check', 'metrics'], text)).toEqual({ status: 0, output: '' });
      ex.kill('SIGTERM');
      expect(await exitOf(ex)).toBe(0);
    } finally {
      if (ex.exitCode === null && ex.signalCode === null) ex.kill('SIGKILL');
    }
    expect(dmr('del', 'prom').status).toBe(0);
  });
});

describe('devices that come back', () => {
  // Records go to a scratch devices.d (/etc is read-only in the VM); /dev/dmremap is the real one.
  const withRecords = async (body: (dir: string) => Promise<void>): Promise<void> => {
    const dir = fs.mkdtempSync('/tmp/dmr-devices-');
    const before = process.env.DMREMAP_DEVICES_DIR;
    process.env.DMREMAP_DEVICES_DIR = dir;
    try {
      await body(dir);
    } finally {
      dmr('down');
      if (before === undefined) delete process.env.DMREMAP_DEVICES_DIR;
      else process.env.DMREMAP_DEVICES_DIR = before;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
  const upLines = (...args: string[]): { status: number | null; by: Record<string, { result: string; blockPath: string | null; error: { message: string } | null }> } => {
    const r = dmr(...args, '--json');
    const lines = JSON.parse(r.stdout) as Array<{ name: string; result: string; blockPath: string | null; error: { message: string } | null }>;
    return { status: r.status, by: Object.fromEntries(lines.map((l) => [l.name, l])) };
  };
  const readBlock = (p: string): string => must('dd', [`if=${p}`, 'bs=4096', 'count=1', 'skip=1', 'iflag=direct', 'status=none']).slice(0, 16);

  itPrimary("add --persist, /dev/dmremap/<name>, down/up with the remap table, a missing disk skipped, kill -9 then up recovers, the unit's ExecStart (READY=1 after the link), disable", async () => {
    await withRecords(async (dir) => {
      const keep = addDevice(s.loop(64), s.loop(16), '--name', 'keep', '--persist');
      // A second record whose main disk is gone (written here: starting a device for it would only cost time).
      const kept = JSON.parse(fs.readFileSync(`${dir}/keep.json`, 'utf8')) as Record<string, unknown>;
      const gone = { path: '/dev/disk/by-id/dmremap-e2e-missing-disk', kind: 'by-id', given: '/dev/sdz', identity: null };
      fs.writeFileSync(`${dir}/other.json`, JSON.stringify({ ...kept, name: 'other', main: gone, spare: { ...gone, path: '/dev/disk/by-id/dmremap-e2e-missing-spare' } }));
      expect(fs.readdirSync(dir).sort()).toEqual(['keep.json', 'other.json']);
      const link = '/dev/dmremap/keep';
      expect(fs.readlinkSync(link)).toBe(keep.blockPath);
      fs.writeFileSync('/tmp/dmr-pattern', 'persist-me-0123'.padEnd(4096, '.'));
      must('dd', ['if=/tmp/dmr-pattern', `of=${link}`, 'bs=4096', 'seek=1', 'oflag=direct', 'conv=notrunc', 'status=none']);
      expect(dmr('remap', link, '8').status).toBe(0);

      const pairId = (JSON.parse(dmr('status', link, '--json').stdout) as { remap: { pairId: string } }).remap.pairId;
      const down = upLines('down');
      expect([down.status, down.by.keep?.result, down.by.other?.result]).toEqual([0, 'down', 'not-running']);
      expect(ublkNodes()).toEqual([]);
      expect(fs.existsSync(link)).toBe(false);
      expect(fs.readdirSync(dir).sort()).toEqual(['keep.json', 'other.json']);

      // The record names the spare's remap table: a record naming another table (an old copy of the spare,
      // here an edited UUID) is refused in one line naming both, and nothing is created.
      const keepText = fs.readFileSync(`${dir}/keep.json`, 'utf8');
      expect((JSON.parse(keepText) as { tableUuid?: string }).tableUuid).toBe(pairId);
      const otherUuid = '00000000-0000-4000-8000-000000000000';
      fs.writeFileSync(`${dir}/keep.json`, JSON.stringify({ ...(JSON.parse(keepText) as object), tableUuid: otherUuid }));
      const refused = upLines('up', 'keep');
      expect([refused.status, refused.by.keep?.result]).toEqual([1, 'failed']);
      expect(refused.by.keep?.error?.message).toMatch(new RegExp(`^the spare \\S+ holds remap table ${pairId}, not table ${otherUuid} recorded for device keep \\(.*\\): not brought up, nothing written$`));
      expect(ublkNodes()).toEqual([]);
      fs.writeFileSync(`${dir}/keep.json`, keepText);

      // other's disks are missing: other is reported and skipped, keep comes up.
      const up = upLines('up');
      expect([up.status, up.by.keep?.result, up.by.other?.result]).toEqual([1, 'up', 'failed']);
      expect(up.by.other?.error?.message).toBe('main /dev/disk/by-id/dmremap-e2e-missing-disk is missing');
      expect(fs.readlinkSync(link)).toBe(up.by.keep?.blockPath);
      // The remap made before down is still there (it lives on the spare), and so is the data.
      expect(JSON.parse(dmr('table', 'keep', '--json').stdout)).toMatchObject({ entries: [expect.objectContaining({ block: 8 })] });
      expect(readBlock(link)).toBe('persist-me-0123.');
      expect(dmr('up', 'keep').stdout).toMatch(/^keep: already up \/dev\/ublkb\d+\n$/);

      // keep's daemon and its supervisor die: up recovers the quiesced device, it does not add another.
      const [entry] = (JSON.parse(dmr('list', '--json').stdout) as Array<{ name: string; pid: number; supervisorPid: number | null; stableName: string | null }>).filter((e) => e.name === 'keep');
      expect(entry?.stableName).toBe(link);
      if (entry?.supervisorPid != null) process.kill(entry.supervisorPid, 'SIGKILL');
      process.kill(entry?.pid ?? 0, 'SIGKILL');
      await waitFor('the daemon to die', () => !pidAlive(entry?.pid ?? 0));
      const rec = upLines('up', 'keep');
      expect([rec.status, rec.by.keep?.result, rec.by.keep?.blockPath]).toEqual([0, 'recovered', up.by.keep?.blockPath]);
      expect(readBlock(link)).toBe('persist-me-0123.');
      expect(upLines('down', 'keep').by.keep?.result).toBe('down');

      // The systemd unit's ExecStart, as install-systemd writes it, with a notification socket bound here
      // (the VM has no systemd): READY=1 arrives once the device is live and its link exists.
      const units = fs.mkdtempSync('/tmp/dmr-units-');
      must(process.execPath, [BIN, 'install-systemd', '--prefix', units]);
      const execStart = /^ExecStart=(.*)$/m.exec(fs.readFileSync(`${units}/etc/systemd/system/dmremap-ublk@.service`, 'utf8'))?.[1] ?? '';
      const [cmd, ...args] = execStart.replaceAll('%i', 'keep').split(' ');
      expect(args.slice(-3)).toEqual(['up', '--foreground', 'keep']);
      const sock = `${units}/notify.sock`;
      const recv = s.spawn('/usr/bin/python3', [`${REPO}/test/unit/notify-receiver.py`, sock, link, '60']);
      let got = '';
      recv.stdout?.on('data', (d: Buffer) => (got += d.toString()));
      await waitFor('the notification socket', () => got.startsWith('bound\n'));
      const daemon = spawn(cmd ?? '', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: sock } });
      daemon.stdout.resume();
      daemon.stderr.resume();
      await waitFor('READY=1', () => got.includes('READY=1'), 120_000);
      const ready = JSON.parse(got.split('\n')[1] ?? '{}') as { text: string; linked: boolean };
      expect(ready.linked).toBe(true);
      expect(ready.text).toMatch(new RegExp(`^READY=1\\nMAINPID=${daemon.pid}\\nSTATUS=serving /dev/ublkb\\d+ \\(keep\\), 1 remap$`));
      expect(readBlock(link)).toBe('persist-me-0123.');
      daemon.kill('SIGTERM');
      expect(await exitOf(daemon)).toBe(0);
      expect(ublkNodes()).toEqual([]);
      expect(fs.existsSync(link)).toBe(false);
      fs.rmSync(units, { recursive: true, force: true });

      // disable: the record is gone, and up no longer brings the device back.
      expect(dmr('disable', 'keep').status).toBe(0);
      expect(fs.readdirSync(dir)).toEqual(['other.json']);
      expect(upLines('up', 'keep').by.keep?.error?.message).toMatch(/^no device record named "keep"/);
      expect(ublkNodes()).toEqual([]);
    });
  });
});

// Removing devices: `del` while idle, SIGTERM to a daemon while fio is writing, and `del` after the daemon
// was killed -9. Each time the device goes away completely, no task hangs, and nothing is left behind.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { addDevice, BIN, dmr, pidAlive, registryFiles, ublkNodes, waitFor } from './helpers.js';
import { scratchPerTest } from './setup.js';
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

// The remap engine end to end: the daemon's table on the spare, manual remaps online under fio verify, a
// restart and a kill -9 that bring every remap and byte back, a foreign spare refused unchanged, a
// corrupted table copy repaired, a block whose data is lost never served, and bad input refused.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { addDevice, dmr, must, parseFio, pidAlive, readAt, RUN_DIR, sh, waitFor, type Added } from './helpers.js';
import { itPrimary, scratchPerTest } from './setup.js';
import { supervisorOf } from '../../src/supervisor/find.js';

const s = scratchPerTest();

const sock = (d: Added) => path.join(RUN_DIR, `${d.devId}.sock`);
const sha = (dev: string, bytes: number) => crypto.createHash('sha256').update(readAt(dev, 0, bytes)).digest('hex');


/** Reads `count` sectors at `sector` with O_DIRECT in one request. */
function ddRead(dev: string, sector: number, count: number): { ok: boolean; stderr: string } {
  const r = spawnSync('dd', [`if=${dev}`, `bs=${count * 512}`, `skip=${sector * 512}`, 'count=1', 'iflag=direct,skip_bytes', 'of=/dev/null', 'status=none']);
  return { ok: r.status === 0, stderr: r.stderr.toString() };
}

/** One sector read with O_DIRECT (no readahead into the error segment around it). */
function ddData(dev: string, sector: number): Buffer {
  const r = spawnSync('dd', [`if=${dev}`, 'bs=512', `skip=${sector}`, 'count=1', 'iflag=direct', 'status=none']);
  expect(r.status, r.stderr.toString()).toBe(0);
  return r.stdout;
}

async function tableOf(d: Added) {
  return (await request(sock(d), 'table', { limit: 100_000 })).entries.map((e) => [e.block, e.slot, e.state]);
}

describe('remap engine', () => {
  it('200 remaps and 50 unremaps under fio verify lose no write; the status line counts them', async () => {
    const dev = addDevice(s.loop(64), s.loop(32), '--queues', '2');
    // fio keeps writing (and verifying every batch of 64 writes soon after) until the messages are done;
    // then it is stopped with SIGINT and reports its verify result.
    const fio = spawn('fio', [
      '--name=remaps', `--filename=${dev.blockPath}`, '--direct=1', '--ioengine=io_uring', '--rw=randwrite',
      '--bsrange=4k-256k', '--iodepth=32', '--size=48M', '--verify=crc32c', '--verify_fatal=1', '--randrepeat=0',
      '--verify_backlog=64', '--time_based', '--runtime=900', '--output-format=json',
    ], { cwd: s.dir });
    let out = '';
    fio.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((r) => fio.on('exit', (c) => r(c)));
    let running = true;
    void exited.then(() => (running = false));

    const sectors = (48 << 20) / 512;
    const mapped: number[] = [];
    const used = new Set<number>();
    let remaps = 0;
    let unremaps = 0;
    while (running && (remaps < 200 || unremaps < 50)) {
      if (unremaps < 50 && mapped.length > 0 && (remaps >= 200 || remaps % 4 === 3)) {
        const sector = mapped.splice(Math.floor(Math.random() * mapped.length), 1)[0] as number;
        await request(sock(dev), 'unremap', { sector }, 60_000);
        unremaps++;
      } else {
        let sector = Math.floor(Math.random() * sectors);
        while (used.has(sector)) sector = (sector + 1) % sectors;
        used.add(sector);
        const r = await request(sock(dev), 'remap', { sector }, 60_000);
        expect(r.state).toBe('mapped');
        mapped.push(sector);
        remaps++;
      }
    }
    expect(running).toBe(true); // fio was still writing when the last message was answered
    fio.kill('SIGINT');
    const code = await exited;
    const result = parseFio(code, out);
    expect(result.errors).toEqual([0]); // a verify failure would be error 84 (and end fio early)
    expect(code).toBe(128); // fio's exit status when stopped by a signal
    expect(result.writeBytes).toBeGreaterThan(48 << 20);
    expect([remaps, unremaps]).toEqual([200, 50]);
    console.log(`remap messages under fio verify: ${remaps} remaps, ${unremaps} unremaps, ${result.writeBytes >> 20} MiB written`);

    const st = await request(sock(dev), 'status', {});
    expect(st.remap.remapped).toBe(remaps - unremaps);
    expect(st.remap.manualRemaps).toBe(remaps);
    expect(st.remap.line).toMatch(
      new RegExp(`^0 ${(64 << 20) / 512} remap v2\\.0 ${remaps - unremaps}/\\d+ 0/\\d+ \\d+/\\d+ health=\\w+ errors=W0:R0 auto_remaps=0 manual_remaps=${remaps} scan=0%$`),
    );
    expect((await tableOf(dev)).length).toBe(remaps - unremaps);
  });

  // The table's durability, the format's checks and the CLI's answers are userspace's: primary run only.
  itPrimary('del + add, and kill -9 right after a remap reply: table, counters and bytes come back', async () => {
    const main = s.loop(32);
    const spare = s.loop(16);
    let dev = addDevice(main, spare);
    const data = crypto.randomBytes(8 << 20);
    must('dd', [`of=${dev.blockPath}`, 'bs=1M', 'oflag=direct', 'status=none', `if=${writeTmp(data)}`]);
    for (const sector of [7, 4096, 9000, 12345]) await request(sock(dev), 'remap', { sector });
    const before = { table: await tableOf(dev), sum: sha(dev.blockPath, 8 << 20) };
    expect(before.sum).toBe(crypto.createHash('sha256').update(data).digest('hex'));
    expect(dmr('del', dev.blockPath).status).toBe(0);

    dev = addDevice(main, spare);
    expect(await tableOf(dev)).toEqual(before.table);
    expect((await request(sock(dev), 'status', {})).remap.manualRemaps).toBe(4);
    expect(sha(dev.blockPath, 8 << 20)).toBe(before.sum);

    // The reply means the remap is durable: a crash right after it must not lose it.
    const r = await request(sock(dev), 'remap', { sector: 15000 });
    const sup = supervisorOf(dev.pid); // killed first: it would recover the device
    if (sup !== null) process.kill(sup, 'SIGKILL');
    process.kill(dev.pid, 'SIGKILL');
    await waitFor('the daemon to die', () => !pidAlive(dev.pid));
    expect(dmr('del', String(dev.devId)).status).toBe(0); // removes the quiesced kernel device
    dev = addDevice(main, spare);
    const after = await tableOf(dev);
    expect(after).toContainEqual([r.block, r.slot, 'mapped']);
    expect(after.length).toBe(5);
    expect(sha(dev.blockPath, 8 << 20)).toBe(before.sum);
    expect(dmr('del', dev.blockPath).status).toBe(0);
  });

  itPrimary('a spare of another main is refused and left unchanged; --force-format takes it over', async () => {
    const spare = s.loop(16);
    const first = addDevice(s.loop(32), spare);
    await request(sock(first), 'remap', { sector: 100 });
    expect(dmr('del', first.blockPath).status).toBe(0);
    const spareSum = sha(spare, 16 << 20);
    const other = s.loop(48);
    const r = dmr('add', '--main', other, '--spare', spare);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^dmremap-ublk: .*another main device/);
    expect(sha(spare, 16 << 20)).toBe(spareSum);
    const taken = addDevice(other, spare, '--force-format');
    expect(await tableOf(taken)).toEqual([]);
  });

  itPrimary('a corrupted table copy on the spare is detected and repaired from the other', async () => {
    const main = s.loop(32);
    const spare = s.loop(16);
    let dev = addDevice(main, spare);
    for (const sector of [1, 2000, 30000]) await request(sock(dev), 'remap', { sector });
    const table = await tableOf(dev);
    expect(dmr('del', dev.blockPath).status).toBe(0);

    // Table copy A sits at byte 8192 of the spare region (docs/FORMAT.md): flip bytes in its header.
    const fd = fs.openSync(spare, 'r+');
    const copyA = Buffer.alloc(4096);
    fs.readSync(fd, copyA, 0, 4096, 8192);
    const flipped = Buffer.from(copyA);
    for (let i = 40; i < 72; i++) flipped[i] = (flipped[i] as number) ^ 0xff;
    fs.writeSync(fd, flipped, 0, 4096, 8192);
    fs.fsyncSync(fd);
    fs.closeSync(fd);

    dev = addDevice(main, spare);
    expect(await tableOf(dev)).toEqual(table);
    expect(readAt(spare, 8192, 4096).equals(flipped)).toBe(false); // rewritten, not left corrupt
    expect(dmr('del', dev.blockPath).status).toBe(0);
    dev = addDevice(main, spare);
    expect(await tableOf(dev)).toEqual(table);
  });

  it('a block whose data cannot be read is remapped as lost, never served until written, then reads the write', async () => {
    // main: 32 MiB whose sectors 20480..20487 are a device-mapper error segment.
    const backing = s.loop(32);
    const name = `dmr-e2e-${process.pid}`;
    const total = (32 << 20) / 512;
    const table = `0 20480 linear ${backing} 0\n20480 8 error\n20488 ${total - 20488} linear ${backing} 20488\n`;
    const created = spawnSync('dmsetup', ['create', name], { input: table });
    expect(created.status, created.stderr.toString()).toBe(0);
    try {
      sh('dmsetup', ['mknodes', name]);
      const spare = s.loop(16);
      const dev = addDevice(`/dev/mapper/${name}`, spare);
      const r = await request(sock(dev), 'remap', { sector: 20484 });
      expect(r.state).toBe('lost');
      expect(r.readErrno).toBe('EIO');
      const v = await request(sock(dev), 'verify', { sector: 20484 });
      expect(v.state).toBe('lost');
      expect(ddRead(dev.blockPath, 20484, 1).ok).toBe(false);
      expect(ddRead(dev.blockPath, 20480, 16).ok).toBe(false);
      expect(ddRead(dev.blockPath, 0, 16).ok).toBe(true);
      expect((await request(sock(dev), 'status', {})).remap.lost).toBe(1);
      // A write heals it: acknowledged once committed mapped; it reads back, also after a restart.
      const data = crypto.randomBytes(512);
      const w = spawnSync('dd', [`of=${dev.blockPath}`, 'bs=512', 'seek=20484', 'count=1', 'oflag=direct', 'conv=notrunc', 'status=none'], { input: data });
      expect(w.status, w.stderr.toString()).toBe(0);
      expect(ddData(dev.blockPath, 20484).equals(data)).toBe(true);
      expect((await request(sock(dev), 'verify', { sector: 20484 })).state).toBe('mapped');
      expect((await request(sock(dev), 'status', {})).remap.lost).toBe(0);
      expect(dmr('del', dev.blockPath).status).toBe(0);
      const again = addDevice(`/dev/mapper/${name}`, spare);
      expect(ddData(again.blockPath, 20484).equals(data)).toBe(true);
      expect(dmr('del', again.blockPath).status).toBe(0);
    } finally {
      sh('dmsetup', ['remove', name]);
    }
  });

  itPrimary('bad input changes nothing: sector beyond the device, not a number, unknown message', async () => {
    const dev = addDevice(s.loop(16), s.loop(8));
    await request(sock(dev), 'remap', { sector: 64 });
    const before = await tableOf(dev);
    const beyond = dmr('remap', dev.blockPath, String((16 << 20) / 512));
    expect(beyond.status).toBe(1);
    expect(beyond.stderr.trim().split('\n')).toHaveLength(1);
    const nan = dmr('remap', dev.blockPath, 'abc');
    expect(nan.status).toBe(2);
    expect(nan.stderr.trim().split('\n')).toHaveLength(1);
    const unknown = dmr('message', dev.blockPath, 'frobnicate', '1');
    expect(unknown.status).not.toBe(0);
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1);
    expect(await tableOf(dev)).toEqual(before);
  });
});

function writeTmp(data: Buffer): string {
  const f = path.join(s.dir, `data-${crypto.randomUUID()}.bin`);
  fs.writeFileSync(f, data);
  return f;
}

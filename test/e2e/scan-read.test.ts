// The scanner's native read (NativeDevice.scanRead, issue 13) on a real device, through the scan_read debug
// command of the control socket: over a main with a dm `error` segment and a manually remapped block, the
// remapped block is read from its spare slot, the error segment's blocks fail with EIO, everything else
// reads (in pieces of at most the device's max I/O), and the scan changes none of the user I/O counters
// `status --json` shows (nor the error counters). Over a slow spare or main (dm-delay), a remap does not
// wait for the scan's piece in flight (its drain waits for user requests only), the scan read's result
// names the older table generation it was planned against, and a stop ends a scan read within one piece.
// A user's read slower than slow_io_ms (native's slow_io event) is read again by the scan's narrow reads
// and counted like the scan's: twice, and its block is relocated with its data, with no scan running.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import type { DeviceStatus } from '../../src/control/protocol.js';
import { addForeground, must, pidAlive, RUN_DIR, waitFor, type ForegroundDaemon } from './helpers.js';
import { directRead, directWrite, ErrorSources, leftoverDmDevices } from './error-sources.js';
import { expectCleanKernel, itPrimary, requireUblkHost } from './setup.js';

const MiB = 1 << 20;
// The error segment: sectors 4096..4111 (bytes 2 MiB .. 2 MiB + 8 KiB), away from what a partition scan reads.
const BAD = { start: 4096, sectors: 16 };
// The manually remapped sector: 512 KiB in.
const REMAPPED_SECTOR = 1024;

let src: ErrorSources;
let daemon: ForegroundDaemon | null = null;
let dir: string;

beforeAll(requireUblkHost);
beforeEach(() => {
  src = new ErrorSources();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-scan-'));
});
afterEach(async (ctx) => {
  try {
    if (daemon !== null) {
      if (ctx.task.result?.state === 'fail') console.log(daemon.log.slice(-40).join('\n'));
      const { dev, child } = daemon;
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await waitFor(`daemon ${dev.pid} to stop`, () => !pidAlive(dev.pid) && !fs.existsSync(dev.blockPath), 60_000);
      daemon = null;
    }
  } finally {
    src.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  expectCleanKernel();
  expect(leftoverDmDevices()).toEqual([]);
});

/** Waits until the remap table holds `sector` as mapped (a relocation is queued, then copies and commits). */
async function waitForEntry(sock: string, sector: number): Promise<void> {
  const end = Date.now() + 60_000;
  while (!(await request(sock, 'table', {})).entries.some((e) => e.sector === sector && e.state === 'mapped')) {
    if (Date.now() > end) throw new Error(`sector ${sector} was not relocated`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** The counters of user I/O and of errors, as `status --json` shows them. */
function userCounters(s: DeviceStatus): unknown {
  return { io: s.io, perQueue: s.perQueue, ioErrors: s.ioErrors, readErrors: s.remap.readErrors, writeErrors: s.remap.writeErrors };
}

// The dm-delay cases run on the primary kernel only: what they time is native's piece loop, its cancel and
// the remap index (userspace); the scan's reads through each kernel's block layer and dm are the first case's
// and scan.test.ts's, which run everywhere.
describe('scanRead through the data path', () => {
  it('reads a remapped block from its slot, fails the error segment with EIO, reads the rest, and counts no user I/O', async () => {
    const main = src.dmError(16, [BAD]);
    daemon = await addForeground(main.path, src.loop(16), path.join(dir, 'state'), ['--auto-remap', 'off']);
    const sock = path.join(RUN_DIR, `${daemon.dev.devId}.sock`);
    const remap = await request(sock, 'remap', { sector: REMAPPED_SECTOR }, 60_000);
    expect(remap.state).toBe('mapped');

    // Whatever read the new device (the partition scan, udev's probe) has settled: the counters hold still.
    let before = await request(sock, 'status', {});
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const now = await request(sock, 'status', {});
      const settled = JSON.stringify(userCounters(now)) === JSON.stringify(userCounters(before));
      before = now;
      if (settled) break;
    }
    const bs = before.blockSize;
    const rb = (REMAPPED_SECTOR * 512) / bs; // the remapped block
    const badFirst = (BAD.start * 512) / bs;
    const badEnd = ((BAD.start + BAD.sectors) * 512) / bs;

    // One read of the first 4 MiB: main up to the remapped block, the block from its slot, then main again,
    // in pieces of at most 1 MiB that never cross a multiple of 1 MiB (whatever max I/O is); the piece that
    // holds the error segment (in the third MiB) fails as a whole (one O_DIRECT read of a dm range that
    // crosses it), and the call, a run over more than one chunk, ends with that piece's chunk.
    const whole = await request(sock, 'scan_read', { offset: 0, bytes: 4 * MiB }, 60_000);
    const per = MiB / bs;
    const covered = (3 * MiB) / bs;
    const cut = (device: string, first: number, stop: number): unknown[][] => {
      const out: unknown[][] = [];
      for (let b = first; b < stop; ) {
        const n = Math.min(per - (b % per), stop - b);
        out.push([device, b, n, null, device === 'main' && b < badEnd && b + n > badFirst ? 5 : 0]);
        b += n;
      }
      return out;
    };
    expect(whole.segments.map((s) => [s.device, s.block, s.blocks, s.skipped, s.errno])).toEqual([
      ...cut('main', 0, rb),
      ['spare', rb, 1, null, 0],
      ...cut('main', rb + 1, covered),
    ]);
    expect([whole.coveredBytes, whole.stopped]).toEqual([3 * MiB, 'failures']);
    expect(whole.segments.filter((s) => s.errno !== 0).length).toBeGreaterThan(0);

    // Narrow over the error segment and 8 blocks either side: exactly its blocks fail, with EIO.
    const from = badFirst - 8;
    const narrow = await request(sock, 'scan_read', { offset: from * bs, bytes: (badEnd - badFirst + 16) * bs, narrow: true }, 60_000);
    expect(narrow.segments).toHaveLength(badEnd - badFirst + 16);
    narrow.segments.forEach((s, i) => {
      expect(s).toMatchObject({ device: 'main', block: from + i, blocks: 1, skipped: null });
      expect([s.block, s.errno]).toEqual([s.block, s.block >= badFirst && s.block < badEnd ? 5 : 0]);
    });

    // Narrow over the remapped block: it is read from the spare, its neighbours from main, all of them fine.
    const around = await request(sock, 'scan_read', { offset: (rb - 1) * bs, bytes: 3 * bs, narrow: true }, 60_000);
    expect(around.segments.map((s) => [s.device, s.block, s.errno])).toEqual([
      ['main', rb - 1, 0],
      ['spare', rb, 0],
      ['main', rb + 1, 0],
    ]);
    expect(whole.segments.concat(narrow.segments, around.segments).every((s) => s.latencyUs > 0 || s.errno !== 0)).toBe(true);

    // None of it is user I/O: the counters status shows did not move, and the failures became no error count.
    const after = await request(sock, 'status', {});
    expect(userCounters(after)).toEqual(userCounters(before));
    // The table is as the manual remap left it: the scan remapped nothing.
    expect((await request(sock, 'table', {})).entries.map((e) => [e.sector, e.state])).toEqual([[(rb * bs) / 512, 'mapped']]);
  });

  itPrimary('a remap does not wait for a scan read in flight: it completes well before it, and the scan read names an older table', async () => {
    // The spare is a dm linear map while the device is added and a block remapped, then a dm-delay map
    // whose reads take 8 s (writes and flushes none): a scan read of the remapped block's slot is in flight
    // for 8 s, like a read in a failing drive's error recovery. A remap of another block started 0.5 s in
    // copies from main (a loop device) and writes the spare: it drains only user requests, so it is done
    // seconds before the scan read answers. The scan read was planned against the table before the remap's
    // publishes: its generation is older than that of a scan read after the remap (which reads against the
    // table the remap left), so the scanner would read it again rather than trust it.
    // (Before the fix the drain waited for the scan's piece: the remap ended after the scan read.)
    const spare = src.dmError(16, []);
    daemon = await addForeground(src.loop(16), spare.path, path.join(dir, 'state'), ['--auto-remap', 'off']);
    const sock = path.join(RUN_DIR, `${daemon.dev.devId}.sock`);
    expect((await request(sock, 'remap', { sector: REMAPPED_SECTOR }, 60_000)).state).toBe('mapped');
    const bs = (await request(sock, 'status', {})).blockSize;
    const rb = (REMAPPED_SECTOR * 512) / bs;
    must('modprobe', ['dm_delay']); // not among the VM's preloaded modules
    src.reload(spare, `0 ${spare.sectors} delay ${spare.backing} 0 8000 ${spare.backing} 0 0\n`);
    try {
      const scan = request(sock, 'scan_read', { offset: rb * bs, bytes: bs }, 60_000).then((r) => ({ r, at: Date.now() }));
      await new Promise((r) => setTimeout(r, 500));
      const started = Date.now();
      const m = await request(sock, 'remap', { sector: 4 * REMAPPED_SECTOR }, 60_000).then((r) => ({ r, at: Date.now() }));
      const s = await scan;
      expect(s.r.segments).toHaveLength(1);
      expect(s.r.segments[0]).toMatchObject({ device: 'spare', block: rb, blocks: 1, skipped: null, errno: 0 });
      expect(s.r.segments[0]?.latencyUs).toBeGreaterThanOrEqual(7_900_000);
      expect(m.r.state).toBe('mapped');
      // The piece ends about 7.5 s after the remap started; the remap (a 4 KiB copy and a journal commit,
      // slow only under an emulated CPU) took well under that, and was done seconds before the scan read.
      expect(m.at - started).toBeLessThan(5_000);
      expect(s.at - m.at).toBeGreaterThanOrEqual(2_000);
      // A scan read now (block 0, from main) plans against the table the remap left: a newer generation.
      const after = await request(sock, 'scan_read', { offset: 0, bytes: bs }, 60_000);
      expect(after.segments.map((x) => [x.device, x.block, x.errno])).toEqual([['main', 0, 0]]);
      expect(s.r.generation).toBeLessThan(after.generation);
    } finally {
      src.setLinear(spare);
    }
  });

  itPrimary('a remap during a slow narrow scan does not wait for the piece in flight; the scan read names an older table; a second scan read is refused', async () => {
    // main is a dm linear map while the device is added, then a dm-delay map whose reads take 4 s: a narrow
    // scan of 4 blocks takes 16 s, one piece (block) at a time. A remap of another block started 0.8 s into
    // the second piece copies the block from main (one 4 s read) and commits: about 4 s in all. Had its drain
    // waited for the scan's piece in flight (3.2 s more) it would take about 7.2 s. The scan's later pieces
    // read as usual, and its result names the table before the remap (its first piece's).
    const main = src.dmError(16, []);
    daemon = await addForeground(main.path, src.loop(16), path.join(dir, 'state'), ['--auto-remap', 'off']);
    const sock = path.join(RUN_DIR, `${daemon.dev.devId}.sock`);
    const bs = (await request(sock, 'status', {})).blockSize;
    const rb = (REMAPPED_SECTOR * 512) / bs;
    must('modprobe', ['dm_delay']);
    src.reload(main, `0 ${main.sectors} delay ${main.backing} 0 4000 ${main.backing} 0 0\n`);
    try {
      const first = (2 * MiB) / bs;
      const t0 = Date.now();
      const scan = request(sock, 'scan_read', { offset: first * bs, bytes: 4 * bs, narrow: true }, 120_000).then((r) => ({ r, at: Date.now() }));
      await new Promise((r) => setTimeout(r, 500));
      // One scan read at a time per device: a second one, on another connection, is refused at once (EBUSY),
      // it does not wait for the first on a pool thread.
      const asked = Date.now();
      const second = await request(sock, 'scan_read', { offset: 0, bytes: bs }, 60_000).then(
        () => 'answered',
        (e: unknown) => (e instanceof Error ? e.message : String(e)),
      );
      expect(second).toMatch(/EBUSY/);
      expect(Date.now() - asked).toBeLessThan(900);
      await new Promise((r) => setTimeout(r, 4800 - (Date.now() - t0)));
      const started = Date.now();
      const m = await request(sock, 'remap', { sector: REMAPPED_SECTOR }, 120_000).then((r) => ({ r, at: Date.now() }));
      expect(m.r.state).toBe('mapped');
      expect(m.at - started).toBeLessThan(5_800);
      const s = await scan;
      expect(s.r.segments.map((x) => [x.device, x.block, x.blocks, x.skipped, x.errno])).toEqual(
        Array.from({ length: 4 }, (_, i) => ['main', first + i, 1, null, 0]),
      );
      expect(s.r.segments.every((x) => x.latencyUs >= 3_900_000)).toBe(true);
      expect(s.at - t0).toBeGreaterThanOrEqual(15_500);
      expect(m.at).toBeLessThan(s.at);
      // A scan read now (the remapped block, from its slot on the spare, a loop device) plans against the
      // table the remap left: a newer generation than the slow scan's.
      const after = await request(sock, 'scan_read', { offset: rb * bs, bytes: bs }, 60_000);
      expect(after.segments.map((x) => [x.device, x.block, x.errno])).toEqual([['spare', rb, 0]]);
      expect(s.r.generation).toBeLessThan(after.generation);
    } finally {
      src.setLinear(main);
    }
  });

  itPrimary('a user read slower than slow_io_ms, twice, no scan running: counted (slowIos, slowBlocks) and its block relocated with its data', async () => {
    // main is a dm linear map while the device is added and a block written, then the same map with a
    // 64 KiB dm-delay segment (reads 800 ms, writes none) at 2 MiB. A user reads a block there with O_DIRECT:
    // native reports the read (slow_io, over slow_io_ms = 500); once users are idle the daemon reads the
    // block again by itself (slow again: 1 slow block) and a reference range half the device away (fast: a
    // bad zone, not a slow disk). A second user read, judged the same way, brings the block to
    // slow_threshold (2): it is relocated to the spare with its data (table origin `scan`: the scan's own
    // re-read judged it) and then reads fast, from the spare, with the same bytes. No scan pass runs.
    const main = src.dmError(16, []);
    daemon = await addForeground(main.path, src.loop(16), path.join(dir, 'state'), ['--block-size', '4096']);
    const sock = path.join(RUN_DIR, `${daemon.dev.devId}.sock`);
    const dev = daemon.dev.blockPath;
    const bs = (await request(sock, 'status', {})).blockSize;
    const block = (2 * MiB) / bs;
    const data = Buffer.alloc(bs);
    for (let i = 0; i < bs; i++) data[i] = (i * 7 + 3) & 0xff;
    expect(directWrite(dev, block, data, bs).ok).toBe(true);
    const start = (2 * MiB) / 512;
    const len = (64 * 1024) / 512;
    must('modprobe', ['dm_delay']);
    src.reload(
      main,
      `0 ${start} linear ${main.backing} 0\n` +
        `${start} ${len} delay ${main.backing} ${start} 800 ${main.backing} ${start} 0\n` +
        `${start + len} ${main.sectors - start - len} linear ${main.backing} ${start + len}\n`,
    );
    const stats = () => request(sock, 'stats', {});
    const until = async (what: string, cond: (s: Awaited<ReturnType<typeof stats>>) => boolean): Promise<void> => {
      const end = Date.now() + 90_000;
      for (;;) {
        if (cond(await stats())) return;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await stats())}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    };
    try {
      expect((await request(sock, 'scan', {})).state).toBe('idle');
      for (let round = 1; round <= 2; round++) {
        const t0 = Date.now();
        const r = directRead(dev, block, 1, bs);
        expect(r.ok, r.stderr).toBe(true);
        expect(r.data.equals(data)).toBe(true);
        expect(Date.now() - t0).toBeGreaterThanOrEqual(750);
        // The device is left idle while the daemon reads the block again.
        await until(`round ${round} judged`, (s) => s.userSlowReads >= round && s.slowBlocks >= round);
      }
      const sector = (block * bs) / 512;
      await waitForEntry(sock, sector);
      const entry = (await request(sock, 'table', {})).entries.find((e) => e.sector === sector);
      expect(entry).toMatchObject({ state: 'mapped', origin: 'scan' });
      const s = await stats();
      expect(s).toMatchObject({ userSlowReads: 2, userSlowUnjudged: 0, slowBlocks: 2, slowChunks: 0 });
      expect(s.slowIos).toBeGreaterThanOrEqual(2);
      // Served from the spare now: fast, and the same bytes.
      const t1 = Date.now();
      const back = directRead(dev, block, 1, bs);
      expect(back.ok, back.stderr).toBe(true);
      expect(back.data.equals(data)).toBe(true);
      expect(Date.now() - t1).toBeLessThan(750);
      expect((await request(sock, 'scan', {})).state).toBe('idle');
    } finally {
      src.setLinear(main);
    }
  });

  itPrimary('a stop during a slow narrow scan read ends it within one piece: main is free once the daemon says stopped', async () => {
    // main's reads take 3 s (dm-delay): a narrow scan of 20 blocks would take 60 s. SIGTERM 1 s in: the stop
    // ends the scan read after its piece in flight and waits for it, so its dups of main and spare are closed
    // when the stop returns: once the daemon logs "device stopped" (claims released), nothing holds main.
    // (Before the fix the scan read went on through its dups, holding main's claim until the process was
    // gone: the exit watchdog's 3 s and the pread in flight later.)
    const main = src.dmError(16, []);
    daemon = await addForeground(main.path, src.loop(16), path.join(dir, 'state'), ['--auto-remap', 'off']);
    const sock = path.join(RUN_DIR, `${daemon.dev.devId}.sock`);
    const bs = (await request(sock, 'status', {})).blockSize;
    must('modprobe', ['dm_delay']);
    src.reload(main, `0 ${main.sectors} delay ${main.backing} 0 3000 ${main.backing} 0 0\n`);
    try {
      const first = (2 * MiB) / bs;
      const scan = request(sock, 'scan_read', { offset: first * bs, bytes: 20 * bs, narrow: true }, 120_000).then(
        () => 'answered',
        (e: unknown) => (e instanceof Error ? e.message : String(e)),
      );
      await new Promise((r) => setTimeout(r, 1000));
      const d = daemon;
      const killed = Date.now();
      d.child.kill('SIGTERM');
      await waitFor('the daemon to log "device stopped"', () => d.log.some((l) => l.includes('device stopped')), 60_000);
      // Nothing holds main any more: an exclusive open succeeds (EBUSY while a claim or a dup of it lives),
      // allowing 1 s for the queues' io_uring teardown, which the kernel finishes asynchronously.
      const stoppedAt = Date.now();
      let open: string = 'EBUSY';
      while (open !== 'ok' && Date.now() - stoppedAt < 1000) {
        try {
          fs.closeSync(fs.openSync(main.path, fs.constants.O_RDONLY | fs.constants.O_EXCL));
          open = 'ok';
        } catch (e) {
          open = (e as NodeJS.ErrnoException).code ?? String(e);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      expect(open).toBe('ok');
      await waitFor(`daemon ${d.dev.pid} to exit`, () => !pidAlive(d.dev.pid), 60_000);
      daemon = null;
      // The scan read was ended, not answered with a full result, and the stop took about one piece.
      expect(await scan).not.toBe('answered');
      expect(stoppedAt - killed).toBeLessThan(20_000);
    } finally {
      src.setLinear(main);
    }
  });
});

// The background scan (issue 13) on a real device: one pass over a main with 40 dm `error` segments, nothing
// written, finds every one (pending: reads fail with EIO, a write heals it), the status line says scan=100%
// and the state is done; a dm-delay segment of 800 ms: its blocks are counted slow and relocated with their
// data at the second pass (slow_threshold 2); and a running scan survives del + add (same spare, same state
// dir) where it was; `map` draws what the pass found. kill -9 and fio verify during a scan: supervisor.test.ts
// (its kill case runs a scan). The remaps the scan made count in `stats` autoRemaps and scanRemaps.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import type { ScanStatusResult } from '../../src/control/protocol.js';
import { addForeground, dmr, must, pidAlive, RUN_DIR, waitFor, type ForegroundDaemon } from './helpers.js';
import { blockSegments, directRead, directWrite, ErrorSources, leftoverDmDevices } from './error-sources.js';
import { expectCleanKernel, itPrimary, requireUblkHost } from './setup.js';

const BS = 4096;
const MiB = 1 << 20;

let src: ErrorSources;
let daemon: ForegroundDaemon | null = null;
let dir: string;

beforeAll(requireUblkHost);
beforeEach(() => {
  src = new ErrorSources();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-scan-'));
});

async function stopDaemon(): Promise<void> {
  if (daemon === null) return;
  const { dev, child } = daemon;
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  await waitFor(`daemon ${dev.pid} to stop`, () => !pidAlive(dev.pid) && !fs.existsSync(dev.blockPath), 60_000);
  daemon = null;
}

afterEach(async (ctx) => {
  try {
    if (daemon !== null && ctx.task.result?.state === 'fail') console.log(daemon.log.slice(-40).join('\n'));
    await stopDaemon();
  } finally {
    src.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  expectCleanKernel();
  expect(leftoverDmDevices()).toEqual([]);
});

const sockOf = (d: ForegroundDaemon): string => path.join(RUN_DIR, `${d.dev.devId}.sock`);

async function scanUntil(sock: string, what: string, cond: (s: ScanStatusResult) => boolean, timeoutMs = 300_000): Promise<ScanStatusResult> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await request(sock, 'scan', {});
    if (cond(s)) return s;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('the background scan', () => {
  it('one pass over a main with 40 dm error segments finds them all: pending (EIO), healed by a write; scan=100%, done', async () => {
    // 16 MiB = 4096 blocks; the bad blocks stay clear of the first and last 64 (the kernel's partition scan
    // and udev's probes read there, and a user read would find them before the scan does).
    const bad = blockSegments({ seed: 1313, count: 40, fromBlock: 64, toBlock: 4096 - 64, blockSize: BS });
    const badBlocks = bad.map((r) => r.start / (BS / 512));
    const main = src.dmError(16, bad);
    daemon = await addForeground(main.path, src.loop(16), path.join(dir, 'state'), ['--block-size', '4096']);
    const sock = sockOf(daemon);
    expect(await request(sock, 'scan', {})).toMatchObject({ state: 'idle', progress: 0 });
    await request(sock, 'scan_start', {});
    const s = await scanUntil(sock, 'the pass to finish', (x) => x.state === 'done');
    expect(s).toMatchObject({ state: 'done', progress: 100, position: 16 * MiB, pass: 1 });
    const st = await request(sock, 'status', {});
    expect(st.remap.line).toMatch(/ scan=100%$/);
    const table = (await request(sock, 'table', {})).entries;
    expect(table.map((e) => e.block)).toEqual(badBlocks);
    expect(table.every((e) => e.state === 'lost')).toBe(true);
    // Each found by the scan, unless a user read (a probe) came first.
    expect(table.filter((e) => e.origin === 'scan').length).toBe(s.errorsFound);
    expect(s.errorsFound).toBeGreaterThanOrEqual(38);
    // The persisted counters: every entry an automatic remap, those the scan found also in scanRemaps.
    expect(await request(sock, 'stats', {})).toMatchObject({ autoRemaps: badBlocks.length, scanRemaps: s.errorsFound, manualRemaps: 0 });
    for (const b of badBlocks) expect(directRead(daemon.dev.blockPath, b).errno, `block ${b}`).toBe('EIO');
    // The surface map, made as a user makes it: each region's pending count is its bad blocks, the failed
    // reads are in the error bin, and a region with no bad block has none.
    const out = path.join(dir, 'surface.html');
    const m = dmr('map', daemon.dev.blockPath, '--out', out, '--json');
    expect(m.status, m.stderr).toBe(0);
    expect(JSON.parse(m.stdout)).toMatchObject({ out, format: 'html', regions: 16 });
    expect(fs.readFileSync(out, 'utf8')).toMatch(/^<!doctype html>/i);
    const model = await request(sock, 'scan_map', {});
    expect(model.regionBytes).toBe(MiB);
    const perRegion = new Map<number, number>();
    for (const b of badBlocks) perRegion.set(Math.floor((b * BS) / MiB), (perRegion.get(Math.floor((b * BS) / MiB)) ?? 0) + 1);
    expect(model.regions.map((r) => r.pending)).toEqual(model.regions.map((r) => perRegion.get(r.index) ?? 0));
    for (const r of model.regions) if (!perRegion.has(r.index)) expect(r.bins[6], `region ${r.index}`).toBe(0);
    expect(model.regions.reduce((n, r) => n + (r.bins[6] as number), 0)).toBeGreaterThan(0);
    for (const b of badBlocks) {
      const data = crypto.randomBytes(BS);
      expect(directWrite(daemon.dev.blockPath, b, data).ok, `block ${b}`).toBe(true);
      expect(directRead(daemon.dev.blockPath, b).data.equals(data), `block ${b}`).toBe(true);
    }
  });

  // Primary kernel only (this and the next): slow-read detection, relocation and the scan's persisted
  // position are userspace; the scan's reads through the data path run on every kernel in the case above and in
  // scan-read.test.ts, del + add in lifecycle.test.ts.
  itPrimary('a dm-delay segment of 800 ms: its blocks are counted slow, and relocated with their data at the second pass', async () => {
    // 16 MiB; blocks 1000..1007 (sectors 8000..8063) read in 800 ms, writes are not delayed.
    const SLOW = { block: 1000, blocks: 8 };
    const main = src.dmError(16, []);
    daemon = await addForeground(main.path, src.loop(16), path.join(dir, 'state'), ['--block-size', '4096']);
    const sock = sockOf(daemon);
    const data = crypto.randomBytes(SLOW.blocks * BS);
    expect(directWrite(daemon.dev.blockPath, SLOW.block, data).ok).toBe(true);
    must('modprobe', ['dm_delay']); // not among the VM's preloaded modules
    const s0 = SLOW.block * (BS / 512);
    const n = SLOW.blocks * (BS / 512);
    const b = main.backing;
    src.reload(main, `0 ${s0} linear ${b} 0\n${s0} ${n} delay ${b} ${s0} 800 ${b} ${s0} 0\n${s0 + n} ${main.sectors - s0 - n} linear ${b} ${s0 + n}\n`);
    try {
      await request(sock, 'scan_start', {});
      const first = await scanUntil(sock, 'the first pass', (x) => x.state === 'done');
      expect(first.slowFound).toBe(SLOW.blocks);
      let stats = await request(sock, 'stats', {});
      expect(stats.slowIos).toBeGreaterThanOrEqual(1);
      expect(stats.slowBlocks).toBe(SLOW.blocks);
      expect((await request(sock, 'table', {})).total).toBe(0); // slow once: not yet relocated
      await request(sock, 'scan_start', {});
      const second = await scanUntil(sock, 'the second pass', (x) => x.state === 'done' && x.pass === 2);
      expect(second.slowFound).toBe(SLOW.blocks);
      const end = Date.now() + 60_000;
      let entries = (await request(sock, 'table', {})).entries;
      while (entries.length < SLOW.blocks && Date.now() < end) {
        await new Promise((r) => setTimeout(r, 250));
        entries = (await request(sock, 'table', {})).entries;
      }
      expect(entries.map((e) => [e.block, e.state, e.origin])).toEqual(
        Array.from({ length: SLOW.blocks }, (_, i) => [SLOW.block + i, 'mapped', 'scan']),
      );
      stats = await request(sock, 'stats', {});
      expect(stats.slowBlocks).toBe(2 * SLOW.blocks);
      expect(stats.relocations).toBe(SLOW.blocks);
      // Remaps of origin scan: in autoRemaps and in scanRemaps, as `stats` (the CLI, --json) shows them.
      expect(stats).toMatchObject({ autoRemaps: SLOW.blocks, scanRemaps: SLOW.blocks, manualRemaps: 0 });
      const cli = dmr('stats', daemon.dev.blockPath, '--json');
      expect(cli.status, cli.stderr).toBe(0);
      expect(JSON.parse(cli.stdout)).toMatchObject({ autoRemaps: SLOW.blocks, scanRemaps: SLOW.blocks });
      const human = dmr('stats', daemon.dev.blockPath);
      expect(human.stdout).toMatch(new RegExp(`^remaps +${SLOW.blocks} automatic \\(${SLOW.blocks} found by the background scan\\), 0 manual`, 'm'));
    } finally {
      src.setLinear(main);
    }
    // Their data came along: read from the spare now.
    const back = directRead(daemon.dev.blockPath, SLOW.block, SLOW.blocks);
    expect(back.ok, back.stderr).toBe(true);
    expect(back.data.equals(data)).toBe(true);
  });

  itPrimary('a running scan survives del + add where it was; a paused one stays paused', async () => {
    const main = src.loop(256);
    const spare = src.loop(16);
    const state = path.join(dir, 'state');
    daemon = await addForeground(main, spare, state, ['--block-size', '4096']);
    let sock = sockOf(daemon);
    await request(sock, 'scan_start', { rateMib: 2 });
    const before = await scanUntil(sock, '4 MiB scanned', (x) => x.position >= 4 * MiB, 60_000);
    await stopDaemon();
    daemon = await addForeground(main, spare, state, ['--block-size', '4096']);
    sock = sockOf(daemon);
    const after = await request(sock, 'scan', {});
    expect(after).toMatchObject({ state: 'running', pass: 1 });
    expect(after.position).toBeGreaterThanOrEqual(before.position);
    const paused = await request(sock, 'scan_pause', {});
    await stopDaemon();
    daemon = await addForeground(main, spare, state, ['--block-size', '4096']);
    sock = sockOf(daemon);
    expect(await request(sock, 'scan', {})).toMatchObject({ state: 'paused', position: paused.position, pass: 1 });
  });
});

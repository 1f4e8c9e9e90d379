// Scan benchmark, run inside the VM as root (issue 13): what an unlimited-rate background scan costs the
// device's users, and whether the scan still advances under their load.
//
// One device (`add`) over loop devices in the guest's tmpfs: a 4 GiB sparse main whose first 512 MiB hold
// random data (fio reads there; the scan starts there too), a 64 MiB spare. A scan pass is started at the
// highest rate a pass may be given (MAX_SCAN_RATE_MIB, "no limit") and paused at once. Then BENCH_ROUNDS
// (default 3) interleaved rounds of BENCH_RUNTIME seconds (default 10) each:
//   A: fio 4k randread QD32 (io_uring, direct) with the scan paused;
//   B: the same with the scan running (scan_resume just before fio, scan_pause just after), the scan's
//      position taken from the resume and pause answers, its status polled every second during fio.
// Reported: per round the IOPS of A and B and the scan's position before and after B; median IOPS paused and
// scanning, their ratio (target >= 0.90), and the scan's rate during B, resume to pause and under load (the
// polls from 2 s after the resume on, from the first whose reported rate is the floor: the rate climbs while
// fio starts and comes down once it runs; target: at least the floor, scan_min_rate_mib). PASS/FAIL lines against the targets do not fail the process (a benchmark reports);
// it exits 1 only when it could not run. Ends with one line `BENCH_JSON <json>`.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sh } from './fio.mjs';
import { loadWindow, MIB, median, summarise } from './scan-analysis.mjs';
import { request } from '../dist/control/client.js';
import { MAX_SCAN_RATE_MIB } from '../dist/scan/settings.js';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cli = path.join(repo, 'bin', 'dmremap-ublk.js');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const runtime = Number(process.env.BENCH_RUNTIME ?? 10);
const RUN_DIR = process.env.DMREMAP_RUN_DIR ?? '/run/dmremap-ublk';
const TARGET_RATIO = 0.9;
const MAIN_MIB = 4096;
const DATA_MIB = 512;
const POLL_MS = 1000;
/** The rate under load is taken from the polls from this long after scan_resume on, from the first that reports the floor. */
const LOAD_FROM_MS = 2000;
/** pause waits for the scan's read in flight (as the CLI's scan command allows). */
const COMMAND_TIMEOUT_MS = 120_000;
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`BENCH_ROUNDS must be a whole number >= 1, got ${process.env.BENCH_ROUNDS}`);
if (!Number.isFinite(runtime) || runtime < 4) throw new Error(`BENCH_RUNTIME must be a number of seconds >= 4, got ${process.env.BENCH_RUNTIME}`);

const dir = mkdtempSync(path.join(os.tmpdir(), 'dmremap-sbench-'));
const loops = [];
const loop = (f) => {
  const dev = sh('losetup', ['-f', '--show', '--direct-io=on', f]);
  loops.push(dev);
  return dev;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** fio 4k randread QD32 over the data part of `dev` for `runtime` s; resolves with its read IOPS. */
function fioRandread(dev) {
  const child = spawn('fio', [
    '--name=randread', `--filename=${dev}`, '--direct=1', '--ioengine=io_uring', '--rw=randread', '--bs=4k',
    '--iodepth=32', `--size=${DATA_MIB}M`, '--time_based', `--runtime=${runtime}`, '--ramp_time=1',
    '--randrepeat=0', '--norandommap', '--output-format=json',
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0 || !out.includes('{')) return reject(new Error(`fio exited ${code}`));
      const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
      if (job.error !== 0) return reject(new Error(`fio reported error ${job.error}`));
      resolve(job.read.iops);
    });
  });
}

let dev;
try {
  const mainImg = path.join(dir, 'main.img');
  const spareImg = path.join(dir, 'spare.img');
  // Sparse: only the data part takes the guest's memory (its /tmp is a tmpfs of half of DMREMAP_VM_MEM).
  sh('truncate', ['-s', `${MAIN_MIB}M`, mainImg]);
  sh('dd', ['if=/dev/urandom', `of=${mainImg}`, 'bs=1M', `count=${DATA_MIB}`, 'conv=notrunc', 'status=none']);
  sh('truncate', ['-s', '64M', spareImg]);
  const main = loop(mainImg);
  const spare = loop(spareImg);
  const added = JSON.parse(sh('node', [cli, 'add', '--main', main, '--spare', spare, '--queues', '2', '--json']));
  dev = added.blockPath;
  const sock = path.join(RUN_DIR, `${added.devId}.sock`);
  const floorMib = JSON.parse(sh('node', [cli, 'config', 'get', '--json'])).scanMinRateMib;
  if (!(floorMib > 0)) throw new Error(`config get gave no scanMinRateMib: ${floorMib}`);

  const started = await request(sock, 'scan_start', { rateMib: MAX_SCAN_RATE_MIB }, COMMAND_TIMEOUT_MS);
  const paused = await request(sock, 'scan_pause', {}, COMMAND_TIMEOUT_MS);
  if (paused.state !== 'paused') throw new Error(`scan is ${paused.state} after scan_pause`);
  console.log(`device ${dev}: main ${MAIN_MIB} MiB (${DATA_MIB} MiB of data read by fio), scan pass ${started.pass} started at ${MAX_SCAN_RATE_MIB} MiB/s and paused at ${paused.position} bytes; floor ${floorMib} MiB/s`);
  console.log(`${rounds} rounds: A = 4k randread QD32 ${runtime} s, scan paused; B = the same, scan running`);

  const results = [];
  for (let r = 0; r < rounds; r++) {
    const pausedIops = await fioRandread(dev);
    const t0 = Date.now();
    const resumed = await request(sock, 'scan_resume', {}, COMMAND_TIMEOUT_MS);
    if (resumed.state !== 'running') throw new Error(`round ${r + 1}: scan is ${resumed.state} after scan_resume`);
    const samples = [];
    let polling = true;
    // A failed poll ends the polling; its error is thrown once fio is done (the run is not measured then).
    let pollError = null;
    const poller = (async () => {
      while (polling) {
        await sleep(POLL_MS);
        if (!polling) break;
        const s = await request(sock, 'scan', {}, COMMAND_TIMEOUT_MS);
        samples.push({ ms: Date.now() - t0, position: s.position, rateBps: s.rateBps, state: s.state });
      }
    })().catch((e) => (pollError = e));
    let scanningIops;
    try {
      scanningIops = await fioRandread(dev);
    } finally {
      polling = false;
      await poller;
    }
    if (pollError !== null) throw new Error(`round ${r + 1}: scan status poll failed: ${pollError instanceof Error ? pollError.message : String(pollError)}`);
    const after = await request(sock, 'scan_pause', {}, COMMAND_TIMEOUT_MS);
    const scanMs = Date.now() - t0;
    if (after.state !== 'paused') throw new Error(`round ${r + 1}: scan is ${after.state} after scan_pause (the pass must not finish during the bench)`);
    const round = {
      pausedIops,
      scanningIops,
      posBefore: resumed.position,
      posAfter: after.position,
      scanMs,
      rateBpsMedian: median(samples.map((s) => s.rateBps)),
      samples,
    };
    results.push(round);
    const w = loadWindow(samples, LOAD_FROM_MS, floorMib * MIB);
    const under = w === null || w.ms === 0 ? 'no load window' : `${(w.bytes / MIB / (w.ms / 1000)).toFixed(2)} MiB/s at the floor from ${LOAD_FROM_MS / 1000} s on`;
    console.log(
      `round ${r + 1}: A ${Math.round(pausedIops)} IOPS, B ${Math.round(scanningIops)} IOPS (${(scanningIops / pausedIops).toFixed(3)}); ` +
        `scan ${(round.posBefore / MIB).toFixed(0)} -> ${(round.posAfter / MIB).toFixed(0)} MiB in ${(scanMs / 1000).toFixed(1)} s ` +
        `(${((round.posAfter - round.posBefore) / MIB / (scanMs / 1000)).toFixed(2)} MiB/s; under load ${under}; ` +
        `its rate now, median of ${samples.length} polls: ${(round.rateBpsMedian / MIB).toFixed(2)} MiB/s)`,
    );
  }

  const s = summarise(results, { floorMib, targetRatio: TARGET_RATIO, loadFromMs: LOAD_FROM_MS });
  const loadText = s.loadMib === null ? 'no load window' : `${s.loadMib.toFixed(2)} MiB/s`;
  console.log(`\nmedian IOPS, scan paused:  ${Math.round(s.pausedIops)}`);
  console.log(`median IOPS, scan running: ${Math.round(s.scanningIops)}`);
  console.log(`ratio running/paused:      ${s.ratio.toFixed(3)} (target >= ${TARGET_RATIO})`);
  console.log(`scan rate during B:        ${s.scanMib.toFixed(2)} MiB/s resume to pause (lowest round ${s.scanMibMin.toFixed(2)}), ${loadText} under load (${s.loadWindows} runs' polls from ${LOAD_FROM_MS / 1000} s on, from the first at the floor); floor ${floorMib} MiB/s`);
  console.log(`${s.iopsPass ? 'PASS' : 'FAIL'}: IOPS with the scan running ${s.ratio.toFixed(3)} of paused (target >= ${TARGET_RATIO})`);
  console.log(`${s.ratePass === null ? 'NO DATA' : s.ratePass ? 'PASS' : 'FAIL'}: scan advanced at ${loadText} under load (floor ${floorMib} MiB/s)`);
  console.log(`BENCH_JSON ${JSON.stringify({
    kernel: os.release(), rounds, runtimeSec: runtime, mainMiB: MAIN_MIB, dataMiB: DATA_MIB, scanRateMib: MAX_SCAN_RATE_MIB, floorMib,
    targetRatio: TARGET_RATIO,
    summary: { pausedIops: Math.round(s.pausedIops), scanningIops: Math.round(s.scanningIops), ratio: Number(s.ratio.toFixed(3)), scanMib: Number(s.scanMib.toFixed(3)), scanMibMin: Number(s.scanMibMin.toFixed(3)), loadMib: s.loadMib === null ? null : Number(s.loadMib.toFixed(3)), loadFromMs: LOAD_FROM_MS, loadWindows: s.loadWindows, iopsPass: s.iopsPass, ratePass: s.ratePass, perRound: s.perRound },
    results,
  })}`);
} catch (e) {
  console.error(`scan bench could not run: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
} finally {
  if (dev) spawnSync('node', [cli, 'del', dev], { stdio: 'inherit' });
  for (const l of loops.reverse()) spawnSync('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
}

// Idle scan benchmark, run inside the VM as root (issue 13): the background scan's throughput on an IDLE
// device against fio's sequential reads of main itself (same VM, same backing device, rounds interleaved).
//
// One device (`add`) over loop devices in the guest's tmpfs: a 64 GiB sparse main whose first BENCH_SIZE_MIB
// (default 2048) are written (a random first 64 MiB, zeros after: written pages either way, read at the same
// cost; the rest are holes), a 64 MiB spare. Both A and B read from offset 0 forward, so for the same time
// they read the same part of main. BENCH_ROUNDS (default 3) rounds of BENCH_RUNTIME seconds (default 10):
//   A:  fio sequential read of main, bs=1M, direct=1, io_uring, QD1 (ramp 1 s): the baseline;
//   A2: the same with ioengine=psync (informational, no verdict): one blocking pread per MiB, which is how the
//       scanner's native reader reads (below);
//   B:  scan_start at the highest rate a pass may be given (MAX_SCAN_RATE_MIB, "no limit") on the idle ublk
//       device, its status (`scan`, what `scan status --json` prints) polled every POLL_MS, scan_stop after
//       BENCH_RUNTIME s.
// Why QD1: the scanner keeps one read in flight (src/scan/scanner.ts: while users are idle a tick reads runs
// of up to IDLE_RUN_CHUNKS 1 MiB chunks, one native call each, awaiting each), and native/scan_reader.cc reads
// a run with blocking preads of one chunk each, one after the other. So the scanner's depth is 1: QD1 is
// both the baseline the issue names and the scanner's own depth; A2 is its way of reading.
// The scan's MiB/s is from its own position over the poll times: steady = from the first poll at least
// STEADY_FROM_MS after scan_start (the rate starts at the floor, scan_min_rate_mib, and doubles every 100 ms
// interval while the device is idle) to the last; whole = from scan_start to the last poll, climb included.
// Reported: per round A, A2, B steady and whole, and the ratios steady/A and whole/A; the medians, and
// PASS/FAIL of the median steady/A ratio against 0.80. PASS/FAIL does not fail the process (a benchmark
// reports); it exits 1 only when it could not run. Ends with one line `BENCH_JSON <json>`.
// Measured in the TCG VM (6.12, 2 vCPUs) on a host busy with other work (fio itself varied 93-425 MiB/s
// between rounds, so the ratios are noisy): with one call per 1 MiB chunk (session 9) FAIL at 0.32-0.39, the
// scan 40-73 MiB/s, the call's fixed cost the bottleneck; with runs of 16 chunks, 1 MiB pieces and no pause
// between long ticks (session 10) the scan read 106-131 MiB/s (from 71) on that busy host, FAIL at a median
// 0.31 and 0.58 (rounds 0.25-1.30); once the host was quiet, PASS: 1.21 (3 rounds, 0.55-2.36) and 0.90 (5
// rounds, 0.63-1.09; the scan 365 MiB/s, fio 1M io_uring 398, fio psync 569).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sh } from './fio.mjs';
import { MIB, summariseIdle } from './scan-analysis.mjs';
import { request } from '../dist/control/client.js';
import { MAX_SCAN_RATE_MIB } from '../dist/scan/settings.js';
import { SCAN_CHUNK_BYTES, SCAN_INTERVAL_MS } from '../dist/scan/scanner.js';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cli = path.join(repo, 'bin', 'dmremap-ublk.js');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const runtime = Number(process.env.BENCH_RUNTIME ?? 10);
const dataMib = Number(process.env.BENCH_SIZE_MIB ?? 2048);
const RUN_DIR = process.env.DMREMAP_RUN_DIR ?? '/run/dmremap-ublk';
const TARGET_RATIO = 0.8;
const MAIN_MIB = 65536;
const RANDOM_MIB = 64;
const POLL_MS = 500;
/** The steady window starts at the first poll this long after scan_start: the climb from the floor is over by then. */
const STEADY_FROM_MS = 2000;
/** stop waits for the scan's read in flight (as the CLI's scan command allows). */
const COMMAND_TIMEOUT_MS = 120_000;
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`BENCH_ROUNDS must be a whole number >= 1, got ${process.env.BENCH_ROUNDS}`);
if (!Number.isFinite(runtime) || runtime < 4) throw new Error(`BENCH_RUNTIME must be a number of seconds >= 4, got ${process.env.BENCH_RUNTIME}`);
if (!Number.isInteger(dataMib) || dataMib < RANDOM_MIB || dataMib > MAIN_MIB) {
  throw new Error(`BENCH_SIZE_MIB must be a whole number of MiB from ${RANDOM_MIB} to ${MAIN_MIB}, got ${process.env.BENCH_SIZE_MIB}`);
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'dmremap-isbench-'));
const loops = [];
const loop = (f) => {
  const dev = sh('losetup', ['-f', '--show', '--direct-io=on', f]);
  loops.push(dev);
  return dev;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TICKS = Number(sh('getconf', ['CLK_TCK']));

/** CPU ticks (user + system) of each thread of `pid`, by "tid comm"; threads gone meanwhile are skipped. */
function threadTicks(pid) {
  const out = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    out.set(`${tid} ${comm}`, Number(f[11]) + Number(f[12]));
  }
  return out;
}

/** The whole guest's CPU ticks from /proc/stat: busy (all but idle and iowait) and total. */
function guestTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], total };
}

/** What the daemon's threads and the guest's CPUs did between two samples, one line. */
function cpuLine(before, after, ms) {
  const threads = [...after.threads].map(([k, t]) => [k, (t - (before.threads.get(k) ?? 0)) / TICKS / (ms / 1000)]).filter(([, u]) => u >= 0.02);
  threads.sort((a, b) => b[1] - a[1]);
  const ncpu = os.cpus().length;
  const busy = (after.guest.busy - before.guest.busy) / (after.guest.total - before.guest.total);
  return `daemon threads (CPU share of one vCPU): ${threads.map(([k, u]) => `${k} ${u.toFixed(2)}`).join(', ') || 'none >= 0.02'}; guest's ${ncpu} vCPUs ${(busy * 100).toFixed(0)}% busy`;
}
const cpuSample = (pid) => ({ threads: threadTicks(pid), guest: guestTicks() });

/** `count` sequential scan_read debug calls of `bytes` each from `offset` (scan stopped): MiB/s over their time. */
async function scanReadProbe(sock, offset, bytes, count) {
  const t0 = Date.now();
  for (let i = 0; i < count; i++) await request(sock, 'scan_read', { offset: offset + i * bytes, bytes }, COMMAND_TIMEOUT_MS);
  const ms = Date.now() - t0;
  return { mib: (count * bytes) / MIB / (ms / 1000), ms, count, bytes };
}

/** fio sequential read of `dev` from offset 0, `bs`, QD1, for `runtime` s; resolves with MiB/s and the MiB it read. */
function fioSeqRead(dev, bs, engine = 'io_uring') {
  const child = spawn('fio', [
    '--name=seqread', `--filename=${dev}`, '--direct=1', `--ioengine=${engine}`, '--rw=read', `--bs=${bs}`,
    '--iodepth=1', '--time_based', `--runtime=${runtime}`, '--ramp_time=1', '--output-format=json',
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0 || !out.includes('{')) return reject(new Error(`fio exited ${code}`));
      const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
      if (job.error !== 0) return reject(new Error(`fio reported error ${job.error}`));
      resolve({ mib: job.read.bw_bytes / MIB, readMib: job.read.io_bytes / MIB });
    });
  });
}

/** One scan run: scan_start, polls every POLL_MS for `runtime` s (or until it is no longer running), scan_stop. */
async function scanRun(sock, r, pid) {
  const cpu0 = cpuSample(pid);
  const t0 = Date.now();
  const started = await request(sock, 'scan_start', { rateMib: MAX_SCAN_RATE_MIB }, COMMAND_TIMEOUT_MS);
  if (started.state !== 'running') throw new Error(`round ${r}: scan is ${started.state} after scan_start`);
  const samples = [];
  let state = started.state;
  while (state === 'running' && Date.now() - t0 < runtime * 1000) {
    await sleep(POLL_MS);
    const s = await request(sock, 'scan', {}, COMMAND_TIMEOUT_MS);
    samples.push({ ms: Date.now() - t0, position: s.position, rateBps: s.rateBps, state: s.state });
    state = s.state;
  }
  const cpu = cpuLine(cpu0, cpuSample(pid), Date.now() - t0);
  // A pass that reached the end is done (nothing to stop); its last polls are not in the windows.
  const end = state === 'running' ? await request(sock, 'scan_stop', {}, COMMAND_TIMEOUT_MS) : null;
  if (end !== null && end.state !== 'idle') throw new Error(`round ${r}: scan is ${end.state} after scan_stop`);
  return { startPosition: started.position, samples, finished: state === 'done', cpu };
}

const f2 = (x) => (x === null ? 'n/a' : x.toFixed(2));
const f3 = (x) => (x === null ? 'n/a' : x.toFixed(3));

let dev;
try {
  const mainImg = path.join(dir, 'main.img');
  const spareImg = path.join(dir, 'spare.img');
  // Sparse: only the written part takes the guest's memory (its /tmp is a tmpfs of half of DMREMAP_VM_MEM).
  sh('truncate', ['-s', `${MAIN_MIB}M`, mainImg]);
  sh('dd', ['if=/dev/urandom', `of=${mainImg}`, 'bs=1M', `count=${RANDOM_MIB}`, 'conv=notrunc', 'status=none']);
  sh('dd', ['if=/dev/zero', `of=${mainImg}`, 'bs=1M', `seek=${RANDOM_MIB}`, `count=${dataMib - RANDOM_MIB}`, 'conv=notrunc', 'status=none']);
  sh('truncate', ['-s', '64M', spareImg]);
  const main = loop(mainImg);
  const spare = loop(spareImg);
  const added = JSON.parse(sh('node', [cli, 'add', '--main', main, '--spare', spare, '--queues', '2', '--json']));
  dev = added.blockPath;
  const sock = path.join(RUN_DIR, `${added.devId}.sock`);
  const floorMib = JSON.parse(sh('node', [cli, 'config', 'get', '--json'])).scanMinRateMib;
  const { maxIoBytes, pid } = await request(sock, 'status', {}, COMMAND_TIMEOUT_MS);
  console.log(`device ${dev} over main ${main}: ${MAIN_MIB} MiB (the first ${dataMib} MiB written), nothing else using it`);
  console.log(`${rounds} rounds of ${runtime} s: A = fio seq read of ${main} bs=1M direct=1 QD1; A2 = the same with psync (blocking preads, as the scanner's reader; informational); ` +
    `B = scan pass at ${MAX_SCAN_RATE_MIB} MiB/s (no limit; starts at the floor ${floorMib} MiB/s and doubles every interval), polled every ${POLL_MS} ms`);
  console.log(`QD1: the scanner has one read in flight (scanner.ts reads a tick's ${SCAN_CHUNK_BYTES / MIB} MiB chunks one after another, a tick every ${SCAN_INTERVAL_MS} ms; ` +
    `scan_reader.cc reads each with blocking preads of at most max-io = ${maxIoBytes / 1024} KiB), so its depth is 1, the same as the baseline's`);

  const results = [];
  for (let r = 1; r <= rounds; r++) {
    const fio1m = await fioSeqRead(main, '1M');
    const fioPsync = await fioSeqRead(main, '1M', 'psync');
    const scan = await scanRun(sock, r, pid);
    const round = { fioMib: fio1m.mib, fioReadMib: fio1m.readMib, fioPsyncMib: fioPsync.mib, ...scan };
    results.push(round);
    const p = summariseIdle([round], { targetRatio: TARGET_RATIO, steadyFromMs: STEADY_FROM_MS }).perRound[0];
    const last = scan.samples[scan.samples.length - 1];
    const reachMib = (last === undefined ? scan.startPosition : last.position) / MIB;
    const past = reachMib > dataMib || fio1m.readMib > dataMib ? ` (past the ${dataMib} MiB written: holes read)` : '';
    console.log(
      `round ${r}: A ${fio1m.mib.toFixed(2)} MiB/s (${fio1m.readMib.toFixed(0)} MiB), A2 psync ${fioPsync.mib.toFixed(2)} MiB/s; ` +
        `B ${f2(p.steadyMib)} MiB/s from ${STEADY_FROM_MS / 1000} s on, ${f2(p.wholeMib)} MiB/s from start (to ${reachMib.toFixed(0)} MiB in ${scan.samples.length} polls${scan.finished ? ', pass done' : ''})${past}; ` +
        `B/A ${f3(p.ratio)}, whole ${f3(p.wholeRatio)}`,
    );
    console.log(`round ${r}: during B, ${scan.cpu}`);
  }

  // Informational: the native read path alone (no scanner loop, no rate), one call at a time through the
  // scan_read debug command (its IPC included), 1 MiB calls (the scanner's chunk) and 16 MiB calls (the most
  // one call reads), over the written part; and fio 1M QD1 once more right after, for comparison.
  const probes = [];
  for (const [bytes, count] of [[MIB, 256], [16 * MIB, 16], [MIB, 256]]) {
    const c0 = cpuSample(pid);
    const pr = await scanReadProbe(sock, 0, bytes, count);
    probes.push({ ...pr, cpu: cpuLine(c0, cpuSample(pid), pr.ms) });
    console.log(`scan_read probe: ${count} calls of ${bytes / MIB} MiB: ${pr.mib.toFixed(2)} MiB/s (${(pr.ms / count).toFixed(1)} ms a call); ${probes[probes.length - 1].cpu}`);
  }
  const fioAfter = await fioSeqRead(main, '1M');
  console.log(`fio seq read 1M QD1 after the probes: ${fioAfter.mib.toFixed(2)} MiB/s`);

  const s = summariseIdle(results, { targetRatio: TARGET_RATIO, steadyFromMs: STEADY_FROM_MS });
  const fioPsyncMedian = [...results.map((r) => r.fioPsyncMib)].sort((a, b) => a - b)[Math.floor(results.length / 2)];
  console.log(`\nmedian fio seq read 1M QD1:   ${s.fioMib.toFixed(2)} MiB/s (psync 1M QD1: ${fioPsyncMedian.toFixed(2)} MiB/s)`);
  console.log(`median scan, idle:            ${f2(s.steadyMib)} MiB/s from ${STEADY_FROM_MS / 1000} s on (${s.windows} rounds with a window), ${f2(s.wholeMib)} MiB/s from scan_start`);
  console.log(`median ratio scan/fio:        ${f3(s.ratio)} (from scan_start: ${f3(s.wholeRatio)}; target >= ${TARGET_RATIO})`);
  console.log(`${s.pass === null ? 'NO DATA' : s.pass ? 'PASS' : 'FAIL'}: idle scan at ${f3(s.ratio)} of fio seq read 1M QD1 of main (target >= ${TARGET_RATIO})`);
  console.log(`BENCH_JSON ${JSON.stringify({
    kernel: os.release(), rounds, runtimeSec: runtime, mainMiB: MAIN_MIB, dataMiB: dataMib, scanRateMib: MAX_SCAN_RATE_MIB, floorMib,
    maxIoBytes, scanChunkBytes: SCAN_CHUNK_BYTES, scanIntervalMs: SCAN_INTERVAL_MS, fioJob: { rw: 'read', bs: '1M', iodepth: 1, direct: 1, ioengine: 'io_uring' }, targetRatio: TARGET_RATIO,
    summary: {
      fioMib: Number(s.fioMib.toFixed(3)), fioPsyncMib: Number(fioPsyncMedian.toFixed(3)),
      steadyMib: s.steadyMib === null ? null : Number(s.steadyMib.toFixed(3)), wholeMib: s.wholeMib === null ? null : Number(s.wholeMib.toFixed(3)),
      ratio: s.ratio === null ? null : Number(s.ratio.toFixed(3)), wholeRatio: s.wholeRatio === null ? null : Number(s.wholeRatio.toFixed(3)),
      steadyFromMs: STEADY_FROM_MS, windows: s.windows, pass: s.pass, perRound: s.perRound,
    },
    results,
    probes,
    fioAfterProbesMib: fioAfter.mib,
  })}`);
} catch (e) {
  console.error(`idle scan bench could not run: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
} finally {
  if (dev) spawnSync('node', [cli, 'del', dev], { stdio: 'inherit' });
  for (const l of loops.reverse()) spawnSync('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
}

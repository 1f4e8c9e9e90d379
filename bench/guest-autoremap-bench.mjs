// Auto-remap benchmark, run inside the VM as root (issue #6).
//
// One device over a main whose middle region fails every write (a device-mapper `error` segment). A reader
// (4k randread QD32 on healthy blocks) runs the whole time and logs its IOPS every second. Beside it a
// writer (4k randwrite QD8) runs in phases of BENCH_PHASE seconds, alternating:
//   - healthy: writes to a healthy region (the run with no errors);
//   - errors:  writes to a fresh part of the bad region, so that every write is the first one to a bad
//              block: an auto-remap (checked against the daemon's stats at the end).
// A healthy and an error phase run first as a warm-up and are not counted.
// The ratio compares the reader's IOPS during each error phase with the mean of the healthy phases just
// before and after it, so that the machine's own drift (large on a shared host under TCG) cancels out;
// the first second of each phase is left out (fio starting). Reported: the median of those ratios, and
// each of them. The writer's completion latency in the error phases is the time from a write error to
// the write's successful completion (fio clat p50/p99, median over the phases), beside the same writer's
// latency on healthy blocks.
// Prints a summary and one line `BENCH_JSON <json>`.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { median, sh } from './fio.mjs';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cli = path.join(repo, 'bin', 'dmremap-ublk.js');
const pairs = Number(process.env.BENCH_ROUNDS ?? 9); // error phases (each between two healthy ones)
const phaseSec = Number(process.env.BENCH_PHASE ?? 6);
const MiB = 1 << 20;
const SECT = 512;
const readMiB = 512;
// Each error phase writes its own part of the bad region, larger than a phase gets through.
const partMiB = Number(process.env.BENCH_PART_MIB ?? 12);
const badMiB = (pairs + 1) * partMiB; // part 0 for the warm-up
const healthyWriteMiB = 48;
const mainMiB = readMiB + badMiB + healthyWriteMiB;
const badStart = readMiB * MiB;
const healthyStart = (readMiB + badMiB) * MiB;

const dir = mkdtempSync(path.join(os.tmpdir(), 'dmremap-abench-'));
const loops = [];
const dms = [];
const loop = (name, mib) => {
  const f = path.join(dir, name);
  sh('truncate', ['-s', `${mib}M`, f]);
  const dev = sh('losetup', ['-f', '--show', '--direct-io=on', f]);
  loops.push(dev);
  return dev;
};

function dmMain(name, backing) {
  const s = (mib) => (mib * MiB) / SECT;
  const table = [
    `0 ${s(readMiB)} linear ${backing} 0`,
    `${s(readMiB)} ${s(badMiB)} error`,
    `${s(readMiB + badMiB)} ${s(healthyWriteMiB)} linear ${backing} ${s(readMiB + badMiB)}`,
  ].join('\n');
  sh('dmsetup', ['create', name, '--table', table]);
  sh('dmsetup', ['mknodes', name]);
  dms.push(name);
  return `/dev/mapper/${name}`;
}

const fioBase = (dev, rw, qd, offset, size, runtime) => [
  `--name=${rw}`, `--filename=${dev}`, '--direct=1', '--ioengine=io_uring', `--rw=${rw}`, '--bs=4k',
  `--iodepth=${qd}`, `--offset=${offset}`, `--size=${size}`, '--randrepeat=0', '--output-format=json',
  '--time_based', `--runtime=${runtime}`,
];

/** Runs fio; resolves with its JSON report. `stop` (optional) gets a function that ends a time-based run early (SIGINT: fio still reports). */
function runFio(args, stop) {
  const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let stopped = false;
  if (stop) stop(() => { stopped = true; child.kill('SIGINT'); });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  return new Promise((resolve, reject) =>
    child.on('close', (code) => {
      // Stopped by SIGINT, fio exits non-zero after writing its report.
      if (code === 0 || (stopped && out.includes('{'))) resolve(JSON.parse(out.slice(out.indexOf('{'))));
      else reject(new Error(`fio exited ${code}`));
    }),
  );
}

/** One writer phase; returns its time span (ms since the epoch) and the write side of fio's report. */
async function phase(dev, kind, i) {
  const offset = kind === 'errors' ? badStart + (i + 1) * partMiB * MiB : healthyStart;
  const size = (kind === 'errors' ? partMiB : healthyWriteMiB) * MiB;
  const start = Date.now();
  const job = (await runFio(fioBase(dev, 'randwrite', 8, offset, size, phaseSec))).jobs[0];
  const w = job.write;
  const pct = (p) => (w.clat_ns.percentile?.[p] ?? 0) / 1000;
  return { kind, start, end: Date.now(), ios: w.total_ios, errors: job.error ?? 0, p50us: pct('50.000000'), p99us: pct('99.000000') };
}

try {
  const main = dmMain('abench_main', loop('main.img', mainMiB));
  const spare = loop('spare.img', 512);
  const dev = sh('node', [cli, 'add', '--main', main, '--spare', spare, '--queues', '2', '--block-size', '4096']);
  const phases = [];
  let stats;
  let warmRemaps = 0;
  try {
    const logPrefix = path.join(dir, 'reader');
    let stopReader = () => {};
    const reader = runFio([
      ...fioBase(dev, 'randread', 32, 0, readMiB * MiB, 3600), '--norandommap',
      `--write_iops_log=${logPrefix}`, '--log_avg_msec=1000',
    ], (f) => (stopReader = f));
    await new Promise((r) => setTimeout(r, 3000)); // the reader is up
    // Warm-up, not counted: a healthy phase and an error phase (on part 0 of the bad region). The first
    // seconds after add are slower (the daemon's code paths compile, tmpfs allocates the written pages).
    const warm = [await phase(dev, 'healthy', 0), await phase(dev, 'errors', -1)];
    phases.push(await phase(dev, 'healthy', 0));
    for (let i = 0; i < pairs; i++) {
      phases.push(await phase(dev, 'errors', i));
      phases.push(await phase(dev, 'healthy', i + 1));
    }
    warmRemaps = warm[1].ios;
    if (warm.some((p) => p.errors !== 0)) throw new Error('fio saw write errors in the warm-up');
    stopReader();
    const report = await reader;
    // The reader's log times count from its job's start: its report's end time less its run time.
    const readerStart = report.timestamp_ms - report.jobs[0].read.runtime;
    stats = JSON.parse(sh('node', [cli, 'stats', dev, '--json']));
    // Reader IOPS per second: "<ms since its start>, <iops>, ...".
    const samples = readFileSync(`${logPrefix}_iops.1.log`, 'utf8').trim().split('\n').map((l) => l.split(',').map(Number))
      .map(([ms, iops]) => ({ t: readerStart + ms, iops }));
    for (const p of phases) {
      const inside = samples.filter((s) => s.t > p.start + 1500 && s.t <= p.end);
      p.readIops = inside.length > 0 ? inside.reduce((a, s) => a + s.iops, 0) / inside.length : NaN;
    }
  } finally {
    sh('node', [cli, 'del', dev]);
  }
  const errorPhases = phases.filter((p) => p.kind === 'errors');
  const healthyPhases = phases.filter((p) => p.kind === 'healthy');
  const remapWrites = errorPhases.reduce((a, p) => a + p.ios, 0) + warmRemaps;
  if (stats.autoRemaps !== remapWrites || errorPhases.some((p) => p.errors !== 0)) {
    throw new Error(`${remapWrites} writes to bad blocks, ${stats.autoRemaps} auto-remaps: not one auto-remap per write (or fio saw errors)`);
  }
  const ratios = phases.flatMap((p, i) =>
    p.kind === 'errors' ? [Number((p.readIops / ((phases[i - 1].readIops + phases[i + 1].readIops) / 2)).toFixed(3))] : [],
  );
  const errorWrites = remapWrites - warmRemaps;
  const seconds = errorPhases.reduce((a, p) => a + (p.end - p.start) / 1000, 0);
  const summary = {
    ratio: median(ratios),
    ratios,
    readIopsHealthy: Math.round(median(healthyPhases.map((p) => p.readIops))),
    readIopsDuringRemaps: Math.round(median(errorPhases.map((p) => p.readIops))),
    remapWriteP50us: Math.round(median(errorPhases.map((p) => p.p50us))),
    remapWriteP99us: Math.round(median(errorPhases.map((p) => p.p99us))),
    healthyWriteP50us: Math.round(median(healthyPhases.map((p) => p.p50us))),
    healthyWriteP99us: Math.round(median(healthyPhases.map((p) => p.p99us))),
    autoRemaps: stats.autoRemaps,
    remapsPerSecond: Math.round(errorWrites / seconds),
  };
  console.log(`\n4k randread QD32 on healthy blocks, during auto-remaps / with the same writer on healthy blocks: median ratio ${summary.ratio} (per error phase: ${ratios.join(', ')})`);
  console.log(`reader: ${summary.readIopsHealthy} IOPS (healthy phases), ${summary.readIopsDuringRemaps} IOPS (error phases), medians`);
  console.log(`write hitting a bad block, error to completion: p50 ${summary.remapWriteP50us} µs, p99 ${summary.remapWriteP99us} µs (healthy writes: p50 ${summary.healthyWriteP50us} µs, p99 ${summary.healthyWriteP99us} µs); ${summary.autoRemaps} auto-remaps, ${summary.remapsPerSecond}/s`);
  console.log(`BENCH_JSON ${JSON.stringify({ kernel: os.release(), pairs, phaseSec, summary, phases, stats })}`);
} finally {
  for (const d of dms) spawnSync('dmsetup', ['remove', d]);
  for (const l of loops.reverse()) spawnSync('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
}

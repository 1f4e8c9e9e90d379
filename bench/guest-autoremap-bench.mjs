// Auto-remap benchmark, run inside the VM as root (issue #6):
//  - 4k randread QD32 IOPS on healthy blocks of /dev/ublkbN while a QD8 4k randwrite job writes a region
//    that fails every write on main (a device-mapper `error` segment), so that each of its writes is an
//    auto-remap; against the same run with that writer on a healthy region (no errors). Both jobs run for
//    the same time window (BENCH_RUNTIME seconds), so the reader shares the machine with the writer for
//    the whole window in both runs. The bad region is larger than what the writer gets through in the
//    window and fio's random map writes each block once, so every write of the error run is a first write
//    to a bad block (checked against the daemon's stats). Interleaved rounds, median; ratio = with errors
//    / without.
//  - the latency of those writes, from submission to completion (fio clat p50/p99): the time from a write
//    error to the write's (successful) completion, with the same writer's latency on healthy blocks beside it.
// Prints a table and one line `BENCH_JSON <json>`.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { median, sh } from './fio.mjs';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cli = path.join(repo, 'bin', 'dmremap-ublk.js');
const rounds = Number(process.env.BENCH_ROUNDS ?? 5);
const runtime = Number(process.env.BENCH_RUNTIME ?? 20);
const MiB = 1 << 20;
const SECT = 512;
// Layout of the main (sectors): healthy reads region, then the bad region, then a healthy write region.
const readMiB = 512;
const badMiB = Number(process.env.BENCH_BAD_MIB ?? 48);
const mainMiB = readMiB + 2 * badMiB;

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
    `${s(readMiB + badMiB)} ${s(badMiB)} linear ${backing} ${s(readMiB + badMiB)}`,
  ].join('\n');
  sh('dmsetup', ['create', name, '--table', table]);
  sh('dmsetup', ['mknodes', name]);
  dms.push(name);
  return `/dev/mapper/${name}`;
}

function fioArgs(dev, o) {
  return [
    `--name=${o.rw}`, `--filename=${dev}`, '--direct=1', '--ioengine=io_uring', `--rw=${o.rw}`, '--bs=4k',
    `--iodepth=${o.qd}`, `--offset=${o.offset}`, `--size=${o.size}`, '--randrepeat=0', '--output-format=json',
    '--time_based', `--runtime=${runtime}`, ...(o.rw === 'randread' ? ['--norandommap'] : []),
  ];
}
const side = (out, rw) => {
  const j = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  return rw.includes('read') ? j.read : j.write;
};

/** Reader on healthy blocks, while a writer writes random blocks of [offset, offset + badMiB), for the same time. */
async function round(dev, writeOffset) {
  const writer = spawn('fio', fioArgs(dev, { rw: 'randwrite', qd: 8, offset: writeOffset, size: badMiB * MiB }), { stdio: ['ignore', 'pipe', 'inherit'] });
  let wout = '';
  writer.stdout.on('data', (d) => (wout += d));
  const wdone = new Promise((r) => writer.on('close', (code) => r(code)));
  const rout = sh('fio', fioArgs(dev, { rw: 'randread', qd: 32, offset: 0, size: readMiB * MiB }));
  const code = await wdone;
  if (code !== 0) throw new Error(`writer fio exited ${code}`);
  const r = side(rout, 'randread');
  const w = side(wout, 'randwrite');
  const pct = (p) => (w.clat_ns.percentile?.[p] ?? 0) / 1000;
  return {
    readIops: r.iops,
    writeIos: w.total_ios,
    writeErrors: w.error ?? 0,
    writeP50us: pct('50.000000'),
    writeP99us: pct('99.000000'),
    writeSeconds: w.runtime / 1000,
  };
}

try {
  const backing = loop('main.img', mainMiB);
  const main = dmMain('abench_main', backing);
  const res = { errors: [], healthy: [] };
  const stats = [];
  for (let r = 0; r < rounds; r++) {
    for (const kind of ['healthy', 'errors']) {
      const spare = loop(`spare-${r}-${kind}.img`, 256);
      const dev = sh('node', [cli, 'add', '--main', main, '--spare', spare, '--queues', '2', '--block-size', '4096']);
      try {
        const writeOffset = (kind === 'errors' ? readMiB : readMiB + badMiB) * MiB;
        const x = await round(dev, writeOffset);
        res[kind].push(x);
        if (kind === 'errors') {
          const st = JSON.parse(sh('node', [cli, 'stats', dev, '--json']));
          stats.push(st);
          if (st.autoRemaps !== x.writeIos || x.writeErrors !== 0) {
            throw new Error(`round ${r}: ${x.writeIos} writes, ${st.autoRemaps} auto-remaps, ${x.writeErrors} write errors: not one auto-remap per write`);
          }
        }
      } finally {
        sh('node', [cli, 'del', dev]);
      }
    }
  }
  const m = (kind, k) => median(res[kind].map((x) => x[k]));
  const ratio = Number((m('errors', 'readIops') / m('healthy', 'readIops')).toFixed(3));
  const summary = {
    readIopsHealthy: Math.round(m('healthy', 'readIops')),
    readIopsDuringRemaps: Math.round(m('errors', 'readIops')),
    ratio,
    remapWriteP50us: Math.round(m('errors', 'writeP50us')),
    remapWriteP99us: Math.round(m('errors', 'writeP99us')),
    healthyWriteP50us: Math.round(m('healthy', 'writeP50us')),
    healthyWriteP99us: Math.round(m('healthy', 'writeP99us')),
    remapsPerSecond: Math.round(m('errors', 'writeIos') / m('errors', 'writeSeconds')),
    roundRatios: res.errors.map((x, i) => Number((x.readIops / res.healthy[i].readIops).toFixed(3))),
  };
  console.log(`\n4k randread QD32 on healthy blocks: ${summary.readIopsHealthy} IOPS without errors, ${summary.readIopsDuringRemaps} IOPS during auto-remaps, ratio ${ratio} (rounds: ${summary.roundRatios.join(', ')})`);
  console.log(`write hitting a bad block, error to completion: p50 ${summary.remapWriteP50us} µs, p99 ${summary.remapWriteP99us} µs (healthy writes: p50 ${summary.healthyWriteP50us} µs, p99 ${summary.healthyWriteP99us} µs); ${summary.remapsPerSecond} auto-remaps/s`);
  console.log(`BENCH_JSON ${JSON.stringify({ kernel: os.release(), rounds, runtimeSec: runtime, badMiB, summary, rounds_: res, stats })}`);
} finally {
  for (const d of dms) spawnSync('dmsetup', ['remove', d]);
  for (const l of loops.reverse()) spawnSync('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
}

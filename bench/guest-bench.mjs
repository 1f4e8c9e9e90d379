// fio benchmark of /dev/ublkbN against the kernel loop device it sits on, run inside the VM as root.
//
// The main device is a loop device (direct I/O) over a file in tmpfs; the baseline is that same loop
// device. Every job runs on the baseline and on /dev/ublkbN, interleaved, for several rounds, so that
// drift in a noisy TCG VM hits both sides alike. Prints a table and one line `BENCH_JSON <json>`.
import { spawnSync } from 'node:child_process';
import { fio as runFio, median, sh } from './fio.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import os from 'node:os';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cli = path.join(repo, 'bin', 'dmremap-ublk.js');
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const runtime = Number(process.env.BENCH_RUNTIME ?? 8);
const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 512);

const jobs = [
  { name: '4k randread QD32', rw: 'randread', bs: '4k', iodepth: 32 },
  { name: '4k randwrite QD32', rw: 'randwrite', bs: '4k', iodepth: 32 },
  { name: '4k randread QD1', rw: 'randread', bs: '4k', iodepth: 1 },
  { name: '1M read QD8', rw: 'read', bs: '1m', iodepth: 8 },
  { name: '1M write QD8', rw: 'write', bs: '1m', iodepth: 8 },
];

const dir = mkdtempSync(path.join(os.tmpdir(), 'dmremap-bench-'));
const loops = [];
let ublk;
try {
  const mainImg = path.join(dir, 'main.img');
  const spareImg = path.join(dir, 'spare.img');
  // Fill main with data so reads move real pages, not tmpfs holes.
  sh('dd', ['if=/dev/urandom', `of=${mainImg}`, 'bs=1M', `count=${sizeMiB}`, 'status=none']);
  sh('truncate', ['-s', '64M', spareImg]);
  const main = sh('losetup', ['-f', '--show', '--direct-io=on', mainImg]);
  loops.push(main);
  const spare = sh('losetup', ['-f', '--show', '--direct-io=on', spareImg]);
  loops.push(spare);
  ublk = sh('node', [cli, 'add', '--main', main, '--spare', spare, '--queues', '2', '--depth', '128']);

  const results = jobs.map((job) => ({ job, base: [], ublk: [] }));
  for (let r = 0; r < rounds; r++) {
    for (const res of results) {
      res.base.push(runFio(main, res.job, runtime));
      res.ublk.push(runFio(ublk, res.job, runtime));
    }
  }
  const rows = results.map(({ job, base, ublk: u }) => {
    const b = median(base.map((x) => x.iops));
    const x = median(u.map((y) => y.iops));
    return {
      job: job.name,
      baselineIops: Math.round(b),
      ublkIops: Math.round(x),
      ratio: Number((x / b).toFixed(3)),
      baselineP99Us: Math.round(median(base.map((y) => y.p99us))),
      ublkP99Us: Math.round(median(u.map((y) => y.p99us))),
      rounds: { baseline: base, ublk: u },
    };
  });
  const pad = (s, n) => String(s).padEnd(n);
  console.log(`\n${pad('job', 20)}${pad('loop IOPS', 12)}${pad('ublk IOPS', 12)}${pad('ratio', 8)}${pad('loop p99us', 12)}ublk p99us`);
  for (const r of rows) {
    console.log(`${pad(r.job, 20)}${pad(r.baselineIops, 12)}${pad(r.ublkIops, 12)}${pad(r.ratio, 8)}${pad(r.baselineP99Us, 12)}${r.ublkP99Us}`);
  }
  const kernel = os.release();
  console.log(`BENCH_JSON ${JSON.stringify({ kernel, rounds, runtimeSec: runtime, sizeMiB, rows })}`);
} finally {
  if (ublk) spawnSync('node', [cli, 'del', ublk], { stdio: 'inherit' });
  for (const l of loops.reverse()) spawnSync('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
}

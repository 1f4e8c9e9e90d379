// Shared by the benchmarks: one fio job against a device, and the median of repeated runs.
import { execFileSync } from 'node:child_process';

export function sh(cmd, args) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

/** Runs one time-based fio job; returns IOPS and p99 completion latency (µs) of its read or write side. */
export function fio(dev, job, runtime) {
  const out = sh('fio', [
    `--name=${job.rw}`, `--filename=${dev}`, '--direct=1', '--ioengine=io_uring', `--rw=${job.rw}`,
    `--bs=${job.bs}`, `--iodepth=${job.iodepth}`, '--time_based', `--runtime=${runtime}`, '--ramp_time=1',
    '--randrepeat=0', '--norandommap', '--output-format=json',
  ]);
  const j = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = job.rw.includes('read') ? j.read : j.write;
  return { iops: side.iops, p99us: (side.clat_ns.percentile?.['99.000000'] ?? 0) / 1000 };
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

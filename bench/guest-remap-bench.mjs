// Remap-engine benchmark, run inside the VM as root (issue #2):
//  - 4k randread/randwrite QD32 IOPS of /dev/ublkbN whose table holds 100,000 remapped blocks spread over
//    an 8 GiB main, against the same main with an empty table (a second spare), interleaved, 3 rounds;
//  - time for `add` to come up with an empty table, 100k entries and 1M entries on the spare.
// The tables are written onto the spares beforehand with the project's own store (dist/remap), exactly as
// the daemon would find them. Prints a table and one line `BENCH_JSON <json>`.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fio, median, sh } from './fio.mjs';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cli = path.join(repo, 'bin', 'dmremap-ublk.js');
const { FileSpareIo, RemapStore, MAX_OPS_PER_RECORD } = await import(path.join(repo, 'dist/remap/index.js'));
const { mainIdentity } = await import(path.join(repo, 'dist/device/fingerprint.js'));
const { journalRecordsFor } = await import(path.join(repo, 'dist/device/remap-engine.js'));
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const runtime = Number(process.env.BENCH_RUNTIME ?? 8);
const BS = 512;

const dir = mkdtempSync(path.join(os.tmpdir(), 'dmremap-rbench-'));
const loops = [];
const loop = (name, mib, fill) => {
  const f = path.join(dir, name);
  if (fill) sh('dd', ['if=/dev/urandom', `of=${f}`, 'bs=1M', `count=${mib}`, 'status=none']);
  else sh('truncate', ['-s', `${mib}M`, f]);
  const dev = sh('losetup', ['-f', '--show', '--direct-io=on', f]);
  loops.push(dev);
  return dev;
};

/** Writes `n` remaps spread evenly over the main's blocks onto the spare, as the daemon would. */
async function populate(main, spare, n) {
  const size = BigInt(sh('blockdev', ['--getsize64', main]));
  const io = await FileSpareIo.open(spare);
  const { store } = await RemapStore.open(io, {
    main: mainIdentity(main, size),
    blockSize: BS,
    journalRecords: journalRecordsFor(Number(io.size)),
  });
  const blocks = Number(size / BigInt(BS));
  const stride = Math.floor(blocks / n);
  for (let i = 0; i < n; i += MAX_OPS_PER_RECORD) {
    const ops = [];
    for (let j = i; j < Math.min(n, i + MAX_OPS_PER_RECORD); j++) ops.push({ op: 'remap', block: j * stride, origin: 'manual' });
    await store.commitBatch(ops);
  }
  await store.compact();
  await store.idle();
  await io.close();
}

function add(main, spare) {
  const t0 = process.hrtime.bigint();
  const dev = sh('node', [cli, 'add', '--main', main, '--spare', spare, '--queues', '2']);
  return { dev, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}
const del = (dev) => sh('node', [cli, 'del', dev]);

try {
  // An 8 GiB main (a sparse file: only what fio writes takes memory) so that 100,000 remapped blocks are
  // spread as they would be on a real disk (0.6% of blocks) rather than packed into a small device.
  const main = loop('main.img', 8192, false);
  const spareEmpty = loop('spare-empty.img', 96, false);
  const spareFull = loop('spare-100k.img', 96, false);
  await populate(main, spareFull, 100_000);

  const jobs = [
    { name: '4k randread QD32', rw: 'randread', bs: '4k', iodepth: 32 },
    { name: '4k randwrite QD32', rw: 'randwrite', bs: '4k', iodepth: 32 },
  ];
  const res = jobs.map((job) => ({ job, empty: [], full: [] }));
  const addMs = { empty: [], full100k: [] };
  for (let r = 0; r < rounds; r++) {
    for (const [key, spare, into] of [['empty', spareEmpty, 'empty'], ['full100k', spareFull, 'full']]) {
      const { dev, ms } = add(main, spare);
      addMs[key].push(ms);
      for (const x of res) x[into].push(fio(dev, x.job, runtime).iops);
      del(dev);
    }
  }

  // 1M entries spread over the same main; load time only.
  const spare1m = loop('spare-1m.img', 600, false);
  const t0 = process.hrtime.bigint();
  await populate(main, spare1m, 1_048_576);
  const populateMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const load1m = [];
  for (let r = 0; r < 2; r++) {
    const { dev, ms } = add(main, spare1m);
    load1m.push(ms);
    del(dev);
  }

  const rows = res.map(({ job, empty, full }) => ({
    job: job.name,
    emptyIops: Math.round(median(empty)),
    remapped100kIops: Math.round(median(full)),
    ratio: Number((median(full) / median(empty)).toFixed(3)),
    rounds: { empty, full },
  }));
  const pad = (s, n) => String(s).padEnd(n);
  console.log(`\n${pad('job', 20)}${pad('empty IOPS', 12)}${pad('100k IOPS', 12)}ratio`);
  for (const r of rows) console.log(`${pad(r.job, 20)}${pad(r.emptyIops, 12)}${pad(r.remapped100kIops, 12)}${r.ratio}`);
  const addSummary = {
    emptyMs: Math.round(median(addMs.empty)),
    remapped100kMs: Math.round(median(addMs.full100k)),
    remapped1MMs: Math.round(median(load1m)),
    populate1MMs: Math.round(populateMs),
  };
  console.log(`add (until the device is live): empty table ${addSummary.emptyMs} ms, 100k entries ${addSummary.remapped100kMs} ms, 1M entries ${addSummary.remapped1MMs} ms`);
  console.log(`BENCH_JSON ${JSON.stringify({ kernel: os.release(), rounds, runtimeSec: runtime, rows, add: addSummary })}`);
} finally {
  spawnSync('node', [cli, 'list', '--json'], { encoding: 'utf8' });
  for (const l of loops.reverse()) spawnSync('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
}

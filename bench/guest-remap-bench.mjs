// Remap-engine benchmark, run inside the VM as root (issue #2):
//  - 4k randread/randwrite QD32 IOPS of /dev/ublkbN whose table holds 100,000 remapped blocks spread over
//    an 8 GiB main, against the same main with an empty table (a second spare), interleaved, 3 rounds;
//  - time for `add` to come up with an empty table, 100k entries and 1M entries on the spare;
//  - whole-disk spares (issue 11): `add` until live with a 1 TiB sparse spare against a 64 MiB one (empty
//    table), 1M entries on a 1 TiB spare against 1M entries on a 600 MiB one, and the daemon's VmRSS with
//    the 1 TiB and the 64 MiB spare (empty table); each with its ratio to the baseline beside it.
// BENCH_REMAP_CASES=bigspare runs only the whole-disk spare cases.
// The tables are written onto the spares beforehand with the project's own store (dist/remap), exactly as
// the daemon would find them. Prints a table and one line `BENCH_JSON <json>`.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
const cases = process.env.BENCH_REMAP_CASES ?? 'all';
if (!['all', 'bigspare'].includes(cases)) throw new Error(`BENCH_REMAP_CASES must be all or bigspare, got ${cases}`);

const dir = mkdtempSync(path.join(os.tmpdir(), 'dmremap-rbench-'));
const loops = [];
const loop = (name, mib, fill) => {
  const f = path.join(dir, name);
  if (fill) sh('dd', ['if=/dev/urandom', `of=${f}`, 'bs=1M', `count=${mib}`, 'status=none']);
  // truncate takes the size as text: no 32-bit limit (a 1 TiB sparse file is 1048576M).
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
  // 32 records per commit: one write and one flush each (the journal stays bounded; compaction when full).
  const batch = 32 * MAX_OPS_PER_RECORD;
  for (let i = 0; i < n; i += batch) {
    const ops = [];
    for (let j = i; j < Math.min(n, i + batch); j++) ops.push({ op: 'remap', block: j * stride, origin: 'manual' });
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

/** add --json: the device and the daemon's pid, and how long until it was live. */
function addJson(main, spare) {
  const t0 = process.hrtime.bigint();
  const out = JSON.parse(sh('node', [cli, 'add', '--main', main, '--spare', spare, '--queues', '2', '--json']));
  return { dev: out.blockPath, pid: out.pid, ms: Number(process.hrtime.bigint() - t0) / 1e6 };
}

/**
 * VmRSS of a process in MiB (/proc/<pid>/status), and VmPin: the pages io_uring pinned for the queues'
 * registered I/O buffers (queues x depth x max I/O), which count in VmRSS whatever the spare.
 */
function memMiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (m === null) throw new Error(`no ${name} for pid ${pid}`);
    return Number(m[1]) / 1024;
  };
  return { rss: field('VmRSS'), pin: field('VmPin') };
}

const ratio = (x, base) => Number((x / base).toFixed(3));

/**
 * Whole-disk spares: add until live and daemon RSS (empty table) with a 1 TiB sparse spare against a
 * 64 MiB one, alternating, `rounds` times after one formatting add each; 1M entries on a 1 TiB spare
 * against 1M entries on a 600 MiB spare (the size this benchmark always used), 2 adds each.
 */
async function bigSpare(main) {
  const small = loop('spare-64m.img', 64, false);
  const big = loop('spare-1t.img', 1024 * 1024, false);
  const formatMs = {};
  for (const [key, spare] of [['spare64M', small], ['spare1T', big]]) {
    const a = addJson(main, spare);
    formatMs[key] = Math.round(a.ms);
    del(a.dev);
  }
  const m = { spare64M: { ms: [], rss: [], pin: [] }, spare1T: { ms: [], rss: [], pin: [] } };
  for (let r = 0; r < rounds; r++) {
    for (const [key, spare] of [['spare64M', small], ['spare1T', big]]) {
      const a = addJson(main, spare);
      m[key].ms.push(a.ms);
      const mem = memMiB(a.pid);
      m[key].rss.push(mem.rss);
      m[key].pin.push(mem.pin);
      del(a.dev);
    }
  }
  const spare600 = loop('spare-600m.img', 600, false);
  const big1m = loop('spare-1t-1m.img', 1024 * 1024, false);
  const populateMs = {};
  const load1m = { spare600M: [], spare1T: [] };
  for (const [key, spare] of [['spare600M', spare600], ['spare1T', big1m]]) {
    const t0 = process.hrtime.bigint();
    await populate(main, spare, 1_048_576);
    populateMs[key] = Math.round(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  for (let r = 0; r < 2; r++) {
    for (const [key, spare] of [['spare600M', spare600], ['spare1T', big1m]]) {
      const a = addJson(main, spare);
      load1m[key].push(a.ms);
      del(a.dev);
    }
  }
  const out = {
    emptyAddMs: { spare64M: Math.round(median(m.spare64M.ms)), spare1T: Math.round(median(m.spare1T.ms)) },
    emptyAddRatio: ratio(median(m.spare1T.ms), median(m.spare64M.ms)),
    formattingAddMs: formatMs,
    rssMiB: { spare64M: Number(median(m.spare64M.rss).toFixed(1)), spare1T: Number(median(m.spare1T.rss).toFixed(1)) },
    rssRatio: ratio(median(m.spare1T.rss), median(m.spare64M.rss)),
    pinnedMiB: { spare64M: Number(median(m.spare64M.pin).toFixed(1)), spare1T: Number(median(m.spare1T.pin).toFixed(1)) },
    rssUnpinnedMiB: {
      spare64M: Number((median(m.spare64M.rss) - median(m.spare64M.pin)).toFixed(1)),
      spare1T: Number((median(m.spare1T.rss) - median(m.spare1T.pin)).toFixed(1)),
    },
    entries1MAddMs: { spare600M: Math.round(median(load1m.spare600M)), spare1T: Math.round(median(load1m.spare1T)) },
    entries1MRatio: ratio(median(load1m.spare1T), median(load1m.spare600M)),
    populate1MMs: populateMs,
    rounds: { emptyMs: m, load1m },
  };
  console.log('\nwhole-disk spare          baseline          1 TiB spare       ratio');
  const row = (what, base, big, r) => console.log(`${what.padEnd(26)}${String(base).padEnd(18)}${String(big).padEnd(18)}${r}`);
  row('add, empty table (ms)', `${out.emptyAddMs.spare64M} (64 MiB)`, out.emptyAddMs.spare1T, out.emptyAddRatio);
  row('daemon VmRSS, empty (MiB)', `${out.rssMiB.spare64M} (64 MiB)`, out.rssMiB.spare1T, out.rssRatio);
  row('  of which VmPin (MiB)', `${out.pinnedMiB.spare64M}`, out.pinnedMiB.spare1T, ratio(out.pinnedMiB.spare1T, out.pinnedMiB.spare64M));
  row('  VmRSS - VmPin (MiB)', `${out.rssUnpinnedMiB.spare64M}`, out.rssUnpinnedMiB.spare1T, ratio(out.rssUnpinnedMiB.spare1T, out.rssUnpinnedMiB.spare64M));
  row('add, 1M entries (ms)', `${out.entries1MAddMs.spare600M} (600 MiB)`, out.entries1MAddMs.spare1T, out.entries1MRatio);
  console.log(`first add (formats): 64 MiB ${formatMs.spare64M} ms, 1 TiB ${formatMs.spare1T} ms`);
  return out;
}

try {
  // An 8 GiB main (a sparse file: only what fio writes takes memory) so that 100,000 remapped blocks are
  // spread as they would be on a real disk (0.6% of blocks) rather than packed into a small device.
  const main = loop('main.img', 8192, false);
  const whole = await bigSpare(main);
  if (cases === 'bigspare') {
    console.log(`BENCH_JSON ${JSON.stringify({ kernel: os.release(), rounds, cases, bigSpare: whole })}`);
    process.exit(0);
  }
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

  // 1M entries spread over the same main on a 600 MiB spare: measured by bigSpare() above (its baseline).

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
    remapped1MMs: whole.entries1MAddMs.spare600M,
    populate1MMs: whole.populate1MMs.spare600M,
  };
  console.log(`add (until the device is live): empty table ${addSummary.emptyMs} ms, 100k entries ${addSummary.remapped100kMs} ms, 1M entries ${addSummary.remapped1MMs} ms`);
  console.log(`BENCH_JSON ${JSON.stringify({ kernel: os.release(), rounds, runtimeSec: runtime, rows, add: addSummary, bigSpare: whole })}`);
} finally {
  spawnSync('node', [cli, 'list', '--json'], { encoding: 'utf8' });
  for (const l of loops.reverse()) spawnSync('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
}

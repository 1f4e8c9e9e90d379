// Recovery benchmark, run inside the VM as root (issue 12): how long a kill -9 of the daemon stalls the
// device's users when the supervisor recovers it.
//
// One device (`add`, so under a supervisor) over loop devices. A reader (fio 4k randread QD16, stopped
// with SIGINT 3 s after the last round)
// logs every completed I/O with its completion time (--write_lat_log, --log_unix_epoch: wall-clock ms).
// BENCH_ROUNDS times (default 10), BENCH_SPACING seconds apart (default 16: the supervisor gives up after 5
// crashes within 60 s, so kills closer than 15 s would end the run), the daemon is killed with SIGKILL.
// For each kill, from the reader's log:
//   - recoveryMs: time from the kill to the first I/O completed after the stall. The stall is the longest
//     gap between two consecutive completions after the kill and before the next kill (not a fixed 30 s
//     window, which took in the next kill's stall when that one was longer); its end is the first
//     completion served by the new daemon (requests the dead one held are reissued to it). Completions
//     reaped just after the kill (the dead daemon had completed them; QD16) end before the stall and are
//     not taken for it.
//   - stallMs: the stall itself (last completion before it to the first after), which needs no common
//     clock; clockSkewMs = stall start - kill time checks the common clock: fio stamps completions with its
//     own clock (forced to clock_gettime here: its default TSC-based one drifts under TCG), the kill is
//     stamped with Date.now(); the stall cannot start long after the kill, nor before it.
//   - the IOPS dip: completions per 100 ms bin in the 2 s before the kill (baseline, mean) and the 2 s
//     after it (mean and the lowest bin); dipMs: time in 100 ms bins below half the baseline between the
//     kill and the next one.
// Also reported: when the new daemon answered `status` (servedMs, polled every 50 ms over the control
// socket), and the phase breakdown of each recovery from the daemon log (DMREMAP_LOG_LEVEL=debug for the
// device): process start (or, for a warm standby, when it was told), modules imported, main and spare
// claimed, remap table loaded, first queue started (after START_USER_RECOVERY), device live (after
// END_USER_RECOVERY and the control socket), in ms after the kill. Prints a summary and one line
// `BENCH_JSON <json>`.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { median, sh } from './fio.mjs';
import { analyse, finite } from './recovery-analysis.mjs';
import { request } from '../dist/control/client.js';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const cli = path.join(repo, 'bin', 'dmremap-ublk.js');
const rounds = Number(process.env.BENCH_ROUNDS ?? 10);
const spacingSec = Number(process.env.BENCH_SPACING ?? 16);
const RUN_DIR = process.env.DMREMAP_RUN_DIR ?? '/run/dmremap-ublk';

const dir = mkdtempSync(path.join(os.tmpdir(), 'dmremap-rbench-'));
const loops = [];
const loop = (name, mib) => {
  const f = path.join(dir, name);
  sh('truncate', ['-s', `${mib}M`, f]);
  const dev = sh('losetup', ['-f', '--show', '--direct-io=on', f]);
  loops.push(dev);
  return dev;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function statusOf(sock) {
  try {
    return await request(sock, 'status', {}, 1000);
  } catch {
    return null;
  }
}

/** The phases of each recovery in the daemon's log (pino JSON lines), in ms after the kill at `t`. */
function phases(logLines, kills) {
  const recs = logLines.map((l) => {
    try {
      return JSON.parse(l);
    } catch {
      return null;
    }
  }).filter((r) => r !== null);
  return kills.map(({ t, newPid }) => {
    const mine = recs.filter((r) => r.pid === newPid);
    const first = (msg) => mine.find((r) => r.msg === msg);
    const at = (r, field) => (r === undefined ? null : (field === undefined ? r.time : Date.parse(r[field])) - t);
    const rec = first('recovering the device');
    return {
      start: rec === undefined ? null : rec.standbyRequestedAt !== null ? at(rec, 'standbyRequestedAt') : at(rec, 'processStartedAt'),
      warmStandby: rec === undefined ? null : rec.standbyRequestedAt !== null,
      modulesImported: rec?.standbyRequestedAt !== null ? null : at(rec, 'modulesImportedAt'),
      recovering: at(rec),
      claimed: at(first('starting device')),
      tableLoaded: at(first('remap table loaded')),
      firstQueueStarted: at(first('queue started')),
      live: at(first('device live')),
    };
  });
}

let dev;
try {
  const main = loop('main.img', 1024);
  const spare = loop('spare.img', 64);
  const logFile = path.join(dir, 'daemon.log');
  process.env.DMREMAP_LOG_LEVEL = 'debug';
  const added = JSON.parse(sh('node', [cli, 'add', '--main', main, '--spare', spare, '--log-file', logFile, '--json']));
  delete process.env.DMREMAP_LOG_LEVEL;
  dev = added.blockPath;
  const sock = path.join(RUN_DIR, `${added.devId}.sock`);
  const logPrefix = path.join(dir, 'reader');
  const fio = spawn('fio', [
    '--name=reader', `--filename=${dev}`, '--direct=1', '--ioengine=io_uring', '--rw=randread', '--bs=4k', '--iodepth=16',
    '--norandommap', '--randrepeat=0', '--time_based', '--runtime=3600', '--output-format=json', '--clocksource=clock_gettime',
    `--write_lat_log=${logPrefix}`, '--log_avg_msec=0', '--log_unix_epoch=1',
  ], { stdio: ['ignore', 'pipe', 'inherit'], cwd: dir });
  let out = '';
  fio.stdout.on('data', (d) => (out += d));
  const fioDone = new Promise((resolve) => fio.on('close', (code) => resolve(code)));
  let fioExited = false;
  fio.on('close', () => (fioExited = true));
  await sleep(5000);
  const kills = [];
  for (let i = 0; i < rounds; i++) {
    const st = await statusOf(sock);
    if (st === null) throw new Error(`round ${i}: the daemon does not answer`);
    const t = Date.now();
    process.kill(st.pid, 'SIGKILL');
    let servedMs = null;
    let newPid = null;
    for (;;) {
      const now = await statusOf(sock);
      if (now !== null && now.pid !== st.pid) {
        servedMs = Date.now() - t;
        newPid = now.pid;
        break;
      }
      if (Date.now() - t > 60_000) throw new Error(`round ${i}: not served again within 60 s`);
      await sleep(50);
    }
    kills.push({ t, oldPid: st.pid, newPid, servedMs });
    await sleep(Math.max(0, spacingSec * 1000 - (Date.now() - t)));
  }
  // The reader runs until told to stop (SIGINT: fio writes its report and exits), 3 s after the last round.
  await sleep(3000);
  if (fioExited) throw new Error('fio ended before the last round');
  const fioStoppedAt = Date.now(); // the last kill's window ends here (the reader completes I/O until told)
  fio.kill('SIGINT');
  const code = await fioDone;
  if (!out.includes('{')) throw new Error(`fio exited ${code} without a report`);
  const report = JSON.parse(out.slice(out.indexOf('{')));
  const errors = report.jobs[0].error;
  if (errors !== 0) throw new Error(`fio exited ${code} with error ${errors}`);
  // The completion latency log: "<epoch ms>, <clat ns>, <dir>, <bs>, <offset>...".
  const clat = readdirSync(dir).find((n) => n.startsWith('reader_clat') && n.endsWith('.log'));
  const times = readFileSync(path.join(dir, clat), 'utf8').split('\n').filter((l) => l !== '').map((l) => Number(l.slice(0, l.indexOf(','))));
  times.sort((a, b) => a - b);
  const phaseList = phases(readFileSync(logFile, 'utf8').split('\n'), kills);
  const results = kills.map((k, i) => ({ ...k, ...analyse(times, k.t, kills[i + 1]?.t ?? fioStoppedAt), phases: phaseList[i] }));
  // A kill with no completion before the next kill (or the end) has no recoveryMs: it did not recover within
  // the spacing. It is not left out quietly: the summary counts it, the medians are over the rest, and the
  // bench fails (a median over the kills that recovered would hide the one that did not).
  const rec = results.map((r) => r.recoveryMs).filter((v) => Number.isFinite(v));
  const unrecovered = results.map((r, i) => (Number.isFinite(r.recoveryMs) ? null : i + 1)).filter((i) => i !== null);
  const summary = {
    kills: rounds,
    unrecoveredKills: unrecovered,
    recoveryMsMedian: median(rec),
    recoveryMsMax: Math.max(...rec),
    stallMsMedian: median(finite(results.map((r) => r.stallMs))),
    clockSkewMsMax: Math.max(...finite(results.map((r) => r.clockSkewMs)).map(Math.abs)),
    servedMsMedian: median(finite(results.map((r) => r.servedMs))),
    iopsMinBinMedian: median(finite(results.map((r) => r.iopsMinBin))),
    dipMsMedian: median(finite(results.map((r) => r.dipMs))),
    phasesMedian: Object.fromEntries(Object.keys(phaseList[0] ?? {}).filter((k) => k !== 'warmStandby').map((k) => [k, median(phaseList.map((p) => p[k]).filter((v) => v !== null))])),
    warmStandbyRecoveries: phaseList.filter((p) => p.warmStandby === true).length,
    iopsBeforeMedian: median(finite(results.map((r) => r.iopsBefore))),
    iopsAfter2sMedian: median(finite(results.map((r) => r.iopsAfter2s))),
    fioErrors: errors,
    readIops: Math.round(report.jobs[0].read.iops),
  };
  console.log(`\nkill -9 of the daemon under 4k randread QD16, ${rounds} kills ${spacingSec} s apart, supervisor recovering:`);
  console.log(`kill to first completed I/O after recovery: median ${summary.recoveryMsMedian} ms, max ${summary.recoveryMsMax} ms (per kill: ${rec.join(', ')})`);
  console.log(`stall (no completion, no common clock needed): median ${summary.stallMsMedian} ms; largest |stall start - kill| ${summary.clockSkewMsMax} ms`);
  console.log(`new daemon answering status: median ${summary.servedMsMedian} ms after the kill`);
  console.log(`reader IOPS (100 ms bins): ${summary.iopsBeforeMedian} in the 2 s before a kill, ${summary.iopsAfter2sMedian} in the 2 s after, lowest bin ${summary.iopsMinBinMedian}; below half the baseline for ${summary.dipMsMedian} ms (medians); fio errors ${errors}`);
  console.log(`recovery phases, ms after the kill (medians; ${summary.warmStandbyRecoveries}/${rounds} by a warm standby): ${JSON.stringify(summary.phasesMedian)}`);
  if (unrecovered.length > 0) {
    console.log(`NOT RECOVERED: kill(s) ${unrecovered.join(', ')} of ${rounds} had no completed I/O before the next kill; the medians above leave them out`);
    process.exitCode = 1;
  }
  console.log(`BENCH_JSON ${JSON.stringify({ kernel: os.release(), rounds, spacingSec, summary, kills: results.map(({ t, ...r }) => r) })}`);
} finally {
  if (dev) spawnSync('node', [cli, 'del', dev], { stdio: 'inherit' });
  for (const l of loops.reverse()) spawnSync('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
}

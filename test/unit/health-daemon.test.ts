// The health model wired into the daemon (issue 14), against the fake addon: events recorded where the
// daemon decides them (once each), the series kept across restarts in the state directory, a file that
// cannot be used reported and left alone until `health reset`, one function behind the status line,
// status --json, stats and `health`, the alert command, and the CLI's `health` command and its bad input.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import type { DeviceConfig } from '../../src/device/config.js';
import { Daemon } from '../../src/device/daemon.js';
import { DeviceHealth } from '../../src/device/device-health.js';
import { main } from '../../src/cli/main.js';
import { createLogger, type Logger } from '../../src/log.js';
import { DAY_MS } from '../../src/health/series.js';
import { DEFAULT_HEALTH_SETTINGS, healthFilePath, loadHealth, type SpareGauge } from '../../src/health/index.js';
import type { HealthNotice } from '../../src/device/health-events.js';
import type { NativeEvent } from '../../src/native.js';
import type { CommittedOp } from '../../src/remap/index.js';
import type { RemapEntry } from '../../src/remap/table.js';
import type { FakeDevice, FakeNative } from '../../src/testing/fake-native.js';
import { stateDir } from '../../src/paths.js';
import { readEntryOf, writeEntry, type RegistryEntryV2 } from '../../src/control/registry.js';
import { captureCtx, DEAD_PID, deviceConfig, fakeFor, makeWorld, quietLog, RECOVERY_FEATURES, waitFor, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;
let seq = 0;

type Fault = Extract<NativeEvent, { type: 'io_fault' }>;
const start = async (over: Partial<DeviceConfig> = {}, log: Logger = quietLog()): Promise<Daemon> => {
  daemon = await Daemon.start(deviceConfig(w, { alertCommand: null, ...over }), { native, runDir: w.runDir, log, logFile: null });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
  return daemon;
};
const stop = async (): Promise<void> => {
  await daemon?.shutdown('test');
  daemon = null;
};
const device = (): FakeDevice => native.devices.at(-1) as FakeDevice;
const health = (history = false) => request(sock, 'health', history ? { history: true } : {});
const pairId = (): string => (daemon?.['engine']?.store.pairId as string);
const healthFile = (): string => healthFilePath(stateDir(), pairId());
/** The day's counts of the series (every event in these tests happens today). */
const today = async () => {
  const h = await health(true);
  const days = h.history ?? [];
  expect(days.length).toBe(1);
  return days[0]!.counts;
};
function fault(over: Partial<Fault> & Pick<Fault, 'op' | 'failed'>): Fault {
  return { type: 'io_fault', queue: 0, tag: 1, seq: ++seq, kind: 'error', block: 0, blocks: 1, attempt: 0, latencyUs: 100, written: [], ...over };
}
const resolution = (f: { tag: number; seq: number }, timeoutMs = 3000) => device().awaitResolution(f, timeoutMs);
/** A log written to a file of the world, read back as JSON lines. */
function fileLog(): { log: Logger; lines: () => Array<Record<string, unknown>> } {
  const file = path.join(w.root, 'daemon.log');
  return {
    log: createLogger({ level: 'info', file }),
    lines: () => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : []),
  };
}
async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const c = captureCtx(w, native);
  const code = await main(args, c.ctx);
  return { code, out: c.stdout(), err: c.stderr() };
}

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = null;
});
afterEach(async () => {
  await stop();
  w.cleanup();
});

describe('health in the daemon', () => {
  it('a fresh device is healthy, score >= 90, no forecast; status, its line, stats and health say the same', async () => {
    await start();
    const h = await health();
    expect(h).toMatchObject({ state: 'healthy', reasons: [], recordError: null, device: daemon?.info.blockPath, name: 'data' });
    expect(h.score).toBeGreaterThanOrEqual(90);
    expect(h.forecast).toEqual({ spareExhaustionSeconds: null, range: null, acceleration: false, ratePerDay: 0 });
    const s = await request(sock, 'status', {});
    expect(s.health).toMatchObject({ state: 'healthy', score: h.score });
    expect(s.remap.health).toBe('healthy');
    expect(s.remap.line).toContain(' health=healthy ');
    expect((await request(sock, 'stats', {})).health).toBe('healthy');
    const human = await run('status', 'data');
    expect(human.out).toContain(`\n  health healthy, score ${h.score}: no new bad block and no error in the watch window (dmremap-ublk health data)\n`);
  });

  it('records each new remap-table entry once, by origin; a lost one of auto or scan origin is also pending', async () => {
    await start();
    // manual
    await request(sock, 'remap', { sector: 8 });
    // auto: a failed write redirected, then committed once its data is in the slot
    const f1 = fault({ op: 'write', block: 3, failed: [{ device: 'main', block: 3, blocks: 1, errno: 5 }] });
    device().emit(f1);
    expect(await resolution(f1)).toEqual({ action: 'retry' });
    const f2 = { ...f1, attempt: 1, kind: 'lost_written' as const, failed: [], written: device().writtenRanges(3, 1) };
    device().emit(f2);
    expect(await resolution(f2)).toEqual({ action: 'complete' });
    // scan: a block the scan could not read, marked pending
    const engine = daemon?.['engine'];
    if (!engine) throw new Error('no engine');
    await engine.markLost([{ block: 20, slotFailed: false, errorCount: 1, origin: 'scan' }]);
    const c = await today();
    expect(c).toMatchObject({ badAuto: 1, badScan: 1, badManual: 1, pending: 1, writeErrors: 1, readErrors: 0 });
    const h = await health();
    expect(h.state).toBe('degraded'); // a block lost now
    expect(h.reasons.map((r) => r.signal)).toEqual(expect.arrayContaining(['lost_blocks', 'new_bad_blocks', 'pending_blocks', 'write_errors']));
    expect((await request(sock, 'status', {})).remap.line).toContain(' health=degraded ');
  });

  it('errors on main count once per failed range (not per retry), on the spare per failure, recovered reads once', async () => {
    await start();
    const f = fault({ op: 'read', block: 40, failed: [{ device: 'main', block: 40, blocks: 1, errno: 5 }] });
    device().emit(f);
    expect((await resolution(f)).action).toBe('retry');
    device().takeResolution(f);
    const again = { ...f, attempt: 1 };
    device().emit(again);
    expect((await resolution(again)).action).toBe('retry');
    device().emit({ type: 'fault_cleared', queue: 0, tag: f.tag, seq: f.seq, attempts: 2 });
    const s = fault({ op: 'write', block: 50, tag: 2, failed: [{ device: 'spare', block: 50, blocks: 1, errno: 5 }] });
    device().emit(s);
    await resolution(s);
    await waitFor(() => (daemon?.['auto']?.stats().recoveredReads ?? 0) === 1);
    expect(await today()).toMatchObject({ readErrors: 1, recoveredReads: 1, spareWriteErrors: 1, spareReadErrors: 0, writeErrors: 0 });
  });

  it('a passed-through error (auto-remap off) is recorded from the data path, once', async () => {
    await start({ policy: { ...(await import('../../src/config/policy.js')).DEFAULT_POLICY, autoRemap: false } });
    device().emit({ type: 'io_error', queue: 0, op: 'read', device: 'main', sector: 80n, sectors: 8, errno: 5 } as NativeEvent);
    expect(await today()).toMatchObject({ readErrors: 1, writeErrors: 0 });
  });

  it('an outage of main is critical while it lasts, and one outage in the series however many monitors saw it', async () => {
    await start();
    const auto = daemon?.['auto'];
    if (!auto) throw new Error('no auto-remapper');
    native.cfg.failReads.push({ device: 'main', offset: 0, bytes: 8 << 20, code: 'EIO' });
    auto.outage.enter();
    auto.writeOutage.enter(); // both monitors in an outage: still one
    expect((await health()).state).toBe('critical');
    expect((await request(sock, 'status', {})).remap.line).toContain(' health=critical ');
    native.cfg.failReads.length = 0;
    await waitFor(() => !auto.outage.active);
    // Main answers reads again, but the write outage goes on: still an outage.
    expect(auto.writeOutage.active).toBe(true);
    expect((await health()).state).toBe('critical');
    auto.writeOutage['end']();
    const h = await health();
    expect(h.state).toBe('watch');
    expect((await today()).outages).toBe(1);
  });

  it('clear_stats clears the counters, not the series', async () => {
    await start();
    await request(sock, 'remap', { sector: 8 });
    expect((await health()).state).toBe('watch');
    await request(sock, 'clear_stats', {});
    expect((await request(sock, 'stats', {})).manualRemaps).toBe(1); // persisted remap counters stay, errors zeroed
    expect((await health()).state).toBe('watch');
    expect((await today()).badManual).toBe(1);
  });

  it('the series survives a restart of the daemon on the same state directory', async () => {
    await start();
    await request(sock, 'remap', { sector: 8 });
    const before = await health();
    await stop();
    await start();
    const after = await health(true);
    expect(after.since).toBe(before.since);
    expect(after.state).toBe('watch');
    expect(after.history?.[0]?.counts.badManual).toBe(1);
    expect(fs.existsSync(healthFile())).toBe(true);
  });

  it('a daemon killed before it saved: the remap-table entries it committed are in the series at the next start', async () => {
    await start();
    await request(sock, 'remap', { sector: 8 });
    await stop(); // saved, with its table mark
    await start();
    await request(sock, 'remap', { sector: 16 });
    await request(sock, 'remap', { sector: 24 });
    daemon?.['health']?.discard(); // kill -9: nothing of this run saved
    await stop();
    await start();
    const c = await today();
    expect(c.badManual).toBe(3); // the saved one once, the two of the killed run added from the table
    expect((await health()).state).toBe('watch');
  });

  it('the series goes to the successor of a detach (restart) and recover', async () => {
    native = fakeFor(w, { features: RECOVERY_FEATURES });
    await start();
    const id = daemon?.info.devId as number;
    await request(sock, 'remap', { sector: 8 });
    const before = await health();
    await daemon?.detach('upgrade');
    daemon = null;
    const e = readEntryOf(w.runDir, id) as RegistryEntryV2;
    writeEntry(w.runDir, { ...e, pid: DEAD_PID, pidStart: null });
    daemon = await Daemon.recover(id, { native, runDir: w.runDir, log: quietLog(), logFile: null });
    const after = await health(true);
    expect(after.since).toBe(before.since);
    expect(after.state).toBe('watch');
    expect(after.history?.[0]?.counts.badManual).toBe(1);
  });

  it('a corrupt file: the device comes up, health says so, the file is left as it was; reset replaces it', async () => {
    const { log, lines } = fileLog();
    await start();
    const file = healthFile();
    await stop();
    fs.writeFileSync(file, 'DMRHEALTH 1 00000000\n{"not":"this"}');
    const bytes = fs.readFileSync(file);
    await start({}, log);
    const h = await health();
    expect(h.recordError).toMatch(/^health file .* is corrupt \(checksum mismatch\)/);
    expect((await request(sock, 'status', {})).health.recordError).toBe(h.recordError);
    expect(lines().some((l) => l.level === 50 && String(l.msg).includes('health history cannot be used'))).toBe(true);
    const human = await run('health', 'data');
    expect(human.out).toContain('reason: the saved health history cannot be used');
    await request(sock, 'remap', { sector: 8 }); // an event of this run: not saved over the file
    daemon?.['health']?.save();
    expect(fs.readFileSync(file).equals(bytes)).toBe(true);
    await stop();
    expect(fs.readFileSync(file).equals(bytes)).toBe(true);
    await start();
    const r = await request(sock, 'health_reset', {});
    expect(r.recordError).toBeNull();
    expect(r.state).toBe('healthy');
    expect(loadHealth(stateDir(), pairId())).not.toBeNull();
  });

  it('runs the alert command once per change of state, with the DMREMAP_ variables; a failing one is logged, not fatal', async () => {
    const out = path.join(w.root, 'alerts.txt');
    await start({ alertCommand: `env | grep '^DMREMAP_' | sort >> ${out}; echo --- >> ${out}` });
    await request(sock, 'remap', { sector: 8 }); // healthy -> watch
    await request(sock, 'remap', { sector: 16 }); // still watch: no alert
    await health();
    await daemon?.['health']?.alertsSettled();
    const runs = fs.readFileSync(out, 'utf8').split('---\n').filter(Boolean);
    expect(runs.length).toBe(1);
    const ALERT_VARS = ['DMREMAP_DEVICE', 'DMREMAP_NAME', 'DMREMAP_STATE', 'DMREMAP_PREVIOUS_STATE', 'DMREMAP_SCORE', 'DMREMAP_REASON'];
    const env = Object.fromEntries(
      runs[0]!
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)])
        .filter(([k]) => ALERT_VARS.includes(k as string)),
    );
    const h = await health();
    expect(env).toEqual({
      DMREMAP_DEVICE: daemon?.info.blockPath,
      DMREMAP_NAME: 'data',
      DMREMAP_STATE: 'watch',
      DMREMAP_PREVIOUS_STATE: 'healthy',
      DMREMAP_SCORE: String(h.score),
      DMREMAP_REASON: h.reasons[0]?.sentence,
    });
    await stop();

    const { log, lines } = fileLog();
    await start({ alertCommand: 'echo broken >&2; exit 3' }, log);
    await request(sock, 'remap', { sector: 24 }); // a new bad block today: still watch after the restart
    await request(sock, 'health_reset', {});
    await request(sock, 'remap', { sector: 32 }); // healthy -> watch
    await health(); // judged now (an event is judged at once, or within CHECK_MIN_GAP_MS of the last judgement)
    await daemon?.['health']?.alertsSettled();
    const failed = lines().filter((l) => l.msg === 'alert command failed');
    expect(failed.length).toBe(1);
    expect(failed[0]).toMatchObject({ level: 50, code: 3, stderr: 'broken', state: 'watch', previous: 'healthy' });
    expect(lines().filter((l) => String(l.msg).startsWith('health healthy -> watch')).length).toBe(1);
    expect((await request(sock, 'status', {})).remap.health).toBe('watch'); // the daemon goes on
  });
});

describe('DeviceHealth alerts over time', () => {
  it('at most once per alert interval for the same state; a change back and forth within it runs only the first', async () => {
    const dir = path.join(w.root, 'state');
    const out = path.join(w.root, 'alerts.txt');
    let now = Date.UTC(2026, 0, 1);
    const gauge: SpareGauge = { used: 0, slots: 1000, lost: 0 };
    const notices: HealthNotice[] = [];
    const h = DeviceHealth.open({
      dir,
      pairId: '00000000-0000-4000-8000-000000000001',
      log: quietLog(),
      device: () => '/dev/ublkb9',
      name: null,
      settings: { ...DEFAULT_HEALTH_SETTINGS, healthWatchDays: 1 },
      gauge: () => ({ ...gauge }),
      alertCommand: () => `echo "$DMREMAP_PREVIOUS_STATE>$DMREMAP_STATE" >> ${out}`,
      now: () => now,
      alertIntervalMs: 3 * DAY_MS,
    });
    h.events.on((n) => notices.push(n));
    try {
      h.record({ type: 'bad_blocks', origin: 'auto', blocks: [7] }); // healthy -> watch: alert
      expect(h.assess().state).toBe('watch');
      now += DAY_MS + 2 * 3_600_000;
      expect(h.assess().state).toBe('healthy'); // the watch window passed: watch -> healthy: alert (after the first: one at a time)
      now += 60_000;
      h.record({ type: 'bad_blocks', origin: 'auto', blocks: [9] }); // healthy -> watch again, within 3 days of the first: none
      expect(h.assess().state).toBe('watch');
      await h.alertsSettled();
      expect(fs.readFileSync(out, 'utf8')).toBe('healthy>watch\nwatch>healthy\n');
      expect(notices.filter((n) => n.type === 'state').map((n) => (n.type === 'state' ? `${n.previous}>${n.state}` : ''))).toEqual([
        'healthy>watch',
        'watch>healthy',
        'healthy>watch',
      ]);
    } finally {
      h.close();
    }
  });
});

describe('DeviceHealth alarms and a slow alert command', () => {
  const open = (o: { dir: string; now: () => number; gauge: SpareGauge; command: string; log?: Logger; timeoutMs?: number }) =>
    DeviceHealth.open({
      dir: o.dir,
      pairId: '00000000-0000-4000-8000-000000000003',
      log: o.log ?? quietLog(),
      device: () => '/dev/ublkb7',
      name: 'vol',
      settings: { ...DEFAULT_HEALTH_SETTINGS },
      gauge: () => ({ ...o.gauge }),
      alertCommand: () => o.command,
      now: o.now,
      ...(o.timeoutMs !== undefined ? { alertTimeoutMs: o.timeoutMs } : {}),
    });

  it('acceleration beginning without a change of state is an alarm: one log line, one notice, one alert', async () => {
    const out = path.join(w.root, 'alarm.txt');
    let now = Date.UTC(2026, 0, 1);
    const gauge: SpareGauge = { used: 2, slots: 100_000, lost: 2 }; // two blocks lost: degraded already
    const { log, lines } = fileLog();
    const h = open({ dir: path.join(w.root, 's1'), now: () => now, gauge, log, command: `echo "$DMREMAP_PREVIOUS_STATE>$DMREMAP_STATE $DMREMAP_REASON" >> ${out}` });
    const notices: HealthNotice[] = [];
    h.events.on((n) => notices.push(n));
    try {
      now += 3 * DAY_MS; // both acceleration windows observed
      h.record({ type: 'bad_blocks', origin: 'auto', blocks: [100] }); // the day before: 1
      now += DAY_MS;
      expect(h.assess()).toMatchObject({ state: 'degraded', forecast: { acceleration: false } });
      for (let i = 0; i < 12; i++) h.record({ type: 'bad_blocks', origin: 'auto', blocks: [10_000 * (i + 2)] }); // the last 24 h: 12
      const a = h.assess();
      expect(a).toMatchObject({ state: 'degraded', forecast: { acceleration: true } });
      await h.alertsSettled();
      expect(fs.readFileSync(out, 'utf8')).toBe('degraded>degraded new bad blocks are coming faster: 12 in the last 24 h, 1 in the 24 h before\n');
      expect(notices.filter((n) => n.type === 'alarm')).toMatchObject([{ type: 'alarm', alarm: 'acceleration', state: 'degraded' }]);
      expect(lines().filter((l) => String(l.msg).startsWith('health alarm (acceleration)')).length).toBe(1);
      h.record({ type: 'bad_blocks', origin: 'auto', blocks: [999_999] });
      h.assess(); // still accelerating: no new alarm
      await h.alertsSettled();
      expect(fs.readFileSync(out, 'utf8').split('\n').filter(Boolean).length).toBe(1);
    } finally {
      h.close();
    }
  });

  it("an alarm on a disk degraded for another reason: the command gets the alarm's sentence and DMREMAP_ALARM; a change of state gets no alarm", async () => {
    const out = path.join(w.root, 'alarm2.txt');
    let now = Date.UTC(2026, 0, 1);
    const gauge: SpareGauge = { used: 60_000, slots: 100_000, lost: 0 }; // 60% of the spare used: degraded, the worst reason
    const h = open({ dir: path.join(w.root, 's3'), now: () => now, gauge, command: `printf '%s|%s|%s\\n' "$DMREMAP_STATE" "$DMREMAP_ALARM" "$DMREMAP_REASON" >> ${out}` });
    try {
      now += 3 * DAY_MS;
      h.record({ type: 'bad_blocks', origin: 'auto', blocks: [100] });
      now += DAY_MS;
      expect(h.assess()).toMatchObject({ state: 'degraded', forecast: { acceleration: false } });
      for (let i = 0; i < 12; i++) h.record({ type: 'bad_blocks', origin: 'auto', blocks: [10_000 * (i + 2)] });
      expect(h.assess()).toMatchObject({ state: 'degraded', forecast: { acceleration: true } });
      await h.alertsSettled();
      expect(fs.readFileSync(out, 'utf8')).toBe('degraded|acceleration|new bad blocks are coming faster: 12 in the last 24 h, 1 in the 24 h before\n');
      gauge.used = 95_000; // critical: a change of state, no alarm began
      h.assess();
      await h.alertsSettled();
      expect(fs.readFileSync(out, 'utf8').split('\n')[1]).toBe('critical||95000 of 100000 spare slots used (95%)');
    } finally {
      h.close();
    }
  });

  it('an alert command that outlives its timeout is killed (its process group) and logged; the daemon thread is not blocked', async () => {
    let now = Date.UTC(2026, 0, 1);
    const { log, lines } = fileLog();
    const pidFile = path.join(w.root, 'child.pid');
    const h = open({ dir: path.join(w.root, 's2'), now: () => now, gauge: { used: 0, slots: 100, lost: 0 }, log, command: `sleep 30 & echo $! > ${pidFile}; wait`, timeoutMs: 300 });
    try {
      now += 1000;
      const t0 = Date.now();
      h.record({ type: 'read_error' }); // healthy -> watch: the alert starts
      h.assess();
      expect(Date.now() - t0).toBeLessThan(250); // record and assess return while the command runs
      await h.alertsSettled();
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(lines().filter((l) => l.msg === 'alert command did not finish in time: killed')).toMatchObject([{ level: 50, timeoutMs: 300, signal: 'SIGKILL' }]);
      const child = Number(fs.readFileSync(pidFile, 'utf8'));
      await waitFor(() => {
        try {
          process.kill(child, 0);
          return false;
        } catch {
          return true;
        }
      });
    } finally {
      h.close();
    }
  });
});

describe('DeviceHealth and the remap table across a kill', () => {
  const PID = '00000000-0000-4000-8000-0000000000aa';
  const entry = (time: number, over: Partial<RemapEntry> = {}): RemapEntry => ({ slot: 0, state: 'mapped', origin: 'auto', time, errorCount: 1, dataOnMain: false, ...over });
  const committed = (block: number, time: number, origin: 'auto' | 'scan' | 'manual' = 'auto', lost = false): CommittedOp => ({
    op: { op: 'remap', block, slot: block, lost, auto: origin !== 'manual', scan: origin === 'scan', dataOnMain: false, time, errorCount: 1 },
    origin,
  });
  const openWith = (dir: string, now: () => number, table: Map<number, RemapEntry>, used = table.size) =>
    DeviceHealth.open({
      dir,
      pairId: PID,
      log: quietLog(),
      device: () => '/dev/ublkb9',
      name: null,
      settings: { ...DEFAULT_HEALTH_SETTINGS },
      gauge: () => ({ used, slots: 1000, lost: 0 }),
      alertCommand: () => null,
      table: () => table.entries(),
      now,
    });
  const total = (h: DeviceHealth, f: 'badAuto' | 'badScan' | 'badManual' | 'pending') => h.history().reduce((n, d) => n + d.counts[f], 0);

  it('killed before the first save: the 12 blocks committed are in the series at the next start, at their times', () => {
    const dir = path.join(w.root, 'state');
    let now = Date.UTC(2026, 0, 1, 12);
    const table = new Map<number, RemapEntry>();
    const a = openWith(dir, () => now, table);
    now += 60_000;
    const t = now;
    a.tableCommitted(Array.from({ length: 12 }, (_, i) => committed(100 + i, t)));
    for (let i = 0; i < 12; i++) table.set(100 + i, entry(t));
    now += 4 * 60_000;
    a.discard(); // kill -9 before the 5-minute save
    now += 60_000;
    const b = openWith(dir, () => now, table);
    try {
      expect(b.assess().state).not.toBe('healthy');
      expect(total(b, 'badAuto')).toBe(12);
      expect(b.assess().since).toBe(t); // a new series begins with the table's first entry
    } finally {
      b.discard();
    }
  });

  it('killed after a save: only the entries committed since are added (none twice), with their origin; a lost auto entry is also pending', () => {
    const dir = path.join(w.root, 'state');
    let now = Date.UTC(2026, 0, 1, 12);
    const table = new Map<number, RemapEntry>();
    const a = openWith(dir, () => now, table);
    now += 60_000;
    const t1 = now;
    a.tableCommitted([committed(1, t1), committed(2, t1)]);
    table.set(1, entry(t1)).set(2, entry(t1));
    a.save();
    // A commit of the same millisecond after the save: the mark keeps the blocks of its time.
    a.tableCommitted([committed(3, t1, 'scan')]);
    table.set(3, entry(t1, { origin: 'scan' }));
    now += 60_000;
    const t2 = now;
    a.tableCommitted([committed(4, t2, 'auto', true), committed(5, t2, 'manual')]);
    table.set(4, entry(t2, { state: 'lost' })).set(5, entry(t2, { origin: 'manual' }));
    a.discard();
    now += 60_000;
    const b = openWith(dir, () => now, table);
    try {
      expect([total(b, 'badAuto'), total(b, 'badScan'), total(b, 'badManual'), total(b, 'pending')]).toEqual([3, 1, 1, 1]);
      b.close(); // saved with the new mark: a third start adds nothing
      const c = openWith(dir, () => now, table);
      expect([total(c, 'badAuto'), total(c, 'badScan'), total(c, 'badManual'), total(c, 'pending')]).toEqual([3, 1, 1, 1]);
      c.discard();
    } finally {
      b.discard();
    }
  });

  it('a commit is not judged inside RemapStore.onCommitted: no judgement, no config read for the alert command until the next turn of the event loop', async () => {
    const dir = path.join(w.root, 'state');
    let now = Date.UTC(2026, 0, 1, 12);
    let reads = 0;
    const notices: HealthNotice[] = [];
    const h = DeviceHealth.open({
      dir,
      pairId: PID,
      log: quietLog(),
      device: () => '/dev/ublkb9',
      name: null,
      settings: { ...DEFAULT_HEALTH_SETTINGS },
      gauge: () => ({ used: 1, slots: 1000, lost: 0 }),
      alertCommand: () => {
        reads++; // the daemon reads the config file here
        return null;
      },
      now: () => now,
    });
    h.events.on((n) => notices.push(n));
    try {
      now += 5000; // past CHECK_MIN_GAP_MS since the judgement at open
      h.tableCommitted([committed(5, now)]); // healthy -> watch
      expect([reads, notices.filter((n) => n.type === 'state').length]).toEqual([0, 0]);
      await new Promise((r) => setTimeout(r, 20));
      expect([reads, notices.filter((n) => n.type === 'state').length]).toEqual([1, 1]);
    } finally {
      h.discard();
    }
  });

  it('a block remapped while the clock was 30 days ahead is counted once: after the clock is set back, and at a start after the clock has passed its stamp', () => {
    const dir = path.join(w.root, 'state');
    const real = Date.UTC(2026, 0, 1, 12);
    let now = real + 30 * DAY_MS; // the clock is ahead
    const table = new Map<number, RemapEntry>();
    const a = openWith(dir, () => now, table);
    now += 60_000;
    const stamp = now;
    a.tableCommitted([committed(7, stamp)]);
    table.set(7, entry(stamp));
    now = real + 3_600_000; // NTP sets it right: the next event rewinds the series
    a.record({ type: 'read_error' });
    expect(total(a, 'badAuto')).toBe(1);
    a.close(); // a normal stop: saved, the mark still at the entry's stamp
    now = real + 31 * DAY_MS; // a later start, the clock past the entry's stamp; no remap since
    const b = openWith(dir, () => now, table);
    try {
      expect(total(b, 'badAuto')).toBe(1);
    } finally {
      b.discard();
    }
  });

  it('after a reset (a series without a table mark: after its latest time), the entries the table held are not added again; an entry stamped after now is not added', () => {
    const dir = path.join(w.root, 'state');
    let now = Date.UTC(2026, 0, 1, 12);
    const table = new Map<number, RemapEntry>([[7, entry(now - DAY_MS)], [9, entry(now + 365 * DAY_MS)]]);
    const a = openWith(dir, () => now, table);
    expect(total(a, 'badAuto')).toBe(1); // a new series begins with the table (the future-stamped one left out)
    a.reset();
    expect(total(a, 'badAuto')).toBe(0);
    a.discard();
    now += 60_000;
    const b = openWith(dir, () => now, table);
    try {
      expect(total(b, 'badAuto')).toBe(0);
    } finally {
      b.discard();
    }
  });
});

describe('DeviceHealth saving', () => {
  it('saves a changed series every save interval, an unchanged one not again, and at close', async () => {
    const dir = path.join(w.root, 'state');
    const pid = '00000000-0000-4000-8000-000000000002';
    const file = healthFilePath(dir, pid);
    const h = DeviceHealth.open({
      dir,
      pairId: pid,
      log: quietLog(),
      device: () => '/dev/ublkb9',
      name: null,
      settings: { ...DEFAULT_HEALTH_SETTINGS },
      gauge: () => ({ used: 0, slots: 100, lost: 0 }),
      alertCommand: () => null,
      saveIntervalMs: 40,
    });
    try {
      expect(fs.existsSync(file)).toBe(false); // not at open
      await waitFor(() => fs.existsSync(file)); // the new series, at the first interval
      const ino = fs.statSync(file).ino;
      await new Promise((r) => setTimeout(r, 200));
      expect(fs.statSync(file).ino).toBe(ino); // unchanged: not written again (each save is a new file renamed over)
      h.record({ type: 'bad_blocks', origin: 'scan', blocks: [5] });
      await waitFor(() => fs.statSync(file).ino !== ino);
      expect(loadHealth(dir, pid)?.sum(['badScan'], 0, Date.now() + 1)).toBe(1);
      h.record({ type: 'read_error' });
    } finally {
      h.close();
    }
    expect(loadHealth(dir, pid)?.sum(['readErrors'], 0, Date.now() + 1)).toBe(1); // at close
  });
});

describe('the health command', () => {
  it('--json and --history shapes, the human output, and bad input in one line', async () => {
    await start();
    await request(sock, 'remap', { sector: 8 });
    const j = await run('health', 'data', '--json');
    expect(j.code).toBe(0);
    const h = JSON.parse(j.out) as Record<string, unknown>;
    expect(Object.keys(h).sort()).toEqual(['action', 'device', 'forecast', 'name', 'reasons', 'recordError', 'score', 'since', 'state']);
    expect(h).toMatchObject({ state: 'watch', name: 'data', recordError: null, forecast: { spareExhaustionSeconds: null, range: null, acceleration: false } });
    expect((h.reasons as unknown[])[0]).toMatchObject({ signal: 'new_bad_blocks', value: 1, state: 'watch', sentence: '1 new bad block in the last 24 h (0 the day before)' });
    const hist = JSON.parse((await run('health', 'data', '--json', '--history')).out) as { history: Array<{ day: string; counts: Record<string, number> }> };
    expect(hist.history).toHaveLength(1);
    expect(hist.history[0]?.day).toBe(new Date().toISOString().slice(0, 10));
    expect(hist.history[0]?.counts.badManual).toBe(1);
    const human = await run('health', 'data', '--history');
    expect(human.code).toBe(0);
    expect(human.out).toMatch(/^ {2}device: \/\S+ \(data\)\n {3}state: watch\n {3}score: \d+\n {2}reason: 1 new bad block in the last 24 h/);
    expect(human.out).toContain('  action: The disk has begun to fail in places');
    expect(human.out).toContain('forecast: none yet');
    expect(human.out).toMatch(/\nday +bad auto\/scan\/manual/);
    const reset = await run('health', 'data', 'reset');
    expect(reset.code).toBe(0);
    expect(reset.out).toMatch(/^health history reset: a new series begins now\n {2}device: .*\n {3}state: healthy\n/);

    for (const [args, err] of [
      [['health', 'data', 'nonsense'], 'dmremap-ublk: unknown health action "nonsense" (actions: reset)\n'],
      [['health', 'data', '--bogus'], null],
      [['health'], 'dmremap-ublk: missing device: dmremap-ublk health <device> [--json] [--history] | health <device> reset\n'],
      [['health', 'data', 'reset', 'now'], 'dmremap-ublk: health takes a device and at most one action, got 3 arguments\n'],
      [['health', 'data', 'reset', '--history'], 'dmremap-ublk: --history goes with "health <device>", not with reset\n'],
    ] as const) {
      const r = await run(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.out).toBe('');
      if (err !== null) expect(r.err).toBe(err);
      else expect(r.err).toMatch(/^dmremap-ublk: [^\n]*--bogus[^\n]*\n$/);
    }
    expect((await health()).state).toBe('healthy'); // nothing changed by the bad input after the reset
    expect((await run('health', '--help')).out).toMatch(/^Usage: dmremap-ublk health <device>/);
  });

  it('config set refuses a bad alert_command or health threshold in one line and changes nothing', async () => {
    const cfg = path.join(w.root, 'etc', 'config.json');
    const runCfg = async (...args: string[]) => {
      const c = captureCtx(w, native);
      c.ctx.env = { ...c.ctx.env, DMREMAP_CONFIG: cfg };
      const code = await main(args, c.ctx);
      return { code, out: c.stdout(), err: c.stderr() };
    };
    expect(await runCfg('config', 'set', 'alert_command', '')).toEqual({ code: 2, out: '', err: 'dmremap-ublk: alert_command must not be empty (unset it to run no command)\n' });
    expect(await runCfg('config', 'set', 'health_watch_days', '0')).toEqual({ code: 2, out: '', err: 'dmremap-ublk: health_watch_days must be a whole number from 1 to 365, got "0"\n' });
    expect(fs.existsSync(cfg)).toBe(false);
    expect((await runCfg('config', 'set', 'health_watch_days', '30')).code).toBe(0);
    expect(JSON.parse(fs.readFileSync(cfg, 'utf8'))).toEqual({ healthWatchDays: 30 });
  });

  it('config set refuses spare thresholds out of order (degraded above critical), globally and per device, and changes nothing', async () => {
    const cfg = path.join(w.root, 'etc', 'config.json');
    const runCfg = async (...args: string[]) => {
      const c = captureCtx(w, native);
      c.ctx.env = { ...c.ctx.env, DMREMAP_CONFIG: cfg };
      const code = await main(args, c.ctx);
      return { code, out: c.stdout(), err: c.stderr() };
    };
    expect((await runCfg('config', 'set', 'health_spare_critical_percent', '50')).code).toBe(0); // equal to the default degraded 50: allowed
    expect((await runCfg('config', 'set', '--device', 'data', 'health_spare_critical_percent', '80')).code).toBe(0);
    expect((await runCfg('config', 'set', '--device', 'data', 'health_spare_degraded_percent', '70')).code).toBe(0);
    const before = fs.readFileSync(cfg, 'utf8');
    expect(await runCfg('config', 'set', 'health_spare_degraded_percent', '95')).toEqual({
      code: 2,
      out: '',
      err: 'dmremap-ublk: health_spare_degraded_percent (95) must not be above health_spare_critical_percent (50)\n',
    });
    expect(await runCfg('config', 'set', 'health_spare_degraded_percent', '51')).toMatchObject({ code: 2, out: '' });
    expect((await runCfg('config', 'set', '--device', 'data', 'health_spare_degraded_percent', '85')).err).toBe(
      'dmremap-ublk: health_spare_degraded_percent (85) must not be above health_spare_critical_percent (80) for device data\n',
    );
    // Unsetting the device's critical leaves it the global 50, below the device's degraded 70: refused.
    expect((await runCfg('config', 'unset', '--device', 'data', 'health_spare_critical_percent')).code).toBe(2);
    expect(fs.readFileSync(cfg, 'utf8')).toBe(before);
    expect((await runCfg('config', 'set', 'health_spare_degraded_percent', '40')).code).toBe(0);
  });
});

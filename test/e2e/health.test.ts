// The health model end to end (issue 14), against a device-mapper `error` target: a fresh device is healthy
// with no forecast; a steady trickle of 60 first writes to bad sectors (each one a new bad block, remapped
// and hidden from the user) moves it out of healthy, gives a forecast of the spare, runs the alert command
// once per change of state with its DMREMAP_ variables; and state and forecast survive del + add (the
// series is kept in the state directory); `watch --json`, started before the trickle, streams its remaps (with
// their origin) and the change of health state, and exits 0 on SIGTERM. Written for the VM (test/vm/run-e2e.sh); not run on a host
// without ublk.
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import { deviceEventSchema, type DeviceEvent } from '../../src/device/device-events.js';
import { addForeground, BIN, pidAlive, RUN_DIR, waitFor, type Added, type ForegroundDaemon } from './helpers.js';
import { directWrite, ErrorSources, leftoverDmDevices } from './error-sources.js';
import { expectCleanKernel, itPrimary, requireUblkHost } from './setup.js';

const BS = 4096;
const MIB = 16;
/** 60 bad 4 KiB blocks, 16 blocks apart, away from the first and last MiB (the kernel's partition scan reads there). */
const BAD_BLOCKS = Array.from({ length: 60 }, (_, i) => 512 + i * 16);

let dir: string;
let src: ErrorSources;
const daemons: ForegroundDaemon[] = [];
let savedConfig: string | undefined;

beforeAll(requireUblkHost);
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-health-'));
  src = new ErrorSources();
  savedConfig = process.env.DMREMAP_CONFIG;
  process.env.DMREMAP_CONFIG = path.join(dir, 'config.json');
});
afterEach(async () => {
  try {
    for (const d of daemons.splice(0)) await stopDaemon(d);
  } finally {
    src.cleanup();
    if (savedConfig === undefined) delete process.env.DMREMAP_CONFIG;
    else process.env.DMREMAP_CONFIG = savedConfig;
    fs.rmSync(dir, { recursive: true, force: true });
  }
  expectCleanKernel();
  expect(leftoverDmDevices()).toEqual([]);
});

async function stopDaemon(d: ForegroundDaemon): Promise<void> {
  if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill('SIGTERM');
  await waitFor(`daemon ${d.dev.pid} to stop`, () => !pidAlive(d.dev.pid) && !fs.existsSync(d.dev.blockPath), 60_000);
}

/** `dmremap-ublk watch <dev> --json` in the background: its events (each checked against the schema) as they come. */
function startWatch(dev: string): { child: ChildProcess; events: DeviceEvent[]; stderr: () => string } {
  const child = spawn(process.execPath, [BIN, 'watch', dev, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: DeviceEvent[] = [];
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (t: string) => {
    out += t;
    let nl;
    while ((nl = out.indexOf('\n')) >= 0) {
      events.push(deviceEventSchema.parse(JSON.parse(out.slice(0, nl))));
      out = out.slice(nl + 1);
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (t: string) => (err += t));
  return { child, events, stderr: () => err };
}

const sock = (d: Added): string => path.join(RUN_DIR, `${d.devId}.sock`);
const health = (d: Added) => request(sock(d), 'health', {});

describe('health (issue 14)', () => {
  // Primary kernel only: the health model is userspace; its kernel path (auto-remap of write errors, del + add)
  // runs on every kernel in auto-remap.test.ts and lifecycle.test.ts.
  itPrimary('a trickle of 60 new bad blocks leaves healthy, gives a forecast, alerts once per change, and survives del + add', async () => {
    const alerts = path.join(dir, 'alerts.txt');
    fs.writeFileSync(
      process.env.DMREMAP_CONFIG as string,
      JSON.stringify({ alertCommand: `echo "$DMREMAP_PREVIOUS_STATE $DMREMAP_STATE $DMREMAP_SCORE $DMREMAP_DEVICE" >> ${alerts}` }),
    );
    const bad = BAD_BLOCKS.map((b) => ({ start: (b * BS) / 512, sectors: BS / 512 }));
    const main = src.dmError(MIB, bad);
    const spare = src.loop(32);
    const state = path.join(dir, 'state');
    let d = await addForeground(main.path, spare, state, ['--block-size', String(BS), '--name', 'hv']);
    daemons.push(d);

    const fresh = await health(d.dev);
    expect(fresh.state).toBe('healthy');
    expect(fresh.score).toBeGreaterThanOrEqual(90);
    expect(fresh.forecast.spareExhaustionSeconds).toBeNull();

    // A watcher, subscribed before the trickle (the daemon logs each one).
    const watch = startWatch(d.dev.blockPath);
    await waitFor('the watcher to subscribe', () => d.log.some((l) => l.includes('a watcher subscribed')) || watch.child.exitCode !== null, 60_000);
    expect(watch.child.exitCode, watch.stderr()).toBeNull();

    // The trickle: one first write to a bad block every 100 ms or so, each followed by a write to a good block
    // (as any workload has: without a write main takes, failures in 8 regions within outage_window_ms would be a
    // write outage, held rather than remapped). Each bad write succeeds for the user (redirected to the spare).
    for (const b of BAD_BLOCKS) {
      const w = directWrite(d.dev.blockPath, b, crypto.randomBytes(BS));
      expect(w.ok, w.stderr).toBe(true);
      const good = directWrite(d.dev.blockPath, b + 8, crypto.randomBytes(BS));
      expect(good.ok, good.stderr).toBe(true);
      await new Promise((r) => setTimeout(r, 100));
    }
    const st = await request(sock(d.dev), 'stats', {});
    expect(st.autoRemaps).toBe(60);
    expect(st.writeOutage.outages).toBe(0);
    const after = await health(d.dev);
    console.log(`after 60 bad blocks: ${after.state} score ${after.score}; forecast ${JSON.stringify(after.forecast)}; reasons: ${after.reasons.map((r) => r.sentence).join(' | ')}`);
    expect(after.state).not.toBe('healthy');
    expect(after.reasons.find((r) => r.signal === 'new_bad_blocks')?.value).toBe(60);
    expect(after.forecast.spareExhaustionSeconds).not.toBeNull();
    expect(after.forecast.range).not.toBeNull();
    expect((await request(sock(d.dev), 'status', {})).remap.line).toContain(` health=${after.state} `);

    // The watcher saw each remap as it happened, with its origin, and the change of health state.
    await waitFor('the watcher to see 60 remaps and a change of health', () => watch.events.filter((e) => e.type === 'remap').length >= 60 && watch.events.some((e) => e.type === 'health'), 30_000);
    const remaps = watch.events.filter((e) => e.type === 'remap');
    expect(remaps.map((e) => e.block).sort((a, b) => a - b)).toEqual(BAD_BLOCKS);
    for (const e of remaps) expect(e).toMatchObject({ origin: 'auto', state: 'mapped', device: d.dev.blockPath, sector: e.block * (BS / 512) });
    const changed = watch.events.filter((e) => e.type === 'health');
    expect(changed[0]).toMatchObject({ previous: 'healthy', device: d.dev.blockPath });
    expect(changed.at(-1)).toMatchObject({ state: after.state });
    expect(watch.events.filter((e) => e.type === 'missed')).toEqual([]);
    watch.child.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => (watch.child.exitCode !== null ? r(watch.child.exitCode) : watch.child.once('exit', (c) => r(c))));
    expect(code, watch.stderr()).toBe(0);

    // One alert per change of state (the log's "health a -> b" lines), each naming the device.
    await waitFor('the alert commands', () => fs.existsSync(alerts), 10_000);
    await new Promise((r) => setTimeout(r, 1000));
    const changes = d.log.filter((l) => /health \w+ -> \w+/.test(l)).map((l) => /health (\w+) -> (\w+)/.exec(l)!.slice(1, 3).join(' '));
    const runs = fs.readFileSync(alerts, 'utf8').trim().split('\n');
    expect(changes.length).toBeGreaterThanOrEqual(1);
    // (Each alert runs on its own: two close together may append in either order.)
    expect(runs.map((r) => r.split(' ').slice(0, 2).join(' ')).sort()).toEqual([...changes].sort());
    for (const r of runs) expect(r.split(' ')[3]).toBe(d.dev.blockPath);
    expect(changes[0]).toBe(`healthy ${changes[0]!.split(' ')[1]}`);

    // del + add: the same main and spare, the same state directory: the same state and forecast.
    await stopDaemon(d);
    daemons.splice(daemons.indexOf(d), 1);
    d = await addForeground(main.path, spare, state, ['--block-size', String(BS), '--name', 'hv']);
    daemons.push(d);
    const again = await health(d.dev);
    expect(again.state).toBe(after.state);
    expect(again.since).toBe(after.since);
    expect(again.reasons.find((r) => r.signal === 'new_bad_blocks')?.value).toBe(60);
    expect(again.forecast.spareExhaustionSeconds).not.toBeNull();
    // The forecast moves only with the time passed since (a rate over the time the series covers).
    expect(Math.abs((again.forecast.spareExhaustionSeconds as number) - (after.forecast.spareExhaustionSeconds as number)) / (after.forecast.spareExhaustionSeconds as number)).toBeLessThan(0.1);
    // The state the new daemon found is its baseline: no alert for it.
    await new Promise((r) => setTimeout(r, 1000));
    expect(fs.readFileSync(alerts, 'utf8').trim().split('\n')).toEqual(runs);
  });
});

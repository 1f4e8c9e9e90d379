// An outage under way when a daemon stops: the next daemon closes it (a main that answers is not "critical",
// then "failed"; the next outage counts; the downtime is not outage time). From a cold review of the wiring.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { request } from '../../src/control/client.js';
import type { DeviceConfig } from '../../src/device/config.js';
import { Daemon } from '../../src/device/daemon.js';
import { DeviceHealth } from '../../src/device/device-health.js';
import type { Logger } from '../../src/log.js';
import { DEFAULT_HEALTH_SETTINGS, type SpareGauge } from '../../src/health/index.js';
import { HOUR_MS } from '../../src/health/series.js';
import type { FakeNative } from '../../src/testing/fake-native.js';
import { deviceConfig, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

let w: World;
let native: FakeNative;
let daemon: Daemon | null;
let sock: string;

const start = async (over: Partial<DeviceConfig> = {}, log: Logger = quietLog()): Promise<Daemon> => {
  daemon = await Daemon.start(deviceConfig(w, { alertCommand: null, ...over }), { native, runDir: w.runDir, log, logFile: null });
  sock = path.join(w.runDir, `${daemon.info.devId}.sock`);
  return daemon;
};
const stop = async (): Promise<void> => {
  await daemon?.shutdown('test');
  daemon = null;
};

beforeEach(() => {
  w = makeWorld();
  native = fakeFor(w);
  daemon = null;
});
afterEach(async () => {
  await stop();
  w.cleanup();
});

const PAIR = '00000000-0000-4000-8000-0000000000aa';
function openHealth(dir: string, now: () => number, gauge: SpareGauge = { used: 0, slots: 1000, lost: 0 }): DeviceHealth {
  return DeviceHealth.open({
    dir,
    pairId: PAIR,
    log: quietLog(),
    device: () => '/dev/ublkb9',
    name: null,
    settings: { ...DEFAULT_HEALTH_SETTINGS },
    gauge: () => gauge,
    alertCommand: () => null,
    now,
  });
}

describe('an outage under way when the daemon stops', () => {
  it('daemon: a device stopped during an outage of main is not "critical: main has not answered" after a restart on a main that answers', async () => {
    await start();
    const auto = daemon?.['auto'];
    if (!auto) throw new Error('no auto-remapper');
    native.cfg.failReads.push({ device: 'main', offset: 0, bytes: 8 << 20, code: 'EIO' });
    auto.outage.enter();
    expect((await request(sock, 'health', {})).state).toBe('critical');
    await stop(); // SIGTERM / del+add / restart during the outage: the series is saved with its outage open
    native.cfg.failReads.length = 0; // main answers again (it did: the new daemon opened and started on it)
    await start();
    const h = await request(sock, 'health', {});
    // Not "critical: main has not answered for ..." (and, 10 minutes on, "failed" until `health reset`).
    expect(h.reasons.map((r) => r.signal)).not.toContain('outage_now');
    expect(h.state).not.toBe('critical');
  });

  it('DeviceHealth: an outage open in the saved series does not make the next run "failed"', () => {
    const dir = path.join(w.root, 'state');
    let now = Date.UTC(2026, 0, 1, 12);
    const a = openHealth(dir, () => now);
    a.outage(true);
    now += 60_000;
    a.close(); // the daemon stops (or is killed after a 5-minute save) during the outage
    now += 2 * HOUR_MS; // restarted two hours later on a main that answers
    const b = openHealth(dir, () => now);
    try {
      expect(b.assess().state).not.toBe('failed');
    } finally {
      b.close();
    }
  });

  it('DeviceHealth: after a restart with an outage left open, a new outage is counted and its seconds leave out the downtime', () => {
    const dir = path.join(w.root, 'state');
    let now = Date.UTC(2026, 0, 1, 12);
    const a = openHealth(dir, () => now);
    a.outage(true);
    now += 60_000;
    a.close();
    now += 2 * HOUR_MS;
    const b = openHealth(dir, () => now);
    try {
      // A real outage in the new run is counted, and its seconds are its own (not since the old one began).
      b.outage(true);
      now += 30_000;
      b.outage(false);
      const d = b.history().at(-1)!;
      expect(d.counts.outages).toBe(2);
      expect(d.counts.outageSeconds).toBeLessThan(60 + 30 + 1);
    } finally {
      b.close();
    }
  });
});


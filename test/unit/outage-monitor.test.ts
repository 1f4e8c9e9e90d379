// The outage monitor alone, on fake timers: a hold decided when it is asked for (an outage already over
// retries at once), expiry by a timer of its own (a probe that never returns cannot keep a request), one
// probe in flight at a time, and one bound on all the holds of a request.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { OutageMonitor } from '../../src/device/outage-monitor.js';
import { quietLog } from './helpers.js';

const HOLD_MS = 1000;
const PROBE_TIMEOUT_MS = 100;

/** A probe the test answers: each call is one probe's reads, settled by hand (or never). */
function scriptedProbe(): { probe: () => Promise<boolean>; calls: number; answer: (v: boolean) => void } {
  const pending: Array<(v: boolean) => void> = [];
  const s = {
    calls: 0,
    probe: (): Promise<boolean> => {
      s.calls++;
      return new Promise<boolean>((r) => pending.push(r));
    },
    answer: (v: boolean): void => {
      for (const r of pending.splice(0)) r(v);
    },
  };
  return s;
}

const monitor = (probe: () => Promise<boolean>): OutageMonitor =>
  new OutageMonitor(probe, () => HOLD_MS, quietLog(), () => undefined, () => undefined, Date.now, PROBE_TIMEOUT_MS);

const recorder = (): { got: boolean[]; release: (a: boolean) => void } => {
  const got: boolean[] = [];
  return { got, release: (a) => void got.push(a) };
};

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('outage monitor', () => {
  it('a request held when no outage is going on (it ended meanwhile) is released at once to be retried', async () => {
    const p = scriptedProbe();
    const m = monitor(p.probe);
    const c = m.confirm();
    p.answer(false);
    expect(await c).toBe(true);
    expect(m.active).toBe(true);
    // Main answers the next tick: the outage ends with nothing held.
    await vi.advanceTimersByTimeAsync(60);
    p.answer(true);
    await vi.advanceTimersByTimeAsync(0);
    expect(m.active).toBe(false);
    // The request whose batch was still waiting in the engine arrives now.
    const r = recorder();
    m.hold(r, Date.now());
    expect(r.got).toEqual([true]);
    expect(m.stats().held).toBe(0);
    m.close();
  });

  it('a probe that never returns: confirm times out (outage), ticks share its reads, held requests fail after outageHoldMs anyway', async () => {
    const p = scriptedProbe();
    const m = monitor(p.probe);
    const c = m.confirm();
    await vi.advanceTimersByTimeAsync(PROBE_TIMEOUT_MS);
    expect(await c).toBe(true);
    expect(m.active).toBe(true);
    const r = recorder();
    m.hold(r, Date.now());
    await vi.advanceTimersByTimeAsync(HOLD_MS - 1);
    expect(r.got).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(r.got).toEqual([false]);
    expect(m.stats()).toMatchObject({ active: true, held: 0, failedAfterHold: 1 });
    // Many backoff ticks went by: still the one probe's reads in flight.
    expect(p.calls).toBe(1);
    // Its reads come back at last: main answers, the outage ends.
    p.answer(true);
    await vi.advanceTimersByTimeAsync(1000);
    expect(m.active).toBe(false);
    m.close();
  });

  it('concurrent confirms share one probe', async () => {
    const p = scriptedProbe();
    const m = monitor(p.probe);
    const a = m.confirm();
    const b = m.confirm();
    p.answer(true);
    expect([await a, await b]).toEqual([false, false]);
    expect(p.calls).toBe(1);
    m.close();
  });

  it('the holds of one request together last outageHoldMs at most: held again, it keeps its first time', async () => {
    const p = scriptedProbe();
    const m = monitor(p.probe);
    const c = m.confirm();
    p.answer(false);
    await c;
    const since = Date.now();
    const r = recorder();
    m.hold(r, since);
    // Main answers briefly: the request is retried, fails, and is held again in the next outage.
    await vi.advanceTimersByTimeAsync(600);
    p.answer(true);
    await vi.advanceTimersByTimeAsync(0);
    expect(r.got).toEqual([true]);
    const c2 = m.confirm();
    p.answer(false);
    expect(await c2).toBe(true);
    m.hold(r, since);
    await vi.advanceTimersByTimeAsync(HOLD_MS - 600 - 1);
    expect(r.got).toEqual([true]);
    await vi.advanceTimersByTimeAsync(1);
    expect(r.got).toEqual([true, false]);
    // Held past its time: it fails at once.
    const late = recorder();
    m.hold(late, since);
    expect(late.got).toEqual([false]);
    m.close();
  });

  it('enter() begins an outage without a probe; takeOldest() hands out the request held longest, held again it counts once', async () => {
    const p = scriptedProbe();
    const m = monitor(p.probe);
    m.enter();
    expect(m.active).toBe(true);
    expect(p.calls).toBe(0);
    const a = recorder();
    const b = recorder();
    const t = Date.now();
    m.hold(b, t + 10);
    m.hold(a, t);
    expect(m.takeOldest()).toBe(a);
    expect(m.stats()).toMatchObject({ held: 1, heldTotal: 2 });
    m.hold(a, t, true); // its probe retry failed: held again, with its first time
    expect(m.stats()).toMatchObject({ held: 2, heldTotal: 2 });
    // Its hold still ends at its first time + HOLD_MS.
    await vi.advanceTimersByTimeAsync(HOLD_MS - 1);
    expect(a.got).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(a.got).toEqual([false]);
    expect(b.got).toEqual([]);
    m.close();
  });
});

// The supervisor's restart policy as a pure function: exit classes and the 5-crashes-in-60-s give-up.
import { describe, expect, it } from 'vitest';
import {
  CRASH_PAUSE_MS,
  CRASH_WINDOW_MS,
  MAX_CRASHES,
  RELEASE_PAUSE_MAX_MS,
  RELEASE_PAUSE_MS,
  RELEASE_WAIT_LIMIT_MS,
  RESTART_EXIT_CODE,
  classifyExit,
  decide,
  describeExit,
  initialPolicyState,
  type ChildExit,
  type PolicyState,
} from '../../src/supervisor/restart-policy.js';
import { PREDECESSOR_BUSY_EXIT_CODE } from '../../src/errors.js';

const kill9: ChildExit = { code: null, signal: 'SIGKILL' };
const busy: ChildExit = { code: PREDECESSOR_BUSY_EXIT_CODE, signal: null };

describe('restart policy', () => {
  it('classifies exits: 0 clean, 75 restart, any other code or a signal a crash', () => {
    expect(RESTART_EXIT_CODE).toBe(75);
    expect(classifyExit({ code: 0, signal: null })).toBe('clean');
    expect(classifyExit({ code: 75, signal: null })).toBe('restart');
    expect(classifyExit(busy)).toBe('predecessor-busy');
    for (const code of [1, 2, 3, 74, 76, 127, 255]) expect(classifyExit({ code, signal: null })).toBe('crash');
    for (const signal of ['SIGKILL', 'SIGSEGV', 'SIGABRT', 'SIGTERM'] as const) expect(classifyExit({ code: null, signal })).toBe('crash');
    expect(describeExit(kill9)).toBe('signal SIGKILL');
    expect(describeExit({ code: 3, signal: null })).toBe('exit code 3');
  });

  it('exit 0 ends the supervisor; a crash or restart with the device gone too', () => {
    const s = initialPolicyState();
    expect(decide(s, { code: 0, signal: null }, 0, true).decision.action).toBe('exit');
    expect(decide(s, kill9, 0, false).decision.action).toBe('exit');
    expect(decide(s, { code: 75, signal: null }, 0, false).decision.action).toBe('exit');
  });

  it('a crash recovers after the short pause and records why; a restart starts at once and is not counted', () => {
    const s0 = initialPolicyState();
    const r = decide(s0, kill9, 1000, true);
    expect(r.decision).toEqual({ action: 'recover', delayMs: CRASH_PAUSE_MS, why: 'daemon exited (signal SIGKILL)' });
    expect(CRASH_PAUSE_MS).toBeLessThan(1000);
    expect(r.state.crashes).toEqual([1000]);
    expect(s0.crashes).toEqual([]); // the input is not changed
    let s: PolicyState = s0;
    for (let i = 0; i < 20; i++) {
      const d = decide(s, { code: 75, signal: null }, i, true);
      expect(d.decision).toMatchObject({ action: 'restart', delayMs: 0 });
      s = d.state;
    }
    expect(s.crashes).toEqual([]);
  });

  it(`gives up at the ${MAX_CRASHES}th crash within ${CRASH_WINDOW_MS / 1000} s`, () => {
    let s = initialPolicyState();
    const at = [0, 1000, 2000, 3000];
    for (const t of at) {
      const d = decide(s, kill9, t, true);
      expect(d.decision.action).toBe('recover');
      s = d.state;
    }
    const last = decide(s, { code: 1, signal: null }, CRASH_WINDOW_MS - 1, true);
    expect(last.decision).toEqual({ action: 'give-up', why: 'gave up after 5 crashes in 60 s (last: exit code 1)' });
  });

  it('crashes older than the window are forgotten: 5 crashes spread over more than 60 s are all recovered', () => {
    let s = initialPolicyState();
    for (let i = 0; i < 12; i++) {
      const d = decide(s, kill9, i * (CRASH_WINDOW_MS / 4 + 1), true);
      expect(d.decision.action).toBe('recover');
      s = d.state;
      expect(s.crashes.length).toBeLessThan(MAX_CRASHES);
    }
  });

  it('restarts between crashes do not reset the crash count', () => {
    let s = initialPolicyState();
    for (let i = 0; i < MAX_CRASHES - 1; i++) {
      s = decide(s, kill9, i * 10, true).state;
      s = decide(s, { code: 75, signal: null }, i * 10 + 5, true).state;
    }
    expect(decide(s, kill9, 100, true).decision.action).toBe('give-up');
  });

  // Review B: kill -9 while a backing I/O hangs on a failing main (SCSI timeouts: 30 s and more per try):
  // the dead daemon's io_uring keeps main's claim and /dev/ublkcN until that I/O ends, so each successor
  // fails after its 5 s of retries. Those exits are not crashes.
  it('does not give up while successors only wait for the dead daemon to release the device; pauses double to the maximum', () => {
    let r = decide(initialPolicyState(), kill9, 0, true);
    expect(r.decision.action).toBe('recover');
    let t = CRASH_PAUSE_MS;
    const delays: number[] = [];
    // Successors failing for 4.5 minutes: each ran ~5 s, then paused as told.
    while (t < RELEASE_WAIT_LIMIT_MS - 30_000) {
      t += 5_100;
      r = decide(r.state, busy, t, true);
      expect(r.decision.action).toBe('retry');
      if (r.decision.action !== 'retry') break;
      delays.push(r.decision.delayMs);
      t += r.decision.delayMs;
    }
    expect(delays.slice(0, 6)).toEqual([RELEASE_PAUSE_MS, 2000, 4000, 8000, RELEASE_PAUSE_MAX_MS, RELEASE_PAUSE_MAX_MS]);
    expect(RELEASE_PAUSE_MAX_MS).toBe(10_000);
    expect(r.state.crashes).toEqual([0]);
  });

  it(`gives up once successors found the device held for ${RELEASE_WAIT_LIMIT_MS / 1000} s, saying why`, () => {
    let r = decide(initialPolicyState(), kill9, 0, true);
    r = decide(r.state, busy, 5_000, true);
    expect(r.decision.action).toBe('retry');
    r = decide(r.state, busy, 5_000 + RELEASE_WAIT_LIMIT_MS - 1, true);
    expect(r.decision.action).toBe('retry');
    r = decide(r.state, busy, 5_000 + RELEASE_WAIT_LIMIT_MS, true);
    expect(r.decision).toEqual({
      action: 'give-up',
      why: "gave up after 300 s waiting for the dead daemon's process to release the device (main, spare or /dev/ublkcN still held)",
    });
  });

  it('a crash or a restart ends the wait: the next busy successor starts from the first pause and a new limit', () => {
    let r = decide(initialPolicyState(), kill9, 0, true);
    r = decide(r.state, busy, 5_000, true);
    r = decide(r.state, busy, 11_000, true);
    expect(r.decision).toMatchObject({ action: 'retry', delayMs: 2000 });
    r = decide(r.state, kill9, 20_000, true);
    expect(r.decision.action).toBe('recover');
    r = decide(r.state, busy, 25_000 + RELEASE_WAIT_LIMIT_MS - 10_000, true);
    expect(r.decision).toMatchObject({ action: 'retry', delayMs: RELEASE_PAUSE_MS });
    r = decide(r.state, { code: 75, signal: null }, 25_000 + RELEASE_WAIT_LIMIT_MS, true);
    r = decide(r.state, busy, 30_000 + RELEASE_WAIT_LIMIT_MS, true);
    expect(r.decision).toMatchObject({ action: 'retry', delayMs: RELEASE_PAUSE_MS });
  });
});

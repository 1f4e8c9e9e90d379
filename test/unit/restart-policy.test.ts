// The supervisor's restart policy as a pure function: exit classes and the 5-crashes-in-60-s give-up.
import { describe, expect, it } from 'vitest';
import {
  CRASH_PAUSE_MS,
  CRASH_WINDOW_MS,
  MAX_CRASHES,
  RESTART_EXIT_CODE,
  classifyExit,
  decide,
  describeExit,
  initialPolicyState,
  type ChildExit,
  type PolicyState,
} from '../../src/supervisor/restart-policy.js';

const kill9: ChildExit = { code: null, signal: 'SIGKILL' };

describe('restart policy', () => {
  it('classifies exits: 0 clean, 75 restart, any other code or a signal a crash', () => {
    expect(RESTART_EXIT_CODE).toBe(75);
    expect(classifyExit({ code: 0, signal: null })).toBe('clean');
    expect(classifyExit({ code: 75, signal: null })).toBe('restart');
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
});

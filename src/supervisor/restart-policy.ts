// What the supervisor does when its daemon exits: a pure function of the exit and the recent crash times,
// so the policy is tested without processes.
//
//   exit 0                    → the device was deleted (del, shutdown): the supervisor is done.
//   exit RESTART_EXIT_CODE    → the daemon detached on purpose (`restart`): start the successor at once;
//                               not a crash.
//   anything else (a signal, another exit code) while the device still exists → a crash: recover it, unless
//                               this is the MAX_CRASHES-th crash within CRASH_WINDOW_MS: then give up and
//                               leave the device quiesced.
//   exit PREDECESSOR_BUSY_EXIT_CODE → the successor could not take the device over yet (the dead daemon's
//                               process still holds main, the spare or /dev/ublkcN until a backing I/O ends):
//                               not a crash; retry after a pause that doubles from RELEASE_PAUSE_MS to
//                               RELEASE_PAUSE_MAX_MS, and give up once this has lasted RELEASE_WAIT_LIMIT_MS.
//   exit DELETING_EXIT_CODE   → the successor found a `del` of the device under way (E_DELETING): del owns
//                               the device and its registry entry; the supervisor is done, touching nothing.
//   exit RECOVERY_STUCK_EXIT_CODE → the kernel refuses the recovery for good (E_RECOVERY_STUCK): no retry
//                               helps; give up at once, with that reason and what to do (del).
//   a crash after which the device is gone → nothing to recover: the supervisor is done.
import { DELETING_EXIT_CODE, PREDECESSOR_BUSY_EXIT_CODE, RECOVERY_STUCK_EXIT_CODE } from '../errors.js';

/** The exit code of a daemon that detached from its device on purpose (restart, upgrade). */
export const RESTART_EXIT_CODE = 75;
export const MAX_CRASHES = 5;
export const CRASH_WINDOW_MS = 60_000;
/** Pause between a crash and the recovery attempt (brief, so a device is back well within a second). */
export const CRASH_PAUSE_MS = 100;
/** First pause after a successor found the device still held by its dead predecessor; doubles each time. */
export const RELEASE_PAUSE_MS = 1000;
export const RELEASE_PAUSE_MAX_MS = 10_000;
/** How long the supervisor keeps waiting for a dead daemon's process to let go of the device. */
export const RELEASE_WAIT_LIMIT_MS = 5 * 60_000;

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type ExitClass = 'clean' | 'restart' | 'predecessor-busy' | 'deleting' | 'recovery-stuck' | 'crash';

export function classifyExit(e: ChildExit): ExitClass {
  if (e.signal !== null) return 'crash';
  if (e.code === 0) return 'clean';
  if (e.code === RESTART_EXIT_CODE) return 'restart';
  if (e.code === PREDECESSOR_BUSY_EXIT_CODE) return 'predecessor-busy';
  if (e.code === DELETING_EXIT_CODE) return 'deleting';
  if (e.code === RECOVERY_STUCK_EXIT_CODE) return 'recovery-stuck';
  return 'crash';
}

/** "signal SIGKILL" / "exit code 3". */
export function describeExit(e: ChildExit): string {
  return e.signal !== null ? `signal ${e.signal}` : `exit code ${e.code ?? 'unknown'}`;
}

export type Decision =
  | { action: 'exit'; why: string }
  | { action: 'restart'; delayMs: 0; why: string }
  | { action: 'recover'; delayMs: number; why: string }
  /** Start the successor again after delayMs: the last one found the device still held by the dead daemon. */
  | { action: 'retry'; delayMs: number; why: string }
  | { action: 'give-up'; why: string };

export interface PolicyState {
  /** Times (ms) of the crashes still inside the window, oldest first. */
  crashes: number[];
  /** When successors began to find the device still held by the dead daemon (ms), or null; and the next pause. */
  busySince: number | null;
  busyPauseMs: number;
}

export const initialPolicyState = (): PolicyState => ({ crashes: [], busySince: null, busyPauseMs: RELEASE_PAUSE_MS });

/**
 * Decides what follows `exit` at time `now`. Returns the decision and the new state (the input is not
 * changed). `deviceExists` is whether the kernel still has the device (its /dev/ublkcN).
 */
export function decide(state: PolicyState, exit: ChildExit, now: number, deviceExists: boolean): { decision: Decision; state: PolicyState } {
  const cls = classifyExit(exit);
  const how = describeExit(exit);
  if (cls === 'clean') return { decision: { action: 'exit', why: 'daemon exited cleanly (exit code 0)' }, state };
  if (cls === 'deleting') return { decision: { action: 'exit', why: 'a del of the device is under way: it owns the device' }, state };
  if (!deviceExists) return { decision: { action: 'exit', why: `daemon exited (${how}) and its device is gone` }, state };
  if (cls === 'predecessor-busy') {
    const since = state.busySince ?? now;
    const waited = now - since;
    if (waited >= RELEASE_WAIT_LIMIT_MS) {
      const why = `gave up after ${Math.round(waited / 1000)} s waiting for the dead daemon's process to release the device (main, spare or /dev/ublkcN still held)`;
      return { decision: { action: 'give-up', why }, state: { ...state, busySince: since } };
    }
    const delayMs = state.busyPauseMs;
    const next = { ...state, busySince: since, busyPauseMs: Math.min(delayMs * 2, RELEASE_PAUSE_MAX_MS) };
    return { decision: { action: 'retry', delayMs, why: 'the dead daemon\'s process still holds the device' }, state: next };
  }
  if (cls === 'recovery-stuck') {
    const why =
      'gave up: the kernel refuses START_USER_RECOVERY (EINVAL), an earlier recovery was cut short after it started; ' +
      'no retry can help: run dmremap-ublk del on the device (its waiting I/O fails), then add it again (the remaps stay on the spare)';
    return { decision: { action: 'give-up', why }, state };
  }
  // Anything else ends a wait for the predecessor to let go.
  const settled = { ...state, busySince: null, busyPauseMs: RELEASE_PAUSE_MS };
  if (cls === 'restart') return { decision: { action: 'restart', delayMs: 0, why: 'daemon detached for a restart' }, state: settled };
  const crashes = [...state.crashes.filter((t) => now - t < CRASH_WINDOW_MS), now];
  const next = { ...settled, crashes };
  if (crashes.length >= MAX_CRASHES) {
    return { decision: { action: 'give-up', why: `gave up after ${MAX_CRASHES} crashes in ${CRASH_WINDOW_MS / 1000} s (last: ${how})` }, state: next };
  }
  return { decision: { action: 'recover', delayMs: CRASH_PAUSE_MS, why: `daemon exited (${how})` }, state: next };
}

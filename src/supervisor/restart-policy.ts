// What the supervisor does when its daemon exits: a pure function of the exit and the recent crash times,
// so the policy is tested without processes.
//
//   exit 0                    → the device was deleted (del, shutdown): the supervisor is done.
//   exit RESTART_EXIT_CODE    → the daemon detached on purpose (`restart`): start the successor at once;
//                               not a crash.
//   anything else (a signal, another exit code) while the device still exists → a crash: recover it, unless
//                               this is the MAX_CRASHES-th crash within CRASH_WINDOW_MS: then give up and
//                               leave the device quiesced.
//   a crash after which the device is gone → nothing to recover: the supervisor is done.

/** The exit code of a daemon that detached from its device on purpose (restart, upgrade). */
export const RESTART_EXIT_CODE = 75;
export const MAX_CRASHES = 5;
export const CRASH_WINDOW_MS = 60_000;
/** Pause between a crash and the recovery attempt (brief, so a device is back well within a second). */
export const CRASH_PAUSE_MS = 100;

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export type ExitClass = 'clean' | 'restart' | 'crash';

export function classifyExit(e: ChildExit): ExitClass {
  if (e.signal !== null) return 'crash';
  if (e.code === 0) return 'clean';
  if (e.code === RESTART_EXIT_CODE) return 'restart';
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
  | { action: 'give-up'; why: string };

export interface PolicyState {
  /** Times (ms) of the crashes still inside the window, oldest first. */
  crashes: number[];
}

export const initialPolicyState = (): PolicyState => ({ crashes: [] });

/**
 * Decides what follows `exit` at time `now`. Returns the decision and the new state (the input is not
 * changed). `deviceExists` is whether the kernel still has the device (its /dev/ublkcN).
 */
export function decide(state: PolicyState, exit: ChildExit, now: number, deviceExists: boolean): { decision: Decision; state: PolicyState } {
  const cls = classifyExit(exit);
  const how = describeExit(exit);
  if (cls === 'clean') return { decision: { action: 'exit', why: 'daemon exited cleanly (exit code 0)' }, state };
  if (!deviceExists) return { decision: { action: 'exit', why: `daemon exited (${how}) and its device is gone` }, state };
  if (cls === 'restart') return { decision: { action: 'restart', delayMs: 0, why: 'daemon detached for a restart' }, state };
  const crashes = [...state.crashes.filter((t) => now - t < CRASH_WINDOW_MS), now];
  const next = { crashes };
  if (crashes.length >= MAX_CRASHES) {
    return { decision: { action: 'give-up', why: `gave up after ${MAX_CRASHES} crashes in ${CRASH_WINDOW_MS / 1000} s (last: ${how})` }, state: next };
  }
  return { decision: { action: 'recover', delayMs: CRASH_PAUSE_MS, why: `daemon exited (${how})` }, state: next };
}

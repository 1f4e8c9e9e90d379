// The supervisor: the detached process `add` starts. It runs the daemon as its child, relays the child's
// first readiness line to `add`, and brings the device back when the daemon dies: a crash (a signal, an
// exit code other than 0 and RESTART_EXIT_CODE) while the device still exists starts `recover <id>
// --foreground` after CRASH_PAUSE_MS; RESTART_EXIT_CODE (the daemon detached for `restart`) starts it at
// once; PREDECESSOR_BUSY_EXIT_CODE (the dead daemon's process still holds the device) starts it again after
// a growing pause; exit 0 (del, shutdown) and DELETING_EXIT_CODE (a del is removing the device) end the
// supervisor; RECOVERY_STUCK_EXIT_CODE gives up at once. restart-policy.ts decides; this module only acts.
// A successor run by the warm standby exits with the same codes (the standby runs `recover` in its own
// process): its exit goes through the same decision.
//
// It holds no device open (not main, not the spare, not /dev/ublkcN: it only looks whether the node exists),
// so it never keeps a device busy or delays its deletion.
//
// Warm standby: a successor started after a crash would spend seconds importing modules and loading the
// addon before it even claims the device. So while a daemon runs, the supervisor keeps ONE standby child
// (`supervise standby`) that has done all that and waits on its stdin holding no device open; recover
// and restart hand it the successor's command line instead of spawning. The next standby is started once
// the successor reported the device live (not while it recovers, to leave it the CPU). A standby that dies
// while waiting is replaced after a pause (never counted as a daemon crash); when the supervisor ends it
// kills its standby, and a standby whose supervisor died sees its stdin close and exits.
import type { Logger } from '../log.js';
import type { ReadyMessage } from '../cli/readiness.js';
import { DELETING_EXIT_CODE } from '../errors.js';
import { decide, describeExit, initialPolicyState, type ChildExit, type PolicyState } from './restart-policy.js';

export interface SupervisedChild {
  readonly pid: number | undefined;
  /** The child's readiness line, or null when it closed its pipe (or died) without one. */
  readonly ready: Promise<ReadyMessage | null>;
  readonly exited: Promise<ChildExit>;
  kill(signal: NodeJS.Signals): void;
}

/** A pre-started successor waiting for its command line (see the top of this file). */
export interface StandbyChild {
  readonly pid: number | undefined;
  /** Resolves when the process exits, whether it was still waiting or had become the daemon. */
  readonly exited: Promise<ChildExit>;
  /** Whether it is still running (it may have died while waiting). */
  alive(): boolean;
  /** Hands it `args` (`recover <id> --foreground ...`): from then on it is the daemon. */
  activate(args: string[]): SupervisedChild;
  kill(signal: NodeJS.Signals): void;
}

/** First pause before a standby that died while waiting is replaced; doubles while they keep dying, up to the max. */
export const STANDBY_RESPAWN_MS = 1000;
export const STANDBY_RESPAWN_MAX_MS = 60_000;
/** A standby that waited this long before dying resets the pause to STANDBY_RESPAWN_MS. */
const STANDBY_STABLE_MS = 60_000;

export interface SupervisorDeps {
  /** Starts `dmremap-ublk <args>` as a child whose fd 3 is a readiness pipe. */
  start(args: string[]): SupervisedChild;
  /** Whether the kernel still has ublk device `devId`. */
  deviceExists(devId: number): boolean;
  /** The pid of a running daemon that owns device `devId` (its live registry entry), else null. */
  ownerPid(devId: number): number | null;
  /** Records in the device's registry entry why it is quiesced. */
  markQuiesced(devId: number, reason: string): void;
  /** Hands the first child's readiness to `add` (called at most once). */
  relay(msg: ReadyMessage): void;
  /** Starts a warm standby successor; without it every successor is spawned when needed. */
  startStandby?: () => StandbyChild;
  log: Logger;
  now?: () => number;
}

/** The successor's command line: recover the device, logging where the first daemon logged (its --log-file). */
export function recoverArgs(devId: number, firstArgs: readonly string[]): string[] {
  const i = firstArgs.lastIndexOf('--log-file');
  const logFile = i >= 0 ? firstArgs[i + 1] : undefined;
  return ['recover', String(devId), '--foreground', ...(logFile !== undefined ? ['--log-file', logFile] : [])];
}

export class Supervisor {
  private policy: PolicyState = initialPolicyState();
  private child: SupervisedChild | null = null;
  private childReady = false;
  private stopSignal: NodeJS.Signals | null = null;
  private wake: (() => void) | null = null;
  private standby: StandbyChild | null = null;
  private standbyTimer: NodeJS.Timeout | null = null;
  private standbyPauseMs = STANDBY_RESPAWN_MS;
  private finished = false;

  constructor(
    private readonly firstArgs: string[],
    private readonly deps: SupervisorDeps,
  ) {}

  /**
   * Asks the daemon to shut down cleanly (SIGTERM: it stops and deletes its device) and the supervisor to
   * exit after it. A daemon still starting is told once it reports ready; during the pause after a crash
   * the recovery starts at once, so that the device is recovered and then deleted.
   */
  stop(signal: NodeJS.Signals): void {
    if (this.stopSignal !== null) return;
    this.stopSignal = signal;
    this.deps.log.info({ signal }, 'supervisor stopping: shutting the daemon down');
    this.dropStandby();
    if (this.child !== null && this.childReady) this.child.kill('SIGTERM');
    this.wake?.();
  }

  /** Runs until the device is gone, the daemon exited cleanly, or the supervisor gave up. Resolves with its exit code. */
  async run(): Promise<number> {
    try {
      return await this.supervise();
    } finally {
      // No orphan: the standby never outlives its supervisor.
      this.finished = true;
      this.dropStandby();
    }
  }

  private async supervise(): Promise<number> {
    const { log } = this.deps;
    const now = this.deps.now ?? Date.now;
    const first = this.spawn(this.firstArgs);
    const ready = await first.ready;
    if (ready === null || !ready.ok) {
      if (ready !== null) this.deps.relay(ready);
      const exit = await first.exited;
      log.info({ exit: describeExit(exit) }, 'daemon did not start; supervisor exits');
      return exit.code !== null && exit.code !== 0 ? exit.code : 1;
    }
    this.deps.relay(ready);
    const devId = ready.devId;
    log.info({ devId, daemonPid: ready.pid, supervisorPid: process.pid }, 'supervising daemon');
    let current = first;
    for (;;) {
      const exit = await current.exited;
      this.child = null;
      const exists = this.deps.deviceExists(devId);
      const { decision, state } = decide(this.policy, exit, now(), exists);
      this.policy = state;
      const fields = { devId, daemonPid: current.pid, exit: describeExit(exit) };
      switch (decision.action) {
        case 'exit':
          log.info({ ...fields, why: decision.why }, 'supervisor exits');
          // A del under way (DELETING_EXIT_CODE) owns the device and its entry: nothing is written here.
          return exit.code === 0 || exit.code === DELETING_EXIT_CODE || !exists ? 0 : 1;
        case 'give-up':
          log.error({ ...fields, why: decision.why }, 'not restarting the daemon again: the device stays quiesced');
          this.deps.markQuiesced(devId, decision.why);
          return 1;
        case 'restart':
        case 'retry':
        case 'recover': {
          if (decision.action === 'recover') {
            log.error({ ...fields, why: decision.why }, 'daemon died; recovering the device');
            this.deps.markQuiesced(devId, decision.why);
          } else if (decision.action === 'retry') {
            log.warn({ ...fields, why: decision.why, delayMs: decision.delayMs }, 'device not released yet by the dead daemon; trying again');
          } else {
            log.info(fields, 'daemon detached for a restart; starting its successor');
          }
          if (decision.delayMs > 0) await this.pause(decision.delayMs);
          // Someone else (`recover` by hand) may have brought the device back meanwhile: one daemon per device.
          const owner = this.deps.ownerPid(devId);
          if (owner !== null) {
            log.info({ devId, owner }, 'another daemon serves the device now; supervisor exits');
            return 0;
          }
          if (!this.deps.deviceExists(devId)) {
            log.info({ devId }, 'device deleted meanwhile; supervisor exits');
            return 0;
          }
          // A restart is the upgrade path: its successor runs the code installed now, never the standby that
          // imported the code of before (dropped; the next one starts once the successor is live).
          if (decision.action === 'restart') this.dropStandby();
          current = this.spawn(recoverArgs(devId, this.firstArgs), decision.action === 'recover');
          void current.ready.then((r) => {
            if (r?.ok) log.info({ devId, daemonPid: r.pid }, 'device recovered');
          });
          break;
        }
      }
    }
  }

  /** Starts the daemon `args`: hands them to the waiting standby if `warm` and there is a live one, else spawns it. */
  private spawn(args: string[], warm = false): SupervisedChild {
    const standby = warm ? this.takeStandby() : null;
    const child = standby !== null ? standby.activate(args) : this.deps.start(args);
    if (standby !== null) this.deps.log.info({ standbyPid: standby.pid }, 'successor: the warm standby');
    this.child = child;
    this.childReady = false;
    void child.ready.then((r) => {
      if (this.child !== child || r === null || !r.ok) return;
      this.childReady = true;
      if (this.stopSignal !== null) child.kill('SIGTERM');
      else this.startStandby();
    });
    return child;
  }

  /** The waiting standby, now taken (a dead one is dropped), or null. */
  private takeStandby(): StandbyChild | null {
    const s = this.standby;
    this.standby = null;
    if (s === null) return null;
    if (s.alive()) return s;
    s.kill('SIGKILL');
    return null;
  }

  /** Starts a standby unless there is one, one is scheduled, none is wanted, or the supervisor is ending. */
  private startStandby(): void {
    const start = this.deps.startStandby;
    if (start === undefined || this.standby !== null || this.standbyTimer !== null || this.finished || this.stopSignal !== null) return;
    let s: StandbyChild;
    try {
      s = start();
    } catch (e) {
      // fork refused (ENOMEM, ...): the standby only makes recovery faster, never a reason for the supervisor to end.
      this.standbyLater({ err: String(e) }, 'cannot start a standby; trying again later');
      return;
    }
    this.standby = s;
    const startedAt = (this.deps.now ?? Date.now)();
    this.deps.log.debug({ standbyPid: s.pid }, 'standby started');
    void s.exited.then((exit) => {
      if (this.standby !== s) return; // activated (its exit is the daemon's) or dropped
      this.standby = null;
      if (this.finished || this.stopSignal !== null) return;
      if ((this.deps.now ?? Date.now)() - startedAt >= STANDBY_STABLE_MS) this.standbyPauseMs = STANDBY_RESPAWN_MS;
      this.standbyLater({ standbyPid: s.pid, exit: describeExit(exit) }, 'standby exited while waiting; replacing it (not a daemon crash)');
    });
  }

  /** Starts the next standby after the current pause (doubling it, up to STANDBY_RESPAWN_MAX_MS), logging why. */
  private standbyLater(fields: Record<string, unknown>, msg: string): void {
    const delayMs = this.standbyPauseMs;
    this.standbyPauseMs = Math.min(delayMs * 2, STANDBY_RESPAWN_MAX_MS);
    this.deps.log.warn({ ...fields, delayMs }, msg);
    this.standbyTimer = setTimeout(() => {
      this.standbyTimer = null;
      // Only while a daemon runs: a recovery in progress starts the next standby once it is ready.
      if (this.child !== null && this.childReady) this.startStandby();
    }, delayMs);
  }

  private dropStandby(): void {
    if (this.standbyTimer !== null) clearTimeout(this.standbyTimer);
    this.standbyTimer = null;
    const s = this.standby;
    this.standby = null;
    s?.kill('SIGTERM');
  }

  /** Waits `ms`, or less if stop() is called meanwhile. */
  private pause(ms: number): Promise<void> {
    if (this.stopSignal !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
      const t = setTimeout(done, ms);
      this.wake = done;
    });
  }
}

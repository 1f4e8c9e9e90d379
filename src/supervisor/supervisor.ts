// The supervisor: the detached process `add` starts. It runs the daemon as its child, relays the child's
// first readiness line to `add`, and brings the device back when the daemon dies: a crash (a signal, an
// exit code other than 0 and RESTART_EXIT_CODE) while the device still exists starts `recover <id>
// --foreground` after CRASH_PAUSE_MS; RESTART_EXIT_CODE (the daemon detached for `restart`) starts it at
// once; PREDECESSOR_BUSY_EXIT_CODE (the dead daemon's process still holds the device) starts it again after
// a growing pause; exit 0 (del, shutdown) ends the supervisor. restart-policy.ts decides; this module only acts.
//
// It holds no device open (not main, not the spare, not /dev/ublkcN: it only looks whether the node exists),
// so it never keeps a device busy or delays its deletion.
import type { Logger } from '../log.js';
import type { ReadyMessage } from '../cli/readiness.js';
import { decide, describeExit, initialPolicyState, type ChildExit, type PolicyState } from './restart-policy.js';

export interface SupervisedChild {
  readonly pid: number | undefined;
  /** The child's readiness line, or null when it closed its pipe (or died) without one. */
  readonly ready: Promise<ReadyMessage | null>;
  readonly exited: Promise<ChildExit>;
  kill(signal: NodeJS.Signals): void;
}

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
    if (this.child !== null && this.childReady) this.child.kill('SIGTERM');
    this.wake?.();
  }

  /** Runs until the device is gone, the daemon exited cleanly, or the supervisor gave up. Resolves with its exit code. */
  async run(): Promise<number> {
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
          return exit.code === 0 || !exists ? 0 : 1;
        case 'give-up':
          log.error({ ...fields, why: decision.why }, 'not restarting the daemon again: the device stays quiesced (dmremap-ublk recover or del)');
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
          current = this.spawn(recoverArgs(devId, this.firstArgs));
          void current.ready.then((r) => {
            if (r?.ok) log.info({ devId, daemonPid: r.pid }, 'device recovered');
          });
          break;
        }
      }
    }
  }

  private spawn(args: string[]): SupervisedChild {
    const child = this.deps.start(args);
    this.child = child;
    this.childReady = false;
    void child.ready.then((r) => {
      if (this.child !== child || r === null || !r.ok) return;
      this.childReady = true;
      if (this.stopSignal !== null) child.kill('SIGTERM');
    });
    return child;
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

// What a command runs against: the environment, the output streams, and how to get the native addon.
// The CLI entry point fills it from the process; tests fill it with their own.
import type { ChildProcess } from 'node:child_process';
import type { NativeAddon } from '../native.js';
import type { ChildExit } from '../supervisor/restart-policy.js';

export interface Out {
  write(s: string): unknown;
}

export interface CliContext {
  env: NodeJS.ProcessEnv;
  stdout: Out;
  stderr: Out;
  stderrIsTTY: boolean;
  /** Whether stdout is a terminal (scan --watch draws a bar there, plain lines otherwise); unset: not. */
  stdoutIsTTY?: boolean;
  loadNative: () => Promise<NativeAddon>;
  /**
   * Whether this process exits with the code the command returns (the CLI entry point, run()): a daemon
   * command then bounds that exit (serveForeground's exit watchdog). Tests running commands in their own
   * process leave it unset.
   */
  exitsAfter?: boolean;
  /**
   * The daemon child a `supervise` command line started before the CLI loaded (bin/early-daemon.js), for
   * runSupervise to adopt as its first child; unset or null otherwise.
   */
  earlyDaemon?: EarlyDaemon | null;
}

/** A daemon spawned by bin/early-daemon.js: the argv it runs, the process, and its exit (listened for since the spawn). */
export interface EarlyDaemon {
  args: string[];
  child: ChildProcess;
  exited: Promise<ChildExit>;
  /** What the child wrote and writes on its readiness pipe (fd 3), read since the spawn. */
  readyPipe: NodeJS.ReadableStream;
}

export const PROG = 'dmremap-ublk';

export function printJson(ctx: CliContext, value: unknown): void {
  ctx.stdout.write(`${JSON.stringify(value)}\n`);
}

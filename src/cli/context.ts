// What a command runs against: the environment, the output streams, and how to get the native addon.
// The CLI entry point fills it from the process; tests fill it with their own.
import type { NativeAddon } from '../native.js';

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
}

export const PROG = 'dmremap-ublk';

export function printJson(ctx: CliContext, value: unknown): void {
  ctx.stdout.write(`${JSON.stringify(value)}\n`);
}

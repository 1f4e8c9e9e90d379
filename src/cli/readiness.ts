// The readiness channel between `add` and the daemon it detaches: the daemon writes exactly one JSON line
// to the file descriptor named by DMREMAP_READY_FD (the parent's extra pipe, fd 3), then closes it.
import fs from 'node:fs';
import * as z from 'zod';
import type { DmrError } from '../errors.js';
import { TABLE_UUID_RE } from '../device/table-uuid.js';

import { READY_FD_ENV } from '../../bin/spawn-env.js';

/** The readiness pipe's variable (bin/spawn-env.js, shared with bin/early-daemon.js). */
export { READY_FD_ENV };

export const readyMessageSchema = z.discriminatedUnion('ok', [
  z.strictObject({
    ok: z.literal(true),
    devId: z.number().int().nonnegative(),
    blockPath: z.string(),
    name: z.string().nullable(),
    pid: z.number().int().positive(),
    /** The UUID of the remap table the daemon opened (`add --persist` records it); absent from older daemons. */
    pairId: z.string().regex(TABLE_UUID_RE).optional(),
  }),
  z.strictObject({ ok: z.literal(false), code: z.string(), message: z.string() }),
]);
export type ReadyMessage = z.infer<typeof readyMessageSchema>;
export type Ready = Extract<ReadyMessage, { ok: true }>;

/** Takes the readiness fd out of the environment (so nothing the daemon starts inherits it). */
export function takeReadyFd(env: NodeJS.ProcessEnv): number | null {
  const v = env[READY_FD_ENV];
  delete env[READY_FD_ENV];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : null;
}

/** Writes the one message and closes the fd. A parent that already gave up (EPIPE) is not an error. */
export function sendReady(fd: number, msg: ReadyMessage): void {
  try {
    fs.writeSync(fd, `${JSON.stringify(msg)}\n`);
  } catch {
    // The parent is gone; the daemon carries on (or exits) regardless.
  }
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed.
  }
}

export const failureMessage = (e: DmrError): ReadyMessage => ({ ok: false, code: e.code, message: e.message });

/**
 * Calls `onLine` once with the first line read from `pipe` (a daemon's readiness pipe), parsed: the message,
 * or null when it is not a valid one. Later data is ignored.
 */
export function onFirstReadyLine(pipe: NodeJS.ReadableStream, onLine: (msg: ReadyMessage | null) => void): void {
  let buf = '';
  let seen = false;
  pipe.setEncoding('utf8');
  pipe.on('data', (chunk: string) => {
    if (seen) return;
    buf += chunk;
    const nl = buf.indexOf('\n');
    if (nl < 0) return;
    seen = true;
    let raw: unknown;
    try {
      raw = JSON.parse(buf.slice(0, nl));
    } catch {
      raw = undefined;
    }
    const parsed = readyMessageSchema.safeParse(raw);
    onLine(parsed.success ? parsed.data : null);
  });
}

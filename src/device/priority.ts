// Who gets the CPU first when it is short: the data path. The queue threads (native) serve every request
// to healthy blocks; the JS thread decides what to do about errors (auto-remap), answers the control
// socket and commits the table. During an error storm the JS thread is busy for as long as the failing
// writes keep coming, and at equal priority it takes CPU from the requests that have nothing wrong with
// them. So once the device is live, the JS thread lowers its own priority by a few nice levels (on Linux
// the nice value is per thread: the queue threads, started before, keep theirs). Error handling still
// runs under load, only after healthy I/O; its latency is what `stats` and the benchmark show.
import os from 'node:os';
import type { Logger } from '../log.js';

/** Nice levels the control (JS) thread runs below the data path. */
export const CONTROL_NICE_STEP = 5;

/** Lowers the calling thread's priority by `step` nice levels (at most 19); returns the new value, or null when it could not. */
export function lowerControlPriority(log: Logger, step = CONTROL_NICE_STEP): number | null {
  try {
    const before = os.getPriority(0);
    const after = Math.min(19, before + step);
    os.setPriority(0, after);
    log.debug({ before, after }, 'control thread runs below the data path');
    return after;
  } catch (e) {
    log.warn({ err: String(e) }, 'cannot lower the control thread priority; it competes with the data path');
    return null;
  }
}

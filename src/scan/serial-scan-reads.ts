// Native runs one scanRead per device at a time (a second one is refused with EBUSY). The background scan
// and the judge of users' slow reads (user-slow-reads.ts) both read through native's scanRead: this wrapper
// queues their calls, in the order made, so that neither is refused for the other. A call that fails does
// not hold up the next one.
import type { ScanDevice } from './scanner.js';

/** `device` with its scanRead calls run one after another (first come, first served); the rest passes through. */
export function serialScanReads(device: ScanDevice): ScanDevice {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    scanRead(offset, bytes, narrow) {
      const call = tail.then(() => device.scanRead(offset, bytes, narrow));
      tail = call.catch(() => undefined);
      return call;
    },
    tableGeneration: () => device.tableGeneration(),
    stats: () => device.stats(),
  };
}

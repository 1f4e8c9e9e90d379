// The one place TypeScript meets the C++ addon. Everything the addon exposes is typed here, and
// every other module goes through this file: nothing else calls `require` on the binary.
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** What the kernel's ublk driver offers, from GET_FEATURES (0n where the kernel predates it). */
export interface UblkProbe {
  /** /dev/ublk-control could be opened. */
  controlAvailable: boolean;
  /** errno from opening /dev/ublk-control when it could not be opened, else 0. */
  controlErrno: number;
  /** UBLK_F_* bits the kernel supports (GET_FEATURES), 0n when GET_FEATURES is not supported. */
  features: bigint;
  /** Whether GET_FEATURES answered at all (kernel >= 6.5). */
  featuresKnown: boolean;
  /** The command encoding the addon will use: ioctl-encoded UBLK_U_* or the legacy numbers. */
  opcodeEncoding: 'ioctl' | 'legacy';
}

/** Geometry and capabilities of an opened backing device (main or spare). */
export interface BackingInfo {
  path: string;
  /** Size in bytes. */
  sizeBytes: bigint;
  /** True for a block device, false for a regular file. */
  isBlockDevice: boolean;
  /** st_rdev for block devices, else 0. Compare with `ino`/`dev` to detect main == spare. */
  rdev: bigint;
  dev: bigint;
  ino: bigint;
  /** Logical and physical block sizes in bytes (512/4096 for files). */
  logicalBlockSize: number;
  physicalBlockSize: number;
  /** Whether the device takes discards (a block device with discard_max_bytes > 0, or a regular file). */
  discard: boolean;
  /** Whether the device reports itself rotational (a spinning disk). */
  rotational: boolean;
}

/**
 * An exclusive open of a backing device (claimBacking): O_EXCL on a block device, flock on a regular file,
 * with the geometry probed on that fd (the path is opened once).
 */
export interface BackingClaim extends BackingInfo {
  /** O_RDWR | O_DIRECT | O_CLOEXEC; closed by releaseBacking. */
  fd: number;
  isBlockDevice: boolean;
  /** st_rdev for a block device, else 0n; st_dev and st_ino of what was opened. */
  rdev: bigint;
  dev: bigint;
  ino: bigint;
}

export interface DeviceOptions {
  mainPath: string;
  sparePath: string;
  /**
   * Claims of main and spare (claimBacking): the device serves through dups of these and never opens the
   * paths itself; the caller releases them after stop(). Absent: the device opens the paths (tests only).
   */
  mainFd?: number;
  spareFd?: number;
  /** Number of ublk hardware queues (1..limits.maxQueues). */
  queues: number;
  /** Queue depth (1..limits.maxDepth). */
  depth: number;
  /** Logical block size exposed by /dev/ublkbN: 512 or 4096. */
  blockSize: 512 | 4096;
  /** Device size exposed in bytes (multiple of blockSize, <= main size). */
  sizeBytes: bigint;
  /** Largest single I/O in bytes (multiple of 4096). */
  maxIoBytes: number;
  /**
   * Advertise discard (only where main supports discard; a discard goes to main only, never to a remapped
   * block's slot). Write-zeroes is always advertised, whatever this says: it is served as a write.
   */
  discard: boolean;
  /** Requested ublk device id, or -1 for the kernel to choose. */
  devId: number;
  /**
   * Zero copy (UBLK_F_AUTO_BUF_REG, kernel 6.16+): backing I/O reads and writes the request's own pages.
   * Off (or absent): the kernel copies each request into the queue's buffers (works on every kernel).
   */
  zeroCopy?: boolean;
  /** Byte offset of remap slot 0 on the spare; slot s holds one block at spareDataOffset + s * blockSize. */
  spareDataOffset?: bigint;
  /**
   * Park failed reads and writes instead of completing them with their errno: the request waits in native
   * and is reported as an `io_fault` event until resolveFault() says what to do (default false: a failure
   * completes the request with its errno and is reported as `io_error`). Switch with setFaultParking().
   */
  parkFaults?: boolean;
  /**
   * A successful user read slower than this (µs, a whole number) is reported as a `slow_io` event (at most
   * 16 per queue per second; the rest are counted in the next event's `dropped`). 0 or absent: no report.
   * Switch with setSlowIoUs().
   */
  slowIoUs?: number;
  /** Called on the JS thread for each event the data path reports. */
  onEvent: (event: NativeEvent) => void;
}

/** What to do with a request parked by an `io_fault` event. */
export type FaultAction =
  /**
   * Plan the request again against the current remap table and submit it again (parked on a MOVING block,
   * failed on a LOST one for reads, like a new request). `narrow`: one backing I/O per block, so that a
   * failure is reported for exactly the blocks that failed.
   */
  | { action: 'retry'; narrow?: boolean }
  /** Complete the request with -errno. */
  | { action: 'fail'; errno: number }
  /** Complete the request with success: only for kind 'lost_written' (its data is in the slots). */
  | { action: 'complete' };

/** A range of blocks of the exported device (remap units: main block numbers). */
export interface FaultRange {
  /** Where the failed I/O went: main, or the spare slots of remapped blocks. */
  device: BackingRole;
  /** First block (main block number, also for a spare part: the block that maps there). */
  block: number;
  blocks: number;
  /** Positive errno (a zero-length transfer reports EIO). */
  errno: number;
}

/** UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE: devices are created with both where the kernel offers both. */
export const UBLK_F_USER_RECOVERY = 1n << 3n;
export const UBLK_F_USER_RECOVERY_REISSUE = 1n << 4n;

/** Flags of setRemapTable/updateRemapTable entries. */
export const REMAP_FLAG_LOST = 1;
export const REMAP_FLAG_MOVING = 2;
/**
 * A failed write's redirect to its reserved slot, not committed yet: writes go to the slot (reported
 * lost_written, as for LOST), reads wait in native for the next table (native/remap_index.h kRemapRedirect).
 */
export const REMAP_FLAG_REDIRECT = 4;
/** updateRemapTable only, alone: drops the block's entry. */
export const REMAP_FLAG_REMOVE = 0x80;

export type IoOp = 'read' | 'write' | 'flush' | 'discard' | 'write_zeroes';
export type BackingRole = 'main' | 'spare';

export type NativeEvent =
  | { type: 'queue_started'; queue: number; tid: number }
  | { type: 'queue_stopped'; queue: number; reason: string }
  | {
      /** A failed request part, passed to the user; op 'discard': a piece main refused, the request succeeded. */
      type: 'io_error';
      queue: number;
      op: IoOp;
      device: BackingRole;
      /** First 512-byte sector of the failed part, in the backing device's address space. */
      sector: bigint;
      /** Length of the failed part in 512-byte sectors. */
      sectors: number;
      /** Positive errno (EIO=5, ENODATA=61, ...). */
      errno: number;
      latencyUs: number;
    }
  | {
      /**
       * A request is parked until resolveFault(queue, tag, seq, ...). kind 'error': parts of it failed (with
       * parking on); `failed` lists them. kind 'lost_written': a write (or discard / write-zeroes) touched
       * LOST blocks; its data went to their slots and every part succeeded; `written` lists the LOST ranges.
       * A discard never reports lost_written: it leaves LOST blocks LOST.
       */
      type: 'io_fault';
      queue: number;
      tag: number;
      /** Identifies this request's dispatch: a resolve with another seq is ignored. */
      seq: number;
      op: IoOp;
      kind: 'error' | 'lost_written';
      /** The request: first block and length in blocks. */
      block: number;
      blocks: number;
      /** 0 on the first report, +1 for each retry. */
      attempt: number;
      /** Since the request was dispatched. */
      latencyUs: number;
      failed: FaultRange[];
      /**
       * kind 'lost_written': blocks block..block+blocks-1 went to spare slots slot..slot+blocks-1 (a run
       * whose slots are not consecutive is split). Empty for kind 'error'.
       */
      written: Array<{ block: number; blocks: number; slot: number }>;
    }
  | {
      /**
       * A user read that succeeded slower than slowIoUs (its first attempt, never parked on a moving block):
       * a suspect, not a verdict (a queue of users' requests makes reads slow too).
       */
      type: 'slow_io';
      queue: number;
      /** The request: first block and length in blocks. */
      block: number;
      blocks: number;
      /** From the request's dispatch to its completion. */
      latencyUs: number;
      /** Requests of this queue in flight at the completion, this one included. */
      inflight: number;
      /** Slow reads of this queue not reported (rate limit) since its previous slow_io event. */
      dropped: number;
    }
  | {
      /** A request that had been reported by io_fault (kind 'error') completed successfully after a retry. */
      type: 'fault_cleared';
      queue: number;
      tag: number;
      seq: number;
      attempts: number;
    };

/** One piece of a scan read (scanRead): a run of blocks read with one O_DIRECT read, or skipped. */
export interface ScanSegment {
  /** Where the blocks were read: main, or their spare slots (remapped blocks; also names skipped remapped blocks). */
  device: BackingRole;
  /** First block (exported device's block number, in blockSize units) and how many. */
  block: number;
  blocks: number;
  /**
   * Why the piece was not read: 'moving' (a move is copying it, or a failed write is being redirected to it:
   * the data path holds reads of it; read it again later) or 'lost' (its data is gone: a user read fails with EIO without any I/O). null: read.
   */
  skipped: 'moving' | 'lost' | null;
  /** How long the read took (0 when skipped). */
  latencyUs: number;
  /** Positive errno of a failed read (EIO, ENODATA, ...), 0 when it succeeded or was skipped. */
  errno: number;
}

/** What scanRead read: the range asked for, cut into pieces in block order that cover it exactly. */
export interface ScanReadResult {
  offset: bigint;
  bytes: number;
  segments: ScanSegment[];
}

/**
 * What the addon's scanRead answers: a ScanReadResult whose pieces may stop short of the range asked for
 * (`stopped`): `segments` then cover [offset, offset + coveredBytes) exactly, `bytes` is still the length
 * asked for, and the caller asks again from offset + coveredBytes for the rest.
 */
export interface NativeScanReadResult extends ScanReadResult {
  /** Bytes from `offset` the segments cover: `bytes` unless the call stopped early. */
  coveredBytes: number;
  /**
   * Why the call stopped early, null when it covered the whole range: 'narrow_cap' (a narrow call covers
   * 1 MiB at most: native/scan_reader.h kScanNarrowMaxBytes), 'failures' (32 reads failed,
   * kScanMaxFailures: each is a command the failing disk's error handling may take seconds over, so one
   * call issues no more than that).
   */
  stopped: 'narrow_cap' | 'failures' | null;
  /**
   * The remap table generation (tableGeneration()) the oldest piece was planned against; every piece was
   * planned against this generation or a newer one. Equal to tableGeneration() now: every piece was read
   * where the table still maps it; older: the table changed since, perhaps while a piece was being read (no
   * drain waits for the scanner), so a failure or a slow read may have been on a place the block has left:
   * read it again before acting on it.
   */
  generation: number;
}

/** Counters of one queue, cumulative since start. */
export interface QueueStats {
  queue: number;
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  readBytes: number;
  writeBytes: number;
  errors: number;
  inflight: number;
  /** Backing writes (and write-zeroes) to main done whole; `writes` counts requests at dispatch. */
  mainWritesOk: number;
  /** Backing writes (and write-zeroes) to main that failed. */
  mainWritesFailed: number;
  /** log2 latency histogram: bucket i counts I/Os that took [2^i, 2^(i+1)) microseconds. */
  latencyLog2Us: number[];
}

export interface DeviceInfo {
  devId: number;
  blockPath: string;
  charPath: string;
  queues: number;
  depth: number;
  /** UBLK_F_* flags the device was added with. */
  flags: bigint;
  /** ublk state as reported by GET_DEV_INFO: 'dead' | 'live' | 'quiesced' | 'fail_io' | 'unknown'. */
  state: string;
  /** Whether the data path uses registered (fixed) buffers. */
  fixedBuffers: boolean;
  /** Whether requests are served zero-copy (UBLK_F_AUTO_BUF_REG). */
  zeroCopy: boolean;
}

/** A ublk device served by the addon's queue threads. */
export interface NativeDevice {
  /** ADD_DEV, SET_PARAMS, start the queue threads, START_DEV. Resolves once /dev/ublkbN is live. */
  start(): Promise<DeviceInfo>;
  /** STOP_DEV, join every queue thread, close the char device, DEL_DEV. Idempotent. */
  stop(): Promise<void>;
  /**
   * Instead of start(): ublk user recovery of the existing device `devId` (whose server died or detached).
   * Refuses (NativeError, nothing changed) a device created without UBLK_F_USER_RECOVERY (EOPNOTSUPP) or
   * with other queues, depth, maxIoBytes, blockSize, sizeBytes or zero copy (EINVAL), and one that is not
   * quiesced within 5 s (EBUSY: live, or the dead server's /dev/ublkcN still held). START_USER_RECOVERY,
   * queue threads, END_USER_RECOVERY; no SET_PARAMS. Requests the dead server held are reissued to us.
   * A failure never deletes the kernel device. After it resolves, stop() deletes the device as usual.
   */
  recover(): Promise<DeviceInfo>;
  /**
   * Leaves the device to a successor (recover() in another process): backing I/O in flight completes,
   * every other request is left uncommitted (the kernel reissues it), the queue threads exit and
   * /dev/ublkcN is closed; no STOP_DEV/DEL_DEV: the kernel quiesces the device. stop() is a no-op after it.
   */
  detach(): Promise<void>;
  info(): DeviceInfo;
  stats(): QueueStats[];
  /**
   * Replaces the remap index the data path consults (before start, or while serving): blocks sorted and
   * unique, inside the device; flags bit 0 = LOST (never served: reads and writes fail with EIO), bit 1 =
   * MOVING (requests touching the block wait in native until a table without MOVING for it is published).
   */
  setRemapTable(blocks: BigUint64Array, slots: BigUint64Array, flags: Uint8Array): void;
  /**
   * Changes the entries of these blocks only (same checks as setRemapTable): an entry replaces the block's
   * entry or adds one; flags REMAP_FLAG_REMOVE drops it (nothing happens where the block has none). The
   * native side copies its table once instead of taking a whole new one from here.
   */
  updateRemapTable(blocks: BigUint64Array, slots: BigUint64Array, flags: Uint8Array): void;
  /**
   * Resolves once every read/write dispatched before the call has completed (requests parked on a MOVING block
   * excepted). It does not wait for a scanRead in flight (a piece may sit for tens of seconds in a failing
   * drive's error recovery): a scan read writes nothing, and its result's `generation`, older than
   * tableGeneration() once the caller publishes again, says it may have read a place a block has since left.
   * Rejects (NativeError ETIMEDOUT) when the requests are still in flight after 30 s.
   */
  drain(): Promise<void>;
  /** Copies `bytes` between backing devices with O_DIRECT on a worker thread; rejects with a NativeError (EIO, ENODATA...). */
  copyRange(from: BackingRole, fromOffset: bigint, to: BackingRole, toOffset: bigint, bytes: number): Promise<void>;
  /** Reads `bytes` with O_DIRECT from a backing device; rejects with a NativeError on failure. */
  readRange(from: BackingRole, offset: bigint, bytes: number): Promise<Buffer>;
  /** fdatasync of a backing device. */
  flush(which: BackingRole): Promise<void>;
  /**
   * The scanner's read of the exported range [offset, offset + bytes) (whole blocks inside the device, up to
   * 16 MiB), on a pool thread, piece by piece: each piece planned against the remap table current when it
   * starts, as a user read is (unmapped runs from main, remapped runs from their slots), MOVING and LOST
   * blocks skipped, read O_DIRECT into a native buffer (the data is not returned). A piece is at most
   * maxIoBytes (`narrow`: one block). Counts in no user counter (stats()) and is never parked: a failed piece
   * is its errno in the result. A call stops early (`stopped`, `coveredBytes`) after 32 failed reads, and a
   * narrow one after 1 MiB. drain() does not wait for it: a table published while a piece is in flight
   * leaves the result's `generation` older than tableGeneration(), and the caller reads again or does not count it.
   * One scan read at a time per device. Rejects (NativeError) with EINVAL for a bad range, EBUSY at once when
   * another scanRead of this device is running, ENODEV when the device is not running (not started,
   * stopped, detached, shut down; stop() and detach() end a running scanRead before its next piece, which
   * then rejects with ENODEV, and wait for it). A non-integer `bytes`, or one outside 512..16 MiB or not a
   * multiple of 512, throws a RangeError.
   */
  scanRead(offset: bigint, bytes: number, narrow?: boolean): Promise<NativeScanReadResult>;
  /**
   * The generation of the remap table published last: 1 before any publish, one more per setRemapTable or
   * updateRemapTable (what scanRead's `generation` is compared with).
   */
  tableGeneration(): number;
  /** Turns parking of failed reads/writes on or off (see DeviceOptions.parkFaults); affects failures seen after the call. */
  setFaultParking(on: boolean): void;
  /** Sets the slow_io threshold (see DeviceOptions.slowIoUs); affects reads completing after the call. */
  setSlowIoUs(us: number): void;
  /**
   * Resolves a request parked by an io_fault event. Runs on the queue thread after every table published
   * before the call. A resolve for a request that is not parked with this seq is ignored.
   */
  resolveFault(queue: number, tag: number, seq: number, action: FaultAction): void;
}

/** A ublk device the kernel knows about, from GET_DEV_INFO over the ids in /sys/class/ublk-char. */
export interface KernelDeviceInfo {
  devId: number;
  state: string;
  pid: number;
  queues: number;
  depth: number;
  flags: bigint;
}

/** A unix socket peer's credentials (NativeAddon.peerCred). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
  groups: number[];
}

export interface NativeAddon {
  /** The most queues and the deepest queue a Device takes (MAX_QUEUES / MAX_DEPTH in device/config.ts). */
  readonly limits: { maxQueues: number; maxDepth: number };
  probe(): UblkProbe;
  openBackingInfo(path: string): BackingInfo;
  /** Opens a backing device exclusively before anything reads or writes it; EBUSY when another holds it. */
  claimBacking(path: string): BackingClaim;
  /** Closes a claim's fd. */
  releaseBacking(fd: number): void;
  /** O_DIRECT read on a claimed fd (offset and length multiples of 512, length up to 16 MiB); zeros past the end. */
  readClaimed(fd: number, offset: bigint, length: number): Promise<Buffer>;
  /** O_DIRECT write on a claimed fd (offset and length multiples of 512, length up to 16 MiB). */
  writeClaimed(fd: number, offset: bigint, data: Buffer): Promise<void>;
  /** fdatasync of a claimed fd. */
  syncClaimed(fd: number): Promise<void>;
  Device: new (opts: DeviceOptions) => NativeDevice;
  /** GET_DEV_INFO for one device id; throws a NativeError with code 'ENODEV' when there is none. */
  kernelDeviceInfo(devId: number): Promise<KernelDeviceInfo>;
  /** STOP_DEV + DEL_DEV of a device whose server is gone (state dead, pid not alive). */
  deleteKernelDevice(devId: number): Promise<void>;
  /**
   * Ends the process with `_exit(code)` after `ms` unless it exited by then (a detached native thread). For
   * the fatal path: process.exit() waits for libuv's worker threads, and one stuck in a blocking read of a
   * dead device would keep the process (and the device's recovery) waiting for ever.
   */
  armExitWatchdog(ms: number, code: number): void;
  /**
   * The credentials of a connected unix socket's peer as the kernel recorded them at connect: SO_PEERCRED
   * (pid, uid, gid) and SO_PEERGROUPS (supplementary groups). Throws a NativeError (command 'getsockopt').
   */
  peerCred(fd: number): PeerCred;
  /**
   * sd_notify: sends `state` ("READY=1\nSTATUS=...") as one datagram to the socket $NOTIFY_SOCKET names (a
   * path, or "@name" for an abstract one). True when sent; false when NOTIFY_SOCKET is unset (no service
   * manager). Throws a NativeError when the socket cannot be reached.
   */
  sdNotify(state: string): boolean;
  /**
   * dup2(fd, target): this process's stdout (1) or stderr (2) made to write where `fd` writes (the log file
   * just reopened after a rotation), so that what is written there outside the logger follows it. Throws a
   * NativeError (command 'dup2'): EINVAL for a target other than 1 or 2, EBADF for an fd not open.
   */
  redirectStdio(fd: number, target: 1 | 2): void;

}

/**
 * Errors thrown by the addon carry `code` (an errno name like 'EBUSY', or 'EUBLK_*'), `errno` (positive
 * number, 0 if none) and `command` (the ublk command or syscall that failed, e.g. 'ADD_DEV', 'open').
 */
export interface NativeErrorShape extends Error {
  code: string;
  errno: number;
  command: string;
}

export function isNativeError(e: unknown): e is NativeErrorShape {
  return e instanceof Error && typeof (e as Partial<NativeErrorShape>).command === 'string';
}

let cached: NativeAddon | undefined;

/** Loads build/Release/dmremap_native.node (built by `npm run build:native`). */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const here = path.dirname(fileURLToPath(import.meta.url));
  const require = createRequire(import.meta.url);
  const candidates = [
    path.join(here, '..', 'build', 'Release', 'dmremap_native.node'),
    path.join(here, '..', '..', 'build', 'Release', 'dmremap_native.node'),
  ];
  let lastErr: unknown;
  for (const c of candidates) {
    try {
      cached = require(c) as NativeAddon;
      return cached;
    } catch (e) {
      lastErr = e;
    }
  }
  throw new Error(`native addon not built (run npm run build:native): ${String(lastErr)}`);
}

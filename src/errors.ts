// Typed errors with stable codes. Every failure the CLI or the daemon reports is a DmrError: `code` is
// stable (scripts match on it, it appears in --json output and control-socket replies) and `exitCode` is
// what the CLI exits with (2 for bad usage, 1 for everything that went wrong at run time, except the
// refusals of `recover` the supervisor must tell apart from a crash: E_PREDECESSOR_BUSY, E_DELETING,
// E_RECOVERY_STUCK, each with its own code below), and the refusals of `up --foreground` that a restart cannot
// help, which the systemd unit must not restart on: "already up" (E_ALREADY_UP) and a spare holding another
// remap table than the record's (E_SPARE_OTHER_TABLE).
import os from 'node:os';
import { isNativeError, type NativeErrorShape } from './native.js';

/**
 * The exit code of a `recover` that failed only because the dead daemon's process has not let go of the
 * device yet (EX_UNAVAILABLE of sysexits.h): the supervisor waits and tries again, and does not count it as
 * a crash (supervisor/restart-policy.ts).
 */
export const PREDECESSOR_BUSY_EXIT_CODE = 69;

/**
 * The exit code of a `recover` refused because a `del` of the device is under way (E_DELETING; EX_NOPERM of
 * sysexits.h: del owns the device): the supervisor exits at once and leaves the registry entry to del.
 */
export const DELETING_EXIT_CODE = 77;

/**
 * The exit code of a `recover` the kernel refuses for good (E_RECOVERY_STUCK: START_USER_RECOVERY fails with
 * EINVAL after an earlier recovery was cut short; EX_OSERR of sysexits.h): no retry can help, only `del`.
 * The supervisor gives up at once and records why in the registry entry.
 */
export const RECOVERY_STUCK_EXIT_CODE = 71;

/**
 * The exit code of `up --foreground` (the systemd unit's ExecStart) finding a device of its name already up,
 * served by another process (E_ALREADY_UP; EX_CANTCREAT of sysexits.h): a restart cannot help, so the unit
 * lists it in RestartPreventExitStatus= rather than restarting in a loop.
 */
export const ALREADY_UP_EXIT_CODE = 73;

/**
 * The exit code of a spare refused because it holds another remap table of its main than the one recorded
 * (E_SPARE_OTHER_TABLE): the same as E_ALREADY_UP's, since for the unit's `up --foreground` it means the same
 * (the device cannot be brought up here, and a restart reads the same disk again), and the unit's
 * RestartPreventExitStatus= lists it. The supervisor gives it no meaning of its own (a crash, as exit 1).
 */
export const OTHER_TABLE_EXIT_CODE = ALREADY_UP_EXIT_CODE;

export const ERROR_CODES = {
  E_USAGE: 2,
  E_DEVICE_MISSING: 1,
  E_DEVICE_ACCESS: 1,
  E_DEVICE_INVALID: 1,
  E_DEVICE_BUSY: 1,
  // `del` / `down` of a device whose own block device (/dev/ublkbN, or a partition of it) is mounted, held by
  // another block device (dm, md, LVM) or swap: refused, nothing changed (--force deletes it anyway). Exit 1
  // as E_DEVICE_BUSY (add's refusal of a main or spare in use): it is a run-time refusal a person or script
  // acts on (unmount, then again), told apart by its code (--json), and no supervisor or unit must act on it
  // without reading it, which is what the codes other than 1 here are for; `down` exits 1 for any failed line.
  E_DEVICE_IN_USE: 1,
  E_SAME_DEVICE: 1,
  E_BLOCK_SIZE: 1,
  E_NAME_TAKEN: 1,
  E_NO_UBLK: 1,
  E_UNSUPPORTED: 1,
  E_NATIVE_MISSING: 1,
  E_NOT_FOUND: 1,
  E_AMBIGUOUS: 1,
  E_KERNEL: 1,
  E_PROTOCOL: 1,
  // The control socket's peer may not do this: a member of the configured controlGroup asked for a command
  // that changes something (only root and the daemon's own user may), or a peer neither root, the daemon's
  // user nor in the group connected (refused at connect).
  E_PERMISSION: 1,
  E_TIMEOUT: 1,
  E_DAEMON: 1,
  E_RUN_DIR: 1,
  E_INTERNAL: 1,
  // Spare metadata (src/remap): the spare belongs to another main device, has no free slot, is too small for
  // its metadata, holds metadata that cannot be used, failed an I/O, or an op does not fit the table's state.
  E_SPARE_FOREIGN: 1,
  E_SPARE_FULL: 1,
  E_SPARE_TOO_SMALL: 1,
  E_SPARE_METADATA: 1,
  E_SPARE_IO: 1,
  // The spare region holds something a user may care about (a filesystem, swap, a partition table, LUKS,
  // LVM, RAID: blkid found it) or cannot be checked; --force-format overwrites it.
  E_SPARE_IN_USE: 1,
  // The spare holds a remap table of this main, but not the one its device record names (the table's UUID
  // differs: an old copy of the spare disk, or a spare formatted again since): `up` refuses it, nothing written.
  E_SPARE_OTHER_TABLE: OTHER_TABLE_EXIT_CODE,
  E_REMAP_STATE: 1,
  // Remap control messages: a sector outside the device; a backing-device read or write failed while data
  // was moved (the move was undone).
  E_OUT_OF_RANGE: 1,
  E_IO: 1,
  // Main is in an outage (it does not answer): a remap or recheck now would read nothing and could only
  // mark blocks lost; try again once it ends.
  E_OUTAGE: 1,
  // The daemon is already doing as many of these as it will: `verify` reads main one at a time for the whole
  // daemon (a few more wait their turn; the next is refused). Temporary: try again shortly.
  E_BUSY: 1,
  // The config file (/etc/dmremap-ublk/config.json or $DMREMAP_CONFIG) cannot be read, is not JSON, breaks
  // the schema, or cannot be written. A run-time failure: the command line itself was fine.
  E_CONFIG: 1,
  // Recovery (`recover`): the device's daemon is running (nothing to recover); the device is not quiesced
  // (its kernel device is gone, or was created without user recovery); its saved state is missing or does
  // not match what is there now (another main or spare at its paths, another size). E_STATE also: `status`,
  // `restart` and the remap commands naming a device whose registry file does not parse (file, why, what to do).
  E_DEVICE_LIVE: 1,
  // `up --foreground <name>`: a device of that name already runs under another process (started by hand, or
  // another device of the name): the unit's start fails and is not restarted.
  E_ALREADY_UP: ALREADY_UP_EXIT_CODE,
  E_NOT_QUIESCED: 1,
  E_STATE: 1,
  // `restart` of a device created without ublk user recovery (the kernel offered none): its daemon leaving
  // would stop the device. Refused, nothing changed.
  E_NO_RECOVERY: 1,
  // `recover`: the dead daemon's process still holds main or the spare exclusively, or /dev/ublkcN (its
  // io_uring keeps them until a backing I/O in flight ends); temporary: try again later.
  E_PREDECESSOR_BUSY: PREDECESSOR_BUSY_EXIT_CODE,
  // `recover`: the kernel refuses START_USER_RECOVERY with EINVAL: an earlier recovery was cut short after
  // it started (6.12), and the device can only be deleted (`del`; the remap table stays on the spare).
  E_RECOVERY_STUCK: RECOVERY_STUCK_EXIT_CODE,
  // `recover` (by hand, by the supervisor, by `restart`) of a device a `del` is removing: del wins.
  E_DELETING: DELETING_EXIT_CODE,
  // Background scan (src/scan/): a command that does not fit the scan's state (`start` while running, `pause`
  // while idle); a persisted scan record (cursor, region record) that is short, corrupt, of another version
  // or of another device (ScanRecordError says which).
  E_SCAN_STATE: 1,
  E_SCAN_RECORD: 1,
  // Health model (src/health/): a persisted health series that is corrupt, of a newer format, or of another
  // device (HealthRecordError says which). Never reset silently: `health <dev> reset` starts it over.
  E_HEALTH_RECORD: 1,
  // `map --out FILE`: the picture cannot be written (the directory is missing or not writable, ...).
  E_OUTPUT: 1,
  // `exporter --listen HOST:PORT`: the address cannot be listened on (the port is in use, the address is not
  // this machine's, a port below 1024 without the right).
  E_LISTEN: 1,
  // `demo`: something it needs is missing (root, dmsetup, losetup); a step failed or the data read back was
  // not what was written; it was interrupted (Ctrl-C, SIGTERM) and cleaned up.
  E_PREREQUISITE: 1,
  E_DEMO: 1,
  E_INTERRUPTED: 1,
  // Devices that come back (src/service/): a device record in devices.d that cannot be read, breaks its schema
  // or cannot be written; a /dev/dmremap/<name> link that would replace something not ours to replace; the
  // systemd units that cannot be installed (or systemctl failed).
  E_RECORD: 1,
  E_LINK: 1,
  E_SYSTEMD: 1,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(s: string): s is ErrorCode {
  return Object.hasOwn(ERROR_CODES, s);
}

export class DmrError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: (typeof ERROR_CODES)[ErrorCode];

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DmrError';
    this.code = code;
    this.exitCode = ERROR_CODES[code];
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function usageError(message: string): DmrError {
  return new DmrError('E_USAGE', message);
}

/** Positive errno → its name ('EIO'), or 'errno N' when the platform has no name for it. */
export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(os.constants.errno)) {
    if (value === errno) return name;
  }
  return `errno ${errno}`;
}

/** The errno name carried by a Node system error or a native addon error, if any. */
export function errorCodeOf(e: unknown): string | undefined {
  if (e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string') {
    return (e as NodeJS.ErrnoException).code;
  }
  return undefined;
}

/**
 * Maps an error from the addon about a backing device (opening it, or starting the ublk device on it)
 * to a DmrError. `what` names the device for the message, e.g. "main device /dev/sdb".
 */
export function backingDeviceError(e: unknown, what: string): DmrError {
  if (e instanceof DmrError) return e;
  const code = errorCodeOf(e);
  switch (code) {
    case 'ENOENT':
    case 'ENXIO':
    case 'ENODEV':
      return new DmrError('E_DEVICE_MISSING', `${what} does not exist`, { cause: e });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new DmrError('E_DEVICE_ACCESS', `${what} cannot be opened for reading and writing (${code})`, {
        cause: e,
      });
    case 'EBUSY':
      return new DmrError('E_DEVICE_BUSY', `${what} is in use (mounted, or held by another program)`, {
        cause: e,
      });
    default:
      return kernelError(e, `cannot open ${what}`);
  }
}

/** Maps a failure of a ublk command or syscall in the addon to E_KERNEL, naming the command and errno. */
export function kernelError(e: unknown, doing: string): DmrError {
  if (e instanceof DmrError) return e;
  if (isNativeError(e)) return new DmrError('E_KERNEL', `${doing}: ${describeNative(e)}`, { cause: e });
  const msg = e instanceof Error ? e.message : String(e);
  return new DmrError('E_KERNEL', `${doing}: ${msg}`, { cause: e });
}

/** The addon's message already names the command, its detail and strerror; add the errno name. */
function describeNative(e: NativeErrorShape): string {
  const name = e.code !== '' ? e.code : errnoName(e.errno);
  return e.message.includes(name) ? e.message : `${e.message} (${name})`;
}

/** Anything thrown → a DmrError; unknown errors become E_INTERNAL with their message. */
export function toDmrError(e: unknown): DmrError {
  if (e instanceof DmrError) return e;
  if (isNativeError(e)) return kernelError(e, 'native addon');
  const msg = e instanceof Error ? e.message : String(e);
  return new DmrError('E_INTERNAL', msg, { cause: e });
}

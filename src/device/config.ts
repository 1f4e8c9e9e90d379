// The settings one device runs with, after the CLI parsed and checked them.
import type { FaultPolicy } from '../config/policy.js';
import type { PolicySettings } from '../config/schema.js';
import type { PartialScanSettings } from '../scan/settings.js';
import type { PartialHealthSettings } from '../health/settings.js';

export interface DeviceConfig {
  mainPath: string;
  sparePath: string;
  name: string | null;
  /** ublk queues; undefined picks min(4, CPU count). */
  queues: number | undefined;
  depth: number;
  /** 512 or 4096; undefined picks max(512, main's logical block size). */
  blockSize: 512 | 4096 | undefined;
  maxIoBytes: number;
  /** How request data reaches the backing devices: see BUFFER_MODES. */
  buffers: BufferMode;
  /** The spare region: byte offset (multiple of 4096, default 0) and length (default: the rest of the spare). */
  spareOffset?: number;
  spareSize?: number;
  /** Format the spare even if it holds another main's (or unusable) remap metadata. */
  forceFormat?: boolean;
  /** The spare must hold this main's remap table already (a recorded device, `up`): never formatted. */
  requireTable?: boolean;
  /**
   * The spare's remap table must be this one (its UUID, device/table-uuid.ts; a record's `tableUuid`): another
   * table of the same main is refused (E_SPARE_OTHER_TABLE) before the store opens it. Implies requireTable.
   */
  tableUuid?: string;
  /**
   * The error-handling flags given to `add` (or a record's), as opposed to what the config file filled in:
   * kept in the registry entry so that `enable` records only these. Absent: none known.
   */
  policyGiven?: PolicySettings;
  /** Error handling (config file defaults overridden by `add` flags); absent: DEFAULT_POLICY. */
  policy?: FaultPolicy;
  /** The background scan's settings (config file, then defaults); absent keys: DEFAULT_SCAN_SETTINGS. */
  scan?: PartialScanSettings;
  /** The health model's settings; absent: the config file's (read at start), then the defaults. */
  health?: PartialHealthSettings;
  /** The alert command; absent: the config file's alert_command (read when an alert is due); null: none. */
  alertCommand?: string | null;
}

/**
 * auto: zero copy where the kernel offers UBLK_F_AUTO_BUF_REG (6.16+; it measured faster on every fio job
 * in the VM), else copy. copy: the kernel copies each request into the daemon's buffers (every kernel).
 * zero-copy: insist on zero copy; refused where the kernel lacks it.
 */
export const BUFFER_MODES = ['auto', 'copy', 'zero-copy'] as const;
export type BufferMode = (typeof BUFFER_MODES)[number];

export const DEFAULT_DEPTH = 128;
export const DEFAULT_MAX_IO_KIB = 512;
/** The addon takes at most these (native/device.h kMaxQueues, the ublk ABI's kMaxQueueDepth; its `limits`). */
export const MAX_QUEUES = 16;
export const MAX_DEPTH = 4096;
export const MIN_MAX_IO_KIB = 4;
export const MAX_MAX_IO_KIB = 1024;

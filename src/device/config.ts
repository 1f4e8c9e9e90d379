// The settings one device runs with, after the CLI parsed and checked them.
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
}

export const DEFAULT_DEPTH = 128;
export const DEFAULT_MAX_IO_KIB = 512;
export const MAX_QUEUES = 16;
export const MAX_DEPTH = 4096;
export const MIN_MAX_IO_KIB = 4;
export const MAX_MAX_IO_KIB = 1024;

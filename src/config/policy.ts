// How a device reacts to I/O errors on its backing devices (issue 6). The defaults apply unless the config
// file (/etc/dmremap-ublk/config.json) or `add` flags say otherwise; set_auto_remap changes autoRemap live.
export interface FaultPolicy {
  /** Remap on errors (true), or let every error reach the user unchanged (false). */
  autoRemap: boolean;
  /** Read errors on a block that a retry recovered before the block is relocated to the spare (>= 1). */
  errorThreshold: number;
  /** Retries of a failed read before it fails with EIO and the block is marked pending (0..16). */
  readRetries: number;
  /** Wait before the first retry in ms; doubles for each further retry (0..10000). */
  retryBackoffMs: number;
  /**
   * Failures on main in this many distinct regions (of 64 equal parts of the device) within
   * outageWindowMs make a device-wide outage likely: main is probed, and if it does not answer the failed
   * requests are held instead of remapped (1..64).
   */
  outageRegions: number;
  /**
   * Write failures on main in this many distinct regions within outageWindowMs, with no write to main done
   * since the first of them, make a write outage (main refuses writes while it still reads): the failed
   * writes are held instead of redirected to the spare (2..64: one region would be any bad sector written
   * on an otherwise idle device).
   */
  writeOutageRegions: number;
  /** The window of outageRegions and writeOutageRegions, in ms (10..60000). */
  outageWindowMs: number;
  /** How long requests are held during an outage before they fail with their errno, in ms (100..600000). */
  outageHoldMs: number;
}

export const DEFAULT_POLICY: Readonly<FaultPolicy> = Object.freeze({
  autoRemap: true,
  errorThreshold: 1,
  readRetries: 3,
  retryBackoffMs: 10,
  outageRegions: 4,
  writeOutageRegions: 8,
  outageWindowMs: 2000,
  outageHoldMs: 30000,
});

export const POLICY_LIMITS = {
  errorThreshold: { min: 1, max: 65535 },
  readRetries: { min: 0, max: 16 },
  retryBackoffMs: { min: 0, max: 10000 },
  outageRegions: { min: 1, max: 64 },
  writeOutageRegions: { min: 2, max: 64 },
  outageWindowMs: { min: 10, max: 60000 },
  outageHoldMs: { min: 100, max: 600000 },
} as const;

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
}

export const DEFAULT_POLICY: Readonly<FaultPolicy> = Object.freeze({
  autoRemap: true,
  errorThreshold: 1,
  readRetries: 3,
  retryBackoffMs: 10,
});

export const POLICY_LIMITS = {
  errorThreshold: { min: 1, max: 65535 },
  readRetries: { min: 0, max: 16 },
  retryBackoffMs: { min: 0, max: 10000 },
} as const;

// Names of the UBLK_F_* feature bits (include/uapi/linux/ublk_cmd.h), for status output.
const FEATURE_BITS: readonly [bigint, string][] = [
  [1n << 0n, 'SUPPORT_ZERO_COPY'],
  [1n << 1n, 'URING_CMD_COMP_IN_TASK'],
  [1n << 2n, 'NEED_GET_DATA'],
  [1n << 3n, 'USER_RECOVERY'],
  [1n << 4n, 'USER_RECOVERY_REISSUE'],
  [1n << 5n, 'UNPRIVILEGED_DEV'],
  [1n << 6n, 'CMD_IOCTL_ENCODE'],
  [1n << 7n, 'USER_COPY'],
  [1n << 8n, 'ZONED'],
  [1n << 9n, 'USER_RECOVERY_FAIL_IO'],
  [1n << 10n, 'UPDATE_SIZE'],
  [1n << 11n, 'AUTO_BUF_REG'],
  [1n << 12n, 'QUIESCE'],
  [1n << 13n, 'PER_IO_DAEMON'],
];

/** Names of the set bits; unknown bits appear as "bit<N>". */
export function featureNames(flags: bigint): string[] {
  const names: string[] = [];
  for (let bit = 0n; bit < 64n; bit++) {
    const mask = 1n << bit;
    if ((flags & mask) === 0n) continue;
    names.push(FEATURE_BITS.find(([m]) => m === mask)?.[1] ?? `bit${bit}`);
  }
  return names;
}

export const hex = (v: bigint): string => `0x${v.toString(16)}`;

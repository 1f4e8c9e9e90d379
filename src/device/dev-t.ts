// A block device's number (st_rdev, glibc's dev_t encoding) and where sysfs describes it.

// glibc's gnu_dev_major/minor: 12 + 20 bits of major, 8 + 24 bits of minor, each part cut to 32 bits
// (a bigint has no width: without the masks the major's high bits would leak into the minor).

/** major(3) of a dev_t. */
export const majorOf = (rdev: bigint): bigint => ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
/** minor(3) of a dev_t. */
export const minorOf = (rdev: bigint): bigint => (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);

/** /sys/dev/block/MAJ:MIN of a block device (a symlink to its directory under /sys/devices). */
export function sysfsBlockPath(rdev: bigint): string {
  return `/sys/dev/block/${majorOf(rdev)}:${minorOf(rdev)}`;
}

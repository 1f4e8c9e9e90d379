// A block device's number (st_rdev, glibc's dev_t encoding) and where sysfs describes it.

/** major(3) of a dev_t. */
export const majorOf = (rdev: bigint): bigint => ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
/** minor(3) of a dev_t. */
export const minorOf = (rdev: bigint): bigint => (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);

/** /sys/dev/block/MAJ:MIN of a block device (a symlink to its directory under /sys/devices). */
export function sysfsBlockPath(rdev: bigint): string {
  return `/sys/dev/block/${majorOf(rdev)}:${minorOf(rdev)}`;
}

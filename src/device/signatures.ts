// What a spare region may already hold, found by libblkid (`blkid -p`, the low-level probe) rather than a
// list of magic numbers of our own: filesystems, swap, LUKS, LVM, md and bcache members, partition tables.
// checkSpareRegion() is the one check every command that formats a spare region runs first.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { DmrError } from '../errors.js';
import type { Logger } from '../log.js';
import { decodeSuperblock } from '../remap/format.js';
import { SUPERBLOCK_SIZE } from '../remap/geometry.js';
import type { SpareIo } from '../remap/io.js';

/** `blkid -o export` output: NAME=value lines, special characters escaped with a backslash. */
export function parseBlkidExport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    out[line.slice(0, eq)] = line.slice(eq + 1).replace(/\\(.)/g, '$1');
  }
  return out;
}

/** "an" before a vowel sound: a vowel, or a name spelt out whose first letter sounds like one (xfs, ntfs, f2fs). */
const article = (w: string): string => (/^[aeiou]|^[fhlmnrx][^aeiou]/i.test(w) ? 'an' : 'a');

const PARTITION_TABLES: Record<string, string> = { dos: 'an MBR (dos)', gpt: 'a GPT' };
const RAID_MEMBERS: Record<string, string> = {
  LVM2_member: 'an LVM physical volume',
  linux_raid_member: 'an md RAID member',
  bcache: 'a bcache device',
  zfs_member: 'a ZFS pool member',
};

/**
 * What the probed fields say the region holds, as the object of "holds ...": `an ext4 filesystem (label
 * "backup")`, `a GPT partition table`, `swap space`, `a LUKS encrypted volume`; null when nothing.
 */
export function describeSignature(f: Record<string, string>): string | null {
  const type = f.TYPE;
  const usage = f.USAGE;
  let what: string | null = null;
  if (type !== undefined) {
    if (type === 'swap') what = 'swap space';
    else if (type.startsWith('crypto_LUKS')) what = 'a LUKS encrypted volume';
    else if (RAID_MEMBERS[type] !== undefined) what = RAID_MEMBERS[type] as string;
    else if (usage === 'filesystem') what = `${article(type)} ${type} filesystem`;
    else if (usage === 'raid') what = `${type} RAID metadata`;
    else what = `${article(type)} ${type} signature`;
  }
  const pt = f.PTTYPE;
  if (pt !== undefined) {
    const table = `${PARTITION_TABLES[pt] ?? `${article(pt)} ${pt}`} partition table`;
    what = what === null ? table : `${what} and ${table}`;
  }
  if (what !== null && f.LABEL !== undefined && f.LABEL !== '') what += ` (label ${JSON.stringify(f.LABEL)})`;
  return what;
}

export type ProbeResult =
  | { kind: 'empty' }
  | { kind: 'found'; what: string; fields: Record<string, string> }
  /** blkid found signatures of more than one kind and would not say which (exit code 8). */
  | { kind: 'ambivalent' }
  /** The region (past offset 0) overlaps what the whole device holds: a partition, a filesystem at its start. */
  | { kind: 'overlaps'; what: string }
  /** blkid could not be run or failed: the region's contents are unknown. */
  | { kind: 'unknown'; why: string };

/** blkid's answer, from its exit code (0 found, 2 nothing, 8 ambivalent, else an error) and output. */
export function interpretBlkid(code: number | null, stdout: string, stderr: string): ProbeResult {
  if (code === 2) return { kind: 'empty' };
  if (code === 8) return { kind: 'ambivalent' };
  if (code === 0) {
    const fields = parseBlkidExport(stdout);
    const what = describeSignature(fields);
    // Exit 0 with nothing we can name (a field we do not know): still something, name it by its keys.
    return { kind: 'found', what: what ?? `a signature blkid reports as ${JSON.stringify(stdout.trim().replace(/\n/g, ' '))}`, fields };
  }
  const msg = stderr.trim().split('\n')[0] ?? '';
  return { kind: 'unknown', why: `blkid exited with code ${code ?? 'none'}${msg ? `: ${msg}` : ''}` };
}

/** Runs `blkid -p -o export` on `path`, probing the region at `offset` (of `size` bytes, else to the end). */
export function probeSignatures(path: string, offset = 0, size?: number): Promise<ProbeResult> {
  const args = ['-p', '-o', 'export'];
  if (offset > 0) args.push('-O', String(offset));
  if (size !== undefined) args.push('-S', String(size));
  args.push(path);
  return new Promise((resolve) => {
    execFile('blkid', args, { timeout: 60_000, env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') {
        resolve({ kind: 'unknown', why: err.code === 'ENOENT' ? 'blkid (util-linux) is not installed' : `blkid could not be run: ${err.message}` });
        return;
      }
      resolve(interpretBlkid(err === null ? 0 : (err.code as number), stdout, stderr));
    });
  });
}

/** The one-line refusal for a spare region that holds something. */
export function spareInUseError(path: string, offset: number, r: Exclude<ProbeResult, { kind: 'empty' }>): DmrError {
  const where = offset > 0 ? `${path} at offset ${offset}` : path;
  switch (r.kind) {
    case 'found':
      return new DmrError('E_SPARE_IN_USE', `${where} holds ${r.what}; use --force-format to overwrite it`);
    case 'overlaps':
      return new DmrError('E_SPARE_IN_USE', `${where} overlaps ${r.what}; use --force-format to overwrite it`);
    case 'ambivalent':
      return new DmrError('E_SPARE_IN_USE', `${where} holds more than one signature (blkid: ambivalent result; wipefs -n ${path} lists them); use --force-format to overwrite it`);
    case 'unknown':
      return new DmrError('E_SPARE_IN_USE', `${where} cannot be checked for existing data (${r.why}); use --force-format to format it unchecked`);
  }
}

/** A byte range [start, end) of the spare device that something else uses. */
export interface Extent {
  start: number;
  end: number;
  /** As the object of "overlaps ...": `partition sdc1`, `an ext4 filesystem at the start of the device`. */
  what: string;
}

export type LayoutResult = { kind: 'known'; extents: Extent[] } | { kind: 'unknown'; why: string };

const sfdiskSchema = z.object({
  partitiontable: z.object({
    label: z.string(),
    sectorsize: z.number().int().positive().optional(),
    partitions: z.array(z.object({ node: z.string(), start: z.number().int().nonnegative(), size: z.number().int().nonnegative() })).default([]),
  }),
});

/** The partitions of a whole disk as the kernel sees them: /sys/class/block/<disk>/<part>/{start,size} (512-byte sectors). */
function sysfsPartitions(dev: string): Extent[] | null {
  let name: string;
  try {
    if (!fs.statSync(dev).isBlockDevice()) return null;
    name = path.basename(fs.realpathSync(dev));
  } catch {
    return null;
  }
  const dir = `/sys/class/block/${name}`;
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    return null;
  }
  const out: Extent[] = [];
  for (const e of entries) {
    try {
      if (!fs.existsSync(`${dir}/${e}/partition`)) continue;
      const start = Number(fs.readFileSync(`${dir}/${e}/start`, 'utf8').trim()) * 512;
      const size = Number(fs.readFileSync(`${dir}/${e}/size`, 'utf8').trim()) * 512;
      out.push({ start, end: start + size, what: `partition ${e}` });
    } catch {
      // A partition that went away while we read: the table is re-read below from the disk anyway.
    }
  }
  return out;
}

/** The partition table's entries read from the disk or image by `sfdisk --json`. */
function sfdiskPartitions(dev: string): Promise<LayoutResult> {
  return new Promise((resolve) => {
    execFile('sfdisk', ['--json', dev], { timeout: 60_000, env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } }, (err, stdout, stderr) => {
      if (err !== null) {
        const why = err.code === 'ENOENT' ? 'sfdisk (util-linux) is not installed' : `sfdisk --json failed: ${String(stderr).trim().split('\n')[0] ?? err.message}`;
        resolve({ kind: 'unknown', why });
        return;
      }
      let parsed: z.infer<typeof sfdiskSchema>;
      try {
        parsed = sfdiskSchema.parse(JSON.parse(stdout));
      } catch (e) {
        resolve({ kind: 'unknown', why: `sfdisk --json gave output this program cannot read (${e instanceof Error ? e.message.split('\n')[0] : String(e)})` });
        return;
      }
      const ss = parsed.partitiontable.sectorsize ?? 512;
      resolve({
        kind: 'known',
        extents: parsed.partitiontable.partitions.map((p) => ({ start: p.start * ss, end: (p.start + p.size) * ss, what: `partition ${p.node}` })),
      });
    });
  });
}

/** The partitions of `dev` (a disk or an image file with a partition table): sysfs and the table on the disk together. */
export async function partitionExtents(dev: string): Promise<LayoutResult> {
  const fromTable = await sfdiskPartitions(dev);
  const fromKernel = sysfsPartitions(dev);
  if (fromTable.kind === 'unknown') return fromKernel !== null && fromKernel.length > 0 ? { kind: 'known', extents: fromKernel } : fromTable;
  return { kind: 'known', extents: [...fromTable.extents, ...(fromKernel ?? [])] };
}

/** Bytes a partition table itself takes: the first sector (MBR), GPT's header and entries at both ends. */
function tableExtents(pttype: string, deviceSize: number): Extent[] {
  if (pttype === 'gpt') {
    return [
      { start: 0, end: 34 * 512, what: 'the GPT at the start of the device' },
      { start: Math.max(0, deviceSize - 33 * 512), end: deviceSize, what: 'the backup GPT at the end of the device' },
    ];
  }
  return [{ start: 0, end: 512, what: `the ${pttype} partition table at the start of the device` }];
}

export interface SpareRegionCheck {
  /** The claimed spare. */
  io: SpareIo;
  path: string;
  spareOffset: number;
  spareSize?: number;
  force: boolean;
  /** Where --force-format says what it overwrites. */
  log: Pick<Logger, 'warn'>;
  /** The probe (default probeSignatures); tests pass their own. */
  probe?: (path: string, offset: number, size?: number) => Promise<ProbeResult>;
  /** The partitions of a device with a partition table (default partitionExtents); tests pass their own. */
  partitions?: (path: string) => Promise<LayoutResult>;
}

/** True when copy 0 of the superblock at the region start is one of ours and whole (magic and checksum). */
function copy0IsOurs(b: Buffer): boolean {
  try {
    return decodeSuperblock(b.subarray(0, SUPERBLOCK_SIZE)).ok;
  } catch {
    // Ours, of a format version this program does not read: the store refuses it with that reason.
    return true;
  }
}

/**
 * What else on the whole device a region that starts past offset 0 overlaps: blkid -O finds only a signature
 * that starts at the offset, so a region inside a filesystem or a partition looks empty to it. The whole
 * device is probed; a filesystem (or swap, LUKS, LVM...) at its start covers FSSIZE bytes when blkid says,
 * else the whole device; a partition table covers its partitions and itself. A region wholly outside all of
 * them (free space after the last partition) passes.
 */
async function overlapsOnDevice(c: SpareRegionCheck, regionEnd: number): Promise<Exclude<ProbeResult, { kind: 'empty' }> | null> {
  const whole = await (c.probe ?? probeSignatures)(c.path, 0);
  if (whole.kind === 'empty') return null;
  if (whole.kind !== 'found') return whole;
  const size = Number(c.io.size);
  const extents: Extent[] = [];
  const f = whole.fields;
  if (f.TYPE !== undefined) {
    const fsSize = f.FSSIZE !== undefined && /^\d+$/.test(f.FSSIZE) ? Number(f.FSSIZE) : size;
    const { PTTYPE: _table, ...fsFields } = f;
    const what = describeSignature(fsFields) ?? `a ${f.TYPE} signature`;
    extents.push({ start: 0, end: fsSize, what: `${what} at the start of the device` });
  }
  if (f.PTTYPE !== undefined) {
    extents.push(...tableExtents(f.PTTYPE, size));
    const parts = await (c.partitions ?? partitionExtents)(c.path);
    if (parts.kind === 'unknown') return { kind: 'unknown', why: `it has ${describeSignature({ PTTYPE: f.PTTYPE })} whose partitions cannot be read: ${parts.why}` };
    extents.push(...parts.extents);
  }
  const hit = extents.find((e) => e.start < regionEnd && c.spareOffset < e.end);
  return hit === undefined ? null : { kind: 'overlaps', what: hit.what };
}

/**
 * Before a spare region is formatted: a region that starts with a whole dmremap-ublk superblock (copy 0,
 * magic and checksum) is left to the remap store (its own checks decide). Anything else is probed, and a
 * region past offset 0 is also checked against what the whole device holds; a signature (or a probe that
 * cannot say) refuses with E_SPARE_IN_USE unless `force`, which logs what is overwritten. Reads at most the
 * region's first 4 KiB; writes nothing.
 */
export async function checkSpareRegion(c: SpareRegionCheck): Promise<'ours' | 'unfit' | 'empty' | 'forced'> {
  const end = c.spareOffset + (c.spareSize ?? 2 * SUPERBLOCK_SIZE);
  // A region that does not fit the spare is refused by the store, which says so; nothing to probe.
  if (BigInt(end) > c.io.size || BigInt(c.spareOffset + 2 * SUPERBLOCK_SIZE) > c.io.size) return 'unfit';
  const sb0 = await c.io.read(c.spareOffset, SUPERBLOCK_SIZE);
  if (copy0IsOurs(sb0)) return 'ours';
  let r = await (c.probe ?? probeSignatures)(c.path, c.spareOffset, c.spareSize);
  if (r.kind === 'empty' && c.spareOffset > 0) {
    const regionEnd = c.spareSize !== undefined ? c.spareOffset + c.spareSize : Number(c.io.size);
    r = (await overlapsOnDevice(c, regionEnd)) ?? r;
  }
  if (r.kind === 'empty') return 'empty';
  const err = spareInUseError(c.path, c.spareOffset, r);
  if (!c.force) throw err;
  c.log.warn({ spare: c.path, spareOffset: c.spareOffset, found: err.message }, '--force-format: formatting over what the spare holds');
  return 'forced';
}

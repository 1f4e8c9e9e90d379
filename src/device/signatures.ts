// What a spare region may already hold, found by libblkid (`blkid -p`, the low-level probe) rather than a
// list of magic numbers of our own: filesystems, swap, LUKS, LVM, md and bcache members, partition tables.
// checkSpareRegion() is the one check every command that formats a spare region runs first.
import { execFile } from 'node:child_process';
import { DmrError } from '../errors.js';
import type { Logger } from '../log.js';
import { SB_MAGIC, hasMagic } from '../remap/format.js';
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
    case 'ambivalent':
      return new DmrError('E_SPARE_IN_USE', `${where} holds more than one signature (blkid: ambivalent result; wipefs -n ${path} lists them); use --force-format to overwrite it`);
    case 'unknown':
      return new DmrError('E_SPARE_IN_USE', `${where} cannot be checked for existing data (${r.why}); use --force-format to format it unchecked`);
  }
}

export interface SpareRegionCheck {
  /** The claimed spare. */
  io: SpareIo;
  path: string;
  spareOffset: number;
  spareSize?: number;
  force: boolean;
  log: Logger;
  /** The probe (default probeSignatures); tests pass their own. */
  probe?: (path: string, offset: number, size?: number) => Promise<ProbeResult>;
}

/**
 * Before a spare region is formatted: a region that holds a dmremap-ublk superblock (either copy) is left to
 * the remap store (its own checks decide). Anything else is probed; a signature (or a probe that cannot say)
 * refuses with E_SPARE_IN_USE unless `force`, which logs what is overwritten. Reads at most the region's
 * first 8 KiB; writes nothing.
 */
export async function checkSpareRegion(c: SpareRegionCheck): Promise<'ours' | 'unfit' | 'empty' | 'forced'> {
  const end = c.spareOffset + (c.spareSize ?? 2 * SUPERBLOCK_SIZE);
  // A region that does not fit the spare is refused by the store, which says so; nothing to probe.
  if (BigInt(end) > c.io.size || BigInt(c.spareOffset + 2 * SUPERBLOCK_SIZE) > c.io.size) return 'unfit';
  const sbs = await c.io.read(c.spareOffset, 2 * SUPERBLOCK_SIZE);
  if (hasMagic(sbs, SB_MAGIC) || hasMagic(sbs, SB_MAGIC, SUPERBLOCK_SIZE)) return 'ours';
  const r = await (c.probe ?? probeSignatures)(c.path, c.spareOffset, c.spareSize);
  if (r.kind === 'empty') return 'empty';
  const err = spareInUseError(c.path, c.spareOffset, r);
  if (!c.force) throw err;
  c.log.warn({ spare: c.path, spareOffset: c.spareOffset, found: err.message }, '--force-format: formatting over what the spare holds');
  return 'forced';
}

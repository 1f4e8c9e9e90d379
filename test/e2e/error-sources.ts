// Real, kernel-made I/O error sources for the end-to-end tests (run as root in the test VM): a device-mapper
// table with `error` segments between `linear` ones, dm-flakey, and scsi_debug with medium errors. Each is
// built over its own loop devices (or the scsi_debug module) and removed again by ErrorSources.cleanup(),
// also after a failed test. Call it once the dmremap-ublk devices over these sources are gone (after
// Scratch.cleanup(), for instance): until then they hold the sources open.
//
//   const src = new ErrorSources();
//   src.dmError(mib, bad)            dm table: `error` over the bad sector ranges, `linear` elsewhere
//   src.flakey(mib, {up, down, features}), src.setFlakey(dev, ...), src.setLinear(dev)
//   src.flakeyFeatureSupported('error_reads')
//   src.scsiDebug({mib, mediumErrorStart, mediumErrorCount})    -> /dev/sdX
//   src.loop(mib)                    a plain loop device (a spare), removed with the rest
//   src.cleanup()                    throws if anything could not be removed
//   scatterSegments / blockSegments  seeded layouts of bad ranges; blocksOverlapping(ranges, blockSize)
//   directRead / directWrite         one O_DIRECT request with dd, with the errno's name when it fails
//
// What each source gives an O_DIRECT read/write from userspace (dd iflag/oflag=direct, 512 B and 4 KiB
// requests), measured in the test VM on Debian trixie 6.12.117 and sid 7.2.13 - the same on both:
//   dm `error` segment                       read EIO      write EIO      (always; a request that only
//                                                                          partly covers the segment fails
//                                                                          as a whole)
//   dm-flakey, no features, down interval    read EIO      write EIO
//   dm-flakey `1 error_writes`, down         read ok       write EIO
//   dm-flakey `1 error_reads`, down          read EIO      write ok       (both kernels accept error_reads;
//                                                                          older ones refuse the table)
//   dm-flakey `1 drop_writes`, down          read ok       write "ok", data dropped
//   dm-flakey, up interval                   everything passes to the device below
//   scsi_debug opts=2 medium_error_start/_count
//                                            read ENODATA  write ok       (sense MEDIUM ERROR "Unrecovered
//                                                                          read error"; the range keeps
//                                                                          failing reads after a write: the
//                                                                          error belongs to the LBAs, not the
//                                                                          data)
// dm-flakey's intervals are whole seconds counted from the moment its table was loaded (create or reload):
// with `<up> <down>`, seconds [0, up) are up, [up, up + down) down, and so on.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { seededRandom } from '../../src/testing/seeded-random.js';
import { must, sh } from './helpers.js';

/** A range of 512-byte sectors. */
export interface SectorRange {
  start: number;
  sectors: number;
}

// ---- seeded randomness and sector/block arithmetic ----------------------------------------------------------

export { seededRandom };

/** A whole number in [lo, hi] from `rnd`. */
export function randInt(rnd: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rnd() * (hi - lo + 1));
}

/**
 * `count` error segments of minSectors..maxSectors sectors each, scattered over sectors [from, to), sorted,
 * not overlapping and not touching (at least one good sector between two). Deterministic for a seed.
 */
export function scatterSegments(opts: {
  seed: number;
  count: number;
  from: number;
  to: number;
  minSectors?: number;
  maxSectors?: number;
}): SectorRange[] {
  const { seed, count, from, to } = opts;
  const min = opts.minSectors ?? 1;
  const max = opts.maxSectors ?? 16;
  const rnd = seededRandom(seed);
  const out: SectorRange[] = [];
  for (let tries = 0; out.length < count; tries++) {
    if (tries > count * 1000) throw new Error(`cannot place ${count} segments of ${min}..${max} sectors in [${from}, ${to})`);
    const sectors = randInt(rnd, min, max);
    const start = randInt(rnd, from, to - sectors);
    // Keep a good sector on each side, so that neighbours never merge into one longer segment.
    if (out.some((r) => start <= r.start + r.sectors && r.start <= start + sectors)) continue;
    out.push({ start, sectors });
  }
  return out.sort((a, b) => a.start - b.start);
}

/** `count` distinct whole blocks (of blockSize bytes) in blocks [fromBlock, toBlock), as sector ranges, sorted. */
export function blockSegments(opts: {
  seed: number;
  count: number;
  fromBlock: number;
  toBlock: number;
  blockSize?: number;
}): SectorRange[] {
  const spb = (opts.blockSize ?? 4096) / 512;
  if (opts.toBlock - opts.fromBlock < opts.count) throw new Error('more blocks asked for than the range holds');
  const rnd = seededRandom(opts.seed);
  const blocks = new Set<number>();
  while (blocks.size < opts.count) blocks.add(randInt(rnd, opts.fromBlock, opts.toBlock - 1));
  return [...blocks].sort((a, b) => a - b).map((b) => ({ start: b * spb, sectors: spb }));
}

/** The blocks (of blockSize bytes) that any of the ranges touches, sorted. */
export function blocksOverlapping(ranges: readonly SectorRange[], blockSize = 4096): number[] {
  const spb = blockSize / 512;
  const out = new Set<number>();
  for (const r of ranges) {
    for (let b = Math.floor(r.start / spb); b <= Math.floor((r.start + r.sectors - 1) / spb); b++) out.add(b);
  }
  return [...out].sort((a, b) => a - b);
}

/** A device-mapper table: `error` over the given ranges, `linear` onto the same sectors of `backing` elsewhere. */
export function errorTable(backing: string, totalSectors: number, bad: readonly SectorRange[]): string {
  const lines: string[] = [];
  let at = 0;
  for (const r of [...bad].sort((a, b) => a.start - b.start)) {
    if (r.start < at || r.sectors <= 0 || r.start + r.sectors > totalSectors) throw new Error(`bad range ${JSON.stringify(r)}`);
    if (r.start > at) lines.push(`${at} ${r.start - at} linear ${backing} ${at}`);
    lines.push(`${r.start} ${r.sectors} error`);
    at = r.start + r.sectors;
  }
  if (at < totalSectors) lines.push(`${at} ${totalSectors - at} linear ${backing} ${at}`);
  return `${lines.join('\n')}\n`;
}

// ---- O_DIRECT I/O from userspace, with the errno ----------------------------------------------------------

const STRERROR: Record<string, string> = {
  'Input/output error': 'EIO',
  'No data available': 'ENODATA',
  'Remote I/O error': 'EREMOTEIO',
  'No space left on device': 'ENOSPC',
  'Invalid argument': 'EINVAL',
  'Operation not supported': 'EOPNOTSUPP',
  'Connection timed out': 'ETIMEDOUT',
  'No such device': 'ENODEV',
  'No such device or address': 'ENXIO',
  'Link has been severed': 'ENOLINK',
  'Invalid or incomplete multibyte or wide character': 'EILSEQ',
  'Read-only file system': 'EROFS',
  'Operation not permitted': 'EPERM',
  'Device or resource busy': 'EBUSY',
};

export interface DirectIo {
  ok: boolean;
  /** The errno's name (EIO, ENODATA, ...) when it failed; the strerror text if it is not a known one. */
  errno: string | null;
  /** What was read (reads only; empty on failure). */
  data: Buffer;
  stderr: string;
}

function errnoOf(stderr: string): string | null {
  const m = /error (?:reading|writing) '[^']*': (.+)$/m.exec(stderr) ?? /: (.+)$/m.exec(stderr.trim());
  if (!m?.[1]) return stderr.trim() === '' ? null : stderr.trim();
  return STRERROR[m[1].trim()] ?? m[1].trim();
}

/** Reads `blocks` blocks of `bs` bytes at block `at` with O_DIRECT (dd), as one request. */
export function directRead(dev: string, at: number, blocks = 1, bs = 4096): DirectIo {
  const len = bs * blocks;
  const r = spawnSync('dd', [`if=${dev}`, `bs=${len}`, `skip=${at * bs}`, 'count=1', 'iflag=direct,skip_bytes', 'status=none'], {
    maxBuffer: 1 << 30,
  });
  const stderr = r.stderr.toString();
  const ok = r.status === 0 && r.stdout.length === len;
  return { ok, errno: ok ? null : (errnoOf(stderr) ?? 'short read'), data: ok ? r.stdout : Buffer.alloc(0), stderr };
}

/** Writes `data` (a multiple of bs) at block `at` with O_DIRECT (dd), as one request (iflag=fullblock: a pipe gives dd short reads, which would become short writes). */
export function directWrite(dev: string, at: number, data: Buffer, bs = 4096): DirectIo {
  const args = [`of=${dev}`, `bs=${data.length}`, `seek=${at * bs}`, 'count=1', 'iflag=fullblock', 'oflag=direct,seek_bytes', 'conv=notrunc', 'status=none'];
  const r = spawnSync('dd', args, { input: data });
  const stderr = r.stderr.toString();
  return { ok: r.status === 0, errno: r.status === 0 ? null : errnoOf(stderr) ?? `dd exit ${r.status}`, data: Buffer.alloc(0), stderr };
}

// ---- the sources ------------------------------------------------------------------------------------------

export interface DmDevice {
  /** The device-mapper name (dmsetup's). */
  name: string;
  /** /dev/mapper/<name>. */
  path: string;
  /** The loop device under it. */
  backing: string;
  sectors: number;
}

export interface DmErrorDevice extends DmDevice {
  /** The `error` segments, sorted. */
  bad: SectorRange[];
}

export interface FlakeyOptions {
  /** Seconds up, then seconds down, repeating from the moment the table is loaded. */
  up: number;
  down: number;
  /** Feature words, e.g. ['error_writes'] or ['error_reads']; none: every I/O fails while down. */
  features?: string[];
}

export interface ScsiDebugDisk {
  /** /dev/sdX. */
  path: string;
  /** sdX. */
  name: string;
  sectors: number;
  /** The sectors whose reads fail with a medium error (ENODATA). */
  bad: SectorRange;
}

const flakeyFeatureCache = new Map<string, boolean>();

function flakeyLine(backing: string, sectors: number, o: FlakeyOptions): string {
  const f = o.features ?? [];
  return `0 ${sectors} flakey ${backing} 0 ${o.up} ${o.down}${f.length > 0 ? ` ${f.length} ${f.join(' ')}` : ''}\n`;
}

/** Runs `fn` until it returns true or `ms` pass (sync: for cleanup paths that must not be skipped). */
function retrySync(ms: number, fn: () => boolean): boolean {
  const deadline = Date.now() + ms;
  for (;;) {
    if (fn()) return true;
    if (Date.now() > deadline) return false;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  }
}

/** The error sources one test made; cleanup() removes them all (after Scratch.cleanup()). */
export class ErrorSources {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-errsrc-'));
  private readonly tag = `dmr-es-${process.pid}-${Date.now().toString(36)}`;
  private readonly loops: string[] = [];
  private readonly dms: string[] = [];
  private scsiDebugLoaded = false;
  private seq = 0;

  /** A loop device (direct I/O, 512-byte sectors) over a new sparse file of `mib` MiB. */
  loop(mib: number): string {
    const file = path.join(this.dir, `backing-${this.loops.length}.img`);
    fs.writeFileSync(file, '');
    fs.truncateSync(file, mib << 20);
    const dev = must('losetup', ['-f', '--show', '--direct-io=on', file]).trim();
    this.loops.push(dev);
    return dev;
  }

  /** Creates a device-mapper device from `table` (dmsetup create, then mknodes: there may be no udev). */
  private createDm(table: string): string {
    const name = `${this.tag}-${this.seq++}`;
    const r = spawnSync('dmsetup', ['create', name], { input: table, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`dmsetup create ${name} failed: ${r.stderr}${r.stdout}`);
    this.dms.push(name);
    sh('dmsetup', ['mknodes', name]);
    const p = `/dev/mapper/${name}`;
    if (!retrySync(5000, () => fs.existsSync(p))) throw new Error(`${p} did not appear`);
    return name;
  }

  /** Replaces a device's table while it is in use (suspend, load, resume); I/O in between waits. */
  reload(dev: DmDevice, table: string): void {
    const r = spawnSync('dmsetup', ['load', dev.name], { input: table, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`dmsetup load ${dev.name} failed: ${r.stderr}`);
    must('dmsetup', ['suspend', dev.name]);
    must('dmsetup', ['resume', dev.name]);
  }

  /** A loop device of `mib` MiB under a dm table whose `bad` sector ranges are `error` segments. */
  dmError(mib: number, bad: readonly SectorRange[]): DmErrorDevice {
    const backing = this.loop(mib);
    const sectors = (mib << 20) / 512;
    const name = this.createDm(errorTable(backing, sectors, bad));
    return { name, path: `/dev/mapper/${name}`, backing, sectors, bad: [...bad].sort((a, b) => a.start - b.start) };
  }

  /** A loop device of `mib` MiB under dm-flakey. */
  flakey(mib: number, o: FlakeyOptions): DmDevice {
    const backing = this.loop(mib);
    const sectors = (mib << 20) / 512;
    const name = this.createDm(flakeyLine(backing, sectors, o));
    return { name, path: `/dev/mapper/${name}`, backing, sectors };
  }

  /** Loads a new flakey table (its up/down clock starts again now). */
  setFlakey(dev: DmDevice, o: FlakeyOptions): void {
    this.reload(dev, flakeyLine(dev.backing, dev.sectors, o));
  }

  /** Makes the device a plain linear map of its loop device (no more errors). */
  setLinear(dev: DmDevice): void {
    this.reload(dev, `0 ${dev.sectors} linear ${dev.backing} 0\n`);
  }

  /** Whether this kernel's dm-flakey accepts a feature (error_reads is missing on older kernels). */
  flakeyFeatureSupported(feature: string): boolean {
    const known = flakeyFeatureCache.get(feature);
    if (known !== undefined) return known;
    const backing = this.loop(1);
    const name = `${this.tag}-probe-${this.seq++}`;
    const table = flakeyLine(backing, 2048, { up: 1, down: 1, features: [feature] });
    const r = spawnSync('dmsetup', ['create', name], { input: table, encoding: 'utf8' });
    if (r.status === 0) this.dms.push(name);
    else sh('dmsetup', ['remove', name]); // a failed create may leave an empty device behind
    flakeyFeatureCache.set(feature, r.status === 0);
    return r.status === 0;
  }

  /**
   * Loads scsi_debug with one disk of `mib` MiB whose sectors [mediumErrorStart, +mediumErrorCount) fail
   * reads with a MEDIUM ERROR (ENODATA), and returns that disk. Only one per test (it is a module).
   */
  scsiDebug(o: { mib: number; mediumErrorStart: number; mediumErrorCount: number }): ScsiDebugDisk {
    if (this.scsiDebugLoaded || fs.existsSync('/sys/module/scsi_debug')) {
      throw new Error('scsi_debug is loaded already (left over from an earlier test?)');
    }
    must('modprobe', [
      'scsi_debug',
      `dev_size_mb=${o.mib}`,
      'num_tgts=1',
      'max_luns=1',
      'add_host=1',
      'opts=2',
      `medium_error_start=${o.mediumErrorStart}`,
      `medium_error_count=${o.mediumErrorCount}`,
    ]);
    this.scsiDebugLoaded = true;
    let name = '';
    const found = retrySync(10_000, () => {
      name = scsiDebugDisks()[0] ?? '';
      return name !== '' && fs.existsSync(`/dev/${name}`) && Number(fs.readFileSync(`/sys/block/${name}/size`, 'utf8')) > 0;
    });
    if (!found) throw new Error('scsi_debug loaded but its disk did not appear');
    const sectors = Number(fs.readFileSync(`/sys/block/${name}/size`, 'utf8'));
    return { path: `/dev/${name}`, name, sectors, bad: { start: o.mediumErrorStart, sectors: o.mediumErrorCount } };
  }

  /** Removes every dm device, loop device and the scsi_debug module this made; throws if one stays. */
  cleanup(): void {
    const left: string[] = [];
    for (const name of this.dms.reverse()) {
      const gone = retrySync(10_000, () => {
        const r = sh('dmsetup', ['remove', name]);
        return r.status === 0 || /No such device|not found/i.test(r.stderr);
      });
      if (!gone) {
        sh('dmsetup', ['remove', '--force', name]);
        left.push(`dm ${name}`);
      }
    }
    this.dms.length = 0;
    for (const dev of this.loops.reverse()) {
      if (sh('losetup', ['-d', dev]).status !== 0) left.push(`loop ${dev}`);
    }
    this.loops.length = 0;
    if (this.scsiDebugLoaded) {
      if (!retrySync(10_000, () => sh('rmmod', ['scsi_debug']).status === 0 || !fs.existsSync('/sys/module/scsi_debug'))) {
        left.push('module scsi_debug');
      }
      this.scsiDebugLoaded = false;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (left.length > 0) throw new Error(`error sources left behind: ${left.join(', ')}`);
  }
}

/** The block device names (sdX) of scsi_debug's disks, from sysfs. */
export function scsiDebugDisks(): string[] {
  const root = '/sys/bus/pseudo/drivers/scsi_debug';
  const out: string[] = [];
  const walk = (dir: string, depth: number): void => {
    if (depth > 5 || !fs.existsSync(dir)) return;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.name === 'block' && depth > 0) {
        out.push(...fs.readdirSync(path.join(dir, e.name)));
      } else if (/^(adapter|host|target)\d|^\d+:\d+:\d+:\d+$/.test(e.name)) {
        walk(path.join(dir, e.name), depth + 1);
      }
    }
  };
  walk(root, 0);
  return out.sort();
}

/** Device-mapper devices whose names this module makes (to check that none was left behind). */
export function leftoverDmDevices(): string[] {
  const r = sh('dmsetup', ['ls']);
  return r.stdout
    .split('\n')
    .map((l) => l.split(/\s+/)[0] ?? '')
    .filter((n) => n.startsWith('dmr-es-'));
}

// Claims and the spare signature check on the host: blkid output parsing and the messages, the check
// before a format (MemSpareIo, a scripted probe), claims held for the daemon's life and released on every
// path, and `add` refusing a spare file that holds an ext4 image (real mkfs.ext4 and blkid).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { Daemon } from '../../src/device/daemon.js';
import { HeldDevices } from '../../src/device/claim.js';
import { identify } from '../../src/device/validate.js';
import { checkSpareRegion, describeSignature, interpretBlkid, parseBlkidExport, spareInUseError, type LayoutResult, type ProbeResult } from '../../src/device/signatures.js';
import { MemSpareIo } from '../../src/remap/mem-io.js';
import { FileSpareIo, RemapStore, mainFingerprint } from '../../src/remap/index.js';
import { DmrError } from '../../src/errors.js';
import { captureCtx, deviceConfig as config, fakeFor, makeWorld, quietLog, type World } from './helpers.js';

const hasTools = ['mkfs.ext4', 'blkid', 'sfdisk'].every((t) => spawnSync('sh', ['-c', `command -v ${t} || test -x /usr/sbin/${t} || test -x /sbin/${t}`]).status === 0);

let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => w.cleanup());

describe('blkid output', () => {
  it('parses -o export lines, undoing its backslash escapes', () => {
    expect(parseBlkidExport('DEVNAME=/dev/loop0\nLABEL=my\\ disk\\"x\\"\nTYPE=ext4\nUSAGE=filesystem\n\n')).toEqual({
      DEVNAME: '/dev/loop0',
      LABEL: 'my disk"x"',
      TYPE: 'ext4',
      USAGE: 'filesystem',
    });
  });

  it('names what a region holds', () => {
    const cases: Array<[Record<string, string>, string | null]> = [
      [{ TYPE: 'ext4', USAGE: 'filesystem', LABEL: 'backup' }, 'an ext4 filesystem (label "backup")'],
      [{ TYPE: 'xfs', USAGE: 'filesystem' }, 'an xfs filesystem'],
      [{ TYPE: 'vfat', USAGE: 'filesystem', LABEL: '' }, 'a vfat filesystem'],
      [{ TYPE: 'btrfs', USAGE: 'filesystem' }, 'a btrfs filesystem'],
      [{ TYPE: 'swap', USAGE: 'other', LABEL: 'sw' }, 'swap space (label "sw")'],
      [{ TYPE: 'crypto_LUKS', USAGE: 'crypto' }, 'a LUKS encrypted volume'],
      [{ TYPE: 'LVM2_member', USAGE: 'raid' }, 'an LVM physical volume'],
      [{ TYPE: 'linux_raid_member', USAGE: 'raid', LABEL: 'host:0' }, 'an md RAID member (label "host:0")'],
      [{ TYPE: 'bcache', USAGE: 'other' }, 'a bcache device'],
      [{ TYPE: 'isw_raid_member', USAGE: 'raid' }, 'isw_raid_member RAID metadata'],
      [{ PTTYPE: 'gpt', PTUUID: 'x' }, 'a GPT partition table'],
      [{ PTTYPE: 'dos' }, 'an MBR (dos) partition table'],
      [{ PTTYPE: 'atari' }, 'an atari partition table'],
      [{ TYPE: 'vfat', USAGE: 'filesystem', PTTYPE: 'dos' }, 'a vfat filesystem and an MBR (dos) partition table'],
      [{ DEVNAME: '/dev/x' }, null],
    ];
    for (const [fields, what] of cases) expect(describeSignature(fields), JSON.stringify(fields)).toBe(what);
  });

  it('reads blkid exit codes: 0 found, 2 nothing, 8 ambivalent, anything else unknown', () => {
    expect(interpretBlkid(2, '', '')).toEqual({ kind: 'empty' });
    expect(interpretBlkid(8, '', 'ambivalent result')).toEqual({ kind: 'ambivalent' });
    expect(interpretBlkid(0, 'TYPE=ext4\nUSAGE=filesystem\n', '')).toMatchObject({ kind: 'found', what: 'an ext4 filesystem' });
    expect(interpretBlkid(0, 'FOO=bar\n', '')).toMatchObject({ kind: 'found', what: 'a signature blkid reports as "FOO=bar"' });
    expect(interpretBlkid(4, '', 'error: /dev/x: No such file\nmore')).toEqual({ kind: 'unknown', why: 'blkid exited with code 4: error: /dev/x: No such file' });
  });

  it('one line per refusal, naming the device, the offset and --force-format', () => {
    const found = spareInUseError('/dev/sdc1', 0, { kind: 'found', what: 'an ext4 filesystem (label "backup")', fields: {} });
    expect(found.code).toBe('E_SPARE_IN_USE');
    expect(found.exitCode).toBe(1);
    expect(found.message).toBe('/dev/sdc1 holds an ext4 filesystem (label "backup"); use --force-format to overwrite it');
    expect(spareInUseError('/dev/sdc', 4096, { kind: 'ambivalent' }).message).toBe(
      '/dev/sdc at offset 4096 holds more than one signature (blkid: ambivalent result; wipefs -n /dev/sdc lists them); use --force-format to overwrite it',
    );
    expect(spareInUseError('/dev/sdc', 0, { kind: 'unknown', why: 'blkid (util-linux) is not installed' }).message).toBe(
      '/dev/sdc cannot be checked for existing data (blkid (util-linux) is not installed); use --force-format to format it unchecked',
    );
  });
});

describe('the check before a spare region is formatted', () => {
  const found: ProbeResult = { kind: 'found', what: 'an ext4 filesystem', fields: { TYPE: 'ext4' } };
  const run = (io: MemSpareIo, probe: ProbeResult, force = false, spareOffset = 0) => {
    const calls: Array<[string, number, number | undefined]> = [];
    const p = checkSpareRegion({
      io,
      path: '/dev/x',
      spareOffset,
      force,
      log: quietLog(),
      probe: async (path, offset, size) => {
        calls.push([path, offset, size]);
        return probe;
      },
    });
    return { p, calls };
  };

  it('a signature refuses with E_SPARE_IN_USE and nothing is written', async () => {
    const io = new MemSpareIo(1 << 20);
    const { p, calls } = run(io, found, false, 8192);
    await expect(p).rejects.toMatchObject({ code: 'E_SPARE_IN_USE', message: '/dev/x at offset 8192 holds an ext4 filesystem; use --force-format to overwrite it' });
    expect(calls).toEqual([['/dev/x', 8192, undefined]]);
    expect(io.stats.writes).toBe(0);
  });

  it('ambivalent and unknown probes refuse too; nothing found passes', async () => {
    await expect(run(new MemSpareIo(1 << 20), { kind: 'ambivalent' }).p).rejects.toBeInstanceOf(DmrError);
    await expect(run(new MemSpareIo(1 << 20), { kind: 'unknown', why: 'x' }).p).rejects.toMatchObject({ code: 'E_SPARE_IN_USE' });
    await expect(run(new MemSpareIo(1 << 20), { kind: 'empty' }).p).resolves.toBe('empty');
  });

  it('--force-format overrides a signature', async () => {
    await expect(run(new MemSpareIo(1 << 20), found, true).p).resolves.toBe('forced');
  });

  it('a region holding a dmremap-ublk superblock is left to the store: no probe', async () => {
    const io = new MemSpareIo(4 << 20);
    await RemapStore.open(io, { main: { size: BigInt(8 << 20), fingerprint: mainFingerprint('m') }, blockSize: 512, journalRecords: 4 });
    const { p, calls } = run(io, found);
    await expect(p).resolves.toBe('ours');
    expect(calls).toEqual([]);
  });

  it('only a whole copy 0 (magic and checksum) is ours: copy 1 alone, or copy 0 with a bad checksum, is probed', async () => {
    const io = new MemSpareIo(4 << 20);
    await RemapStore.open(io, { main: { size: BigInt(8 << 20), fingerprint: mainFingerprint('m') }, blockSize: 512, journalRecords: 4 });
    const copy0 = await io.read(0, 4096);
    // A later mkfs overwrote copy 0 only: copy 1 still has our magic, and the region holds a filesystem.
    await io.write(0, Buffer.alloc(4096));
    const overwritten = run(io, found);
    await expect(overwritten.p).rejects.toMatchObject({ code: 'E_SPARE_IN_USE' });
    expect(overwritten.calls).toEqual([['/dev/x', 0, undefined]]);
    // Our magic at the start but one byte flipped after it: not whole, so probed too.
    copy0[100] = (copy0[100] as number) ^ 1;
    await io.write(0, copy0);
    const flipped = run(io, { kind: 'empty' });
    await expect(flipped.p).resolves.toBe('empty');
    expect(flipped.calls).toHaveLength(1);
  });
});

describe('a region past offset 0 is checked against the whole device', () => {
  const MiB = 1 << 20;
  /** checkSpareRegion with scripted answers: `atOffset` for the region, `whole` for the device, `parts` for its table. */
  const check = (o: { offset: number; size?: number; whole: ProbeResult; parts?: LayoutResult; force?: boolean; devSize?: number }) => {
    const calls: string[] = [];
    const p = checkSpareRegion({
      io: new MemSpareIo(o.devSize ?? 64 * MiB),
      path: '/dev/x',
      spareOffset: o.offset,
      spareSize: o.size,
      force: o.force ?? false,
      log: quietLog(),
      probe: async (_path, offset) => {
        calls.push(`probe ${offset}`);
        return offset === 0 ? o.whole : { kind: 'empty' };
      },
      partitions: async () => {
        calls.push('partitions');
        return o.parts ?? { kind: 'unknown', why: 'none scripted' };
      },
    });
    return { p, calls };
  };
  const ext4 = (extra: Record<string, string> = {}): ProbeResult => ({ kind: 'found', what: 'an ext4 filesystem', fields: { TYPE: 'ext4', USAGE: 'filesystem', ...extra } });
  const gpt: ProbeResult = { kind: 'found', what: 'a GPT partition table', fields: { PTTYPE: 'gpt' } };
  const parts: LayoutResult = { kind: 'known', extents: [{ start: MiB, end: 33 * MiB, what: 'partition x1' }] };

  it('a filesystem at the start of the device covers the region: refused, unless forced', async () => {
    const { p, calls } = check({ offset: MiB, size: 8 * MiB, whole: ext4({ LABEL: 'data' }) });
    await expect(p).rejects.toMatchObject({
      code: 'E_SPARE_IN_USE',
      message: `/dev/x at offset ${MiB} overlaps an ext4 filesystem (label "data") at the start of the device; use --force-format to overwrite it`,
    });
    expect(calls).toEqual([`probe ${MiB}`, 'probe 0']);
    await expect(check({ offset: MiB, size: 8 * MiB, whole: ext4(), force: true }).p).resolves.toBe('forced');
  });

  it('a filesystem ends at FSSIZE when blkid gives it; without it, it is taken to fill the device', async () => {
    await expect(check({ offset: 16 * MiB, size: 8 * MiB, whole: ext4({ FSSIZE: String(16 * MiB) }) }).p).resolves.toBe('empty');
    await expect(check({ offset: 16 * MiB - 512, size: 8 * MiB, whole: ext4({ FSSIZE: String(16 * MiB) }) }).p).rejects.toMatchObject({ code: 'E_SPARE_IN_USE' });
    await expect(check({ offset: 60 * MiB, size: 4 * MiB, whole: ext4() }).p).rejects.toMatchObject({ code: 'E_SPARE_IN_USE' });
  });

  it('a region inside a partition is refused; one in free space after the last partition passes', async () => {
    await expect(check({ offset: 20 * MiB, size: 4 * MiB, whole: gpt, parts }).p).rejects.toMatchObject({
      message: `/dev/x at offset ${20 * MiB} overlaps partition x1; use --force-format to overwrite it`,
    });
    const free = check({ offset: 40 * MiB, size: 8 * MiB, whole: gpt, parts });
    await expect(free.p).resolves.toBe('empty');
    expect(free.calls).toEqual([`probe ${40 * MiB}`, 'probe 0', 'partitions']);
    // To the end of the device: the backup GPT is there.
    await expect(check({ offset: 40 * MiB, whole: gpt, parts }).p).rejects.toMatchObject({
      message: `/dev/x at offset ${40 * MiB} overlaps the backup GPT at the end of the device; use --force-format to overwrite it`,
    });
  });

  it('a partition table whose partitions cannot be read refuses; a device with nothing passes; offset 0 probes once', async () => {
    await expect(check({ offset: 40 * MiB, size: 8 * MiB, whole: gpt }).p).rejects.toMatchObject({
      message: `/dev/x at offset ${40 * MiB} cannot be checked for existing data (it has a GPT partition table whose partitions cannot be read: none scripted); use --force-format to format it unchecked`,
    });
    await expect(check({ offset: 40 * MiB, size: 8 * MiB, whole: { kind: 'empty' } }).p).resolves.toBe('empty');
    const zero = check({ offset: 0, size: 8 * MiB, whole: { kind: 'empty' } });
    await expect(zero.p).resolves.toBe('empty');
    expect(zero.calls).toEqual(['probe 0']);
  });
});

describe.skipIf(!hasTools)('regions inside what an image holds (real blkid and sfdisk)', () => {
  const MiB = 1 << 20;
  const env = { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` };
  const image = (name: string, mib: number): string => {
    const p = w.file(name, mib * MiB);
    return p;
  };
  const checkFile = async (p: string, offset: number, size?: number) => {
    const io = await FileSpareIo.open(p);
    try {
      return await checkSpareRegion({ io, path: p, spareOffset: offset, spareSize: size, force: false, log: quietLog() });
    } finally {
      await io.close();
    }
  };

  it('an ext4 at offset 0 and a region 1 MiB inside it: refused', async () => {
    const p = image('fs.img', 64);
    expect(spawnSync('mkfs.ext4', ['-q', '-F', p], { env }).status).toBe(0);
    await expect(checkFile(p, MiB, 8 * MiB)).rejects.toMatchObject({ code: 'E_SPARE_IN_USE', message: expect.stringContaining(`${p} at offset ${MiB} overlaps an ext4 filesystem`) });
  });

  it('a GPT disk: a region inside a partition is refused, one after the last partition passes', async () => {
    const p = image('gpt.img', 64);
    const r = spawnSync('sfdisk', ['-q', p], { input: 'label: gpt\nstart=2048, size=65536\n', encoding: 'utf8', env });
    expect(r.status, r.stderr).toBe(0);
    await expect(checkFile(p, 20 * MiB, 4 * MiB)).rejects.toMatchObject({ message: `${p} at offset ${20 * MiB} overlaps partition ${p}1; use --force-format to overwrite it` });
    await expect(checkFile(p, 40 * MiB, 8 * MiB)).resolves.toBe('empty');
  });
});

describe('claims', () => {
  it('a file claimed once cannot be claimed again until released', () => {
    const native = fakeFor(w);
    const held = HeldDevices.claim(native, identify(w.main, 'main'), identify(w.spare, 'spare'));
    expect(() => HeldDevices.claim(native, identify(w.file('m2.img', 8 << 20), 'main'), identify(w.spare, 'spare'))).toThrow(
      `spare device ${w.spare} is in use (mounted, or held by another program)`,
    );
    expect(native.claims.size).toBe(2); // the failed second claim released its main again
    held.release();
    held.release();
    expect(native.claims.size).toBe(0);
  });

  it('the daemon holds both claims while it runs and releases them when it stops or fails to start', async () => {
    const native = fakeFor(w);
    const daemon = await Daemon.start(config(w), { native, runDir: w.runDir, log: quietLog(), logFile: null });
    // One open per device: the geometry came with the claim, no path was opened again to probe it.
    expect(native.openBackingInfoCalls).toBe(0);
    expect(daemon.status().sizeBytes).toBe(fs.statSync(w.main).size);
    expect([...native.claims.values()].sort()).toEqual([identify(w.main, 'main').identity, identify(w.spare, 'spare').identity].sort());
    await daemon.shutdown('test');
    expect(native.claims.size).toBe(0);

    const failing = fakeFor(w, { failStart: 'EINVAL' });
    await expect(Daemon.start(config(w), { native: failing, runDir: w.runDir, log: quietLog(), logFile: null })).rejects.toMatchObject({ code: 'E_KERNEL' });
    expect(failing.claims.size).toBe(0);
  });
});


describe.skipIf(!hasTools)('add over a spare file that holds an ext4 image (real blkid)', () => {
  const mkfs = (p: string): void => {
    const r = spawnSync('mkfs.ext4', ['-q', '-F', '-L', 'backup', p], { env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
    expect(r.status, String(r.stderr)).toBe(0);
  };

  it('is refused, the file unchanged; --force-format formats it', async () => {
    mkfs(w.spare);
    const before = fs.readFileSync(w.spare);
    for (const mode of [[], ['--foreground']]) {
      const { ctx, stderr } = captureCtx(w, fakeFor(w));
      expect(await main(['add', '--main', w.main, '--spare', w.spare, ...mode], ctx)).toBe(1);
      expect(stderr()).toBe(`dmremap-ublk: ${w.spare} holds an ext4 filesystem (label "backup"); use --force-format to overwrite it\n`);
    }
    expect(fs.readFileSync(w.spare).equals(before)).toBe(true);

    const native = fakeFor(w);
    const daemon = await Daemon.start(config(w, { forceFormat: true }), { native, runDir: w.runDir, log: quietLog(), logFile: null });
    await daemon.shutdown('test');
    const io = await FileSpareIo.open(w.spare);
    const sb = await io.read(0, 8);
    await io.close();
    expect(sb.toString('latin1')).toBe('DMRMAPSB');
  });
});

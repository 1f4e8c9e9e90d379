// Devices that come back, the parts without a daemon: the device record's schema and name rule, stable-path
// resolution against a fake /dev/disk tree, records that conflict, and the /dev/dmremap/<name> link rules.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DmrError } from '../../src/errors.js';
import { disksProblem, flagsFromRecord, recordFromFlags, saveRecord } from '../../src/service/define.js';
import { isRecordName, listRecords, parseRecord, readRecord, removeRecord, writeRecord, type DeviceRecord } from '../../src/service/records.js';
import { stablePath, type IsBlock } from '../../src/service/stable-path.js';
import { linkStableName, stableNameOf, unlinkStableName } from '../../src/device/stable-name.js';
import { addFlagsSchema } from '../../src/cli/schemas.js';
import { execWord, markedText, renderUnits, unedited } from '../../src/service/systemd.js';
import { makeWorld, type World } from './helpers.js';

let w: World;
beforeEach(() => {
  w = makeWorld();
});
afterEach(() => w.cleanup());

const record = (over: Partial<DeviceRecord> = {}): DeviceRecord => ({
  version: 1,
  name: 'data',
  main: { path: w.main, kind: 'file', given: w.main, identity: `file:${w.main}` },
  spare: { path: w.spare, kind: 'file', given: w.spare, identity: `file:${w.spare}` },
  blockSize: 4096,
  queues: 2,
  depth: 64,
  maxIoKib: 256,
  buffers: 'auto',
  spareOffset: null,
  spareSize: null,
  policy: { readRetries: 5 },
  recordedAt: '2026-12-02T00:00:00.000Z',
  ...over,
});

const expectDmr = (f: () => unknown, code: string, msg: RegExp): void => {
  let err: unknown = null;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(DmrError);
  expect((err as DmrError).code).toBe(code);
  expect((err as DmrError).message).toMatch(msg);
};

describe('device records', () => {
  it('names: add --name\'s rule (a letter first, at most 64 characters, not ublkN)', () => {
    for (const ok of ['data', 'a', 'Vol_1.x-y', `a${'b'.repeat(63)}`]) expect(isRecordName(ok), ok).toBe(true);
    for (const bad of ['', '1data', '.x', '-x', 'a/b', '../x', 'a b', `a${'b'.repeat(64)}`, 'ublk0', 'ublkb3', 'ublkc12']) expect(isRecordName(bad), bad).toBe(false);
  });

  it('round-trips through the file (atomic write, mode 0644), lists, reads and removes', () => {
    const file = writeRecord(w.devicesDir, record());
    expect(file).toBe(path.join(w.devicesDir, 'data.json'));
    expect(fs.statSync(file).mode & 0o777).toBe(0o644);
    expect(readRecord(w.devicesDir, 'data')).toEqual(record());
    expect(listRecords(w.devicesDir)).toEqual({ valid: [record()], invalid: [] });
    expect(fs.readdirSync(w.devicesDir)).toEqual(['data.json']);
    expect(removeRecord(w.devicesDir, 'data')).toBe(true);
    expect(removeRecord(w.devicesDir, 'data')).toBe(false);
    expect(readRecord(w.devicesDir, 'data')).toBeNull();
    expect(listRecords(path.join(w.root, 'nowhere'))).toEqual({ valid: [], invalid: [] });
  });

  it('a record that does not parse is reported by file with the first problem, never skipped', () => {
    writeRecord(w.devicesDir, record());
    fs.writeFileSync(path.join(w.devicesDir, 'broken.json'), '{"version":1,');
    fs.writeFileSync(path.join(w.devicesDir, 'old.json'), JSON.stringify({ ...record({ name: 'old' }), version: 2 }));
    fs.writeFileSync(path.join(w.devicesDir, 'rel.json'), JSON.stringify(record({ name: 'rel', main: { path: 'disk', kind: 'file', given: 'disk', identity: null } })));
    fs.writeFileSync(path.join(w.devicesDir, 'other.json'), JSON.stringify(record({ name: 'elsewhere' })));
    fs.writeFileSync(path.join(w.devicesDir, 'extra.json'), JSON.stringify({ ...record({ name: 'extra' }), surprise: 1 }));
    fs.writeFileSync(path.join(w.devicesDir, 'README'), 'not a record');
    const { valid, invalid } = listRecords(w.devicesDir);
    expect(valid.map((r) => r.name)).toEqual(['data']);
    const why = Object.fromEntries(invalid.map((i) => [path.basename(i.file), i.reason]));
    expect(Object.keys(why)).toEqual(['broken.json', 'extra.json', 'old.json', 'other.json', 'rel.json']);
    expect(why['broken.json']).toMatch(/^not valid JSON/);
    expect(why['extra.json']).toMatch(/surprise/);
    expect(why['old.json']).toMatch(/^version: /);
    expect(why['other.json']).toBe('names device "elsewhere": its file must be elsewhere.json');
    expect(why['rel.json']).toBe('main.path: must be an absolute path');
    expectDmr(() => readRecord(w.devicesDir, 'broken'), 'E_RECORD', /broken\.json: not valid JSON/);
    expect(parseRecord('/x/data.json', JSON.stringify(record({ depth: 0 })))).toMatchObject({ invalid: { reason: expect.stringMatching(/^depth: /) } });
  });

  it('add --persist: records the flags given (no --force-format), needs --name; up gets the same flags back', () => {
    const flags = addFlagsSchema.parse({ main: w.main, spare: w.spare, name: 'vol', queues: '2', 'read-retries': '7', 'spare-offset': '4096', persist: true, 'force-format': true });
    const r = recordFromFlags(flags, w.diskDir, new Date(0));
    expect(r).toMatchObject({ name: 'vol', queues: 2, blockSize: null, depth: 128, maxIoKib: 512, spareOffset: 4096, policy: { readRetries: 7 }, main: { kind: 'file', path: w.main } });
    const back = flagsFromRecord(r, false);
    expect(back.device).toMatchObject({ mainPath: w.main, sparePath: w.spare, name: 'vol', queues: 2, depth: 128, maxIoBytes: 512 << 10, spareOffset: 4096, forceFormat: false });
    expect(back.policyFlags).toEqual({ readRetries: 7 });
    expect(addFlagsSchema.safeParse({ main: w.main, spare: w.spare, persist: true }).error?.issues[0]?.message).toMatch(/^--persist needs --name/);
    expect(addFlagsSchema.safeParse({ main: w.main, spare: w.spare, name: 'x', persist: true, foreground: true }).error?.issues[0]?.message).toMatch(/^--persist is for a detached add/);
  });

  it('refuses a second record of the same name for other disks, or another record\'s main or spare; rewriting the same is fine', () => {
    saveRecord(w.devicesDir, record());
    saveRecord(w.devicesDir, record({ depth: 32 }));
    expect(readRecord(w.devicesDir, 'data')?.depth).toBe(32);
    const main2 = w.file('main2.img', 8 << 20);
    const spare2 = w.file('spare2.img', 4 << 20);
    const b = (p: string) => ({ path: p, kind: 'file' as const, given: p, identity: `file:${p}` });
    expectDmr(() => saveRecord(w.devicesDir, record({ main: b(main2) })), 'E_NAME_TAKEN', /already recorded with main .*main\.img/);
    expectDmr(() => saveRecord(w.devicesDir, record({ name: 'two', main: b(main2) })), 'E_NAME_TAKEN', /spare\.img is already recorded for device "data"/);
    saveRecord(w.devicesDir, record({ name: 'two', main: b(main2), spare: b(spare2) }));
    expect(listRecords(w.devicesDir).valid.map((r) => r.name)).toEqual(['data', 'two']);
  });

  it('disksProblem: a missing disk, a path that now names another disk, or none', () => {
    expect(disksProblem(record())).toBeNull();
    const gone = path.join(w.root, 'gone.img');
    expect(disksProblem(record({ spare: { path: gone, kind: 'file', given: gone, identity: `file:${gone}` } }))?.code).toBe('E_DEVICE_MISSING');
    // A by-path style link that moved to another disk since the record was written.
    const link = path.join(w.root, 'by-path-link');
    fs.symlinkSync(w.spare, link);
    const moved = disksProblem(record({ main: { path: link, kind: 'by-path', given: w.main, identity: `file:${w.main}` } }));
    expect(moved?.code).toBe('E_STATE');
    expect(moved?.message).toMatch(/^main .*by-path-link is not the disk recorded \(recorded file:.*main\.img, now file:.*spare\.img\)/);
  });
});

describe('stable paths (a fake /dev/disk tree)', () => {
  // Regular files stand in for block devices under the fake /dev: the test's IsBlock says which are "disks".
  let devs: string;
  let isBlock: IsBlock;
  beforeEach(() => {
    devs = path.join(w.root, 'fakedev');
    fs.mkdirSync(devs);
    for (const d of ['sda', 'sdb', 'sdb1', 'sdc']) fs.writeFileSync(path.join(devs, d), '');
    const real = fs.realpathSync(devs);
    isBlock = (st) => st.isFile() && st.size === 0 && fs.readdirSync(real).some((n) => fs.statSync(path.join(real, n)).ino === st.ino);
    const link = (kind: string, name: string, dev: string): void => {
      fs.mkdirSync(path.join(w.diskDir, kind), { recursive: true });
      fs.symlinkSync(path.relative(path.join(w.diskDir, kind), path.join(devs, dev)), path.join(w.diskDir, kind, name));
    };
    link('by-path', 'pci-0000:00:1f.2-ata-1', 'sda');
    link('by-id', 'wwn-0x5000c500a1b2c3d4', 'sda');
    link('by-id', 'ata-WDC_WD40-SERIAL1', 'sda');
    link('by-path', 'pci-0000:00:1f.2-ata-2', 'sdb');
    link('by-uuid', '1234-ABCD', 'sdb1');
    link('by-partuuid', 'aaaa-01', 'sdb1');
    link('by-id', 'dangling', 'nonexistent');
  });

  it('by-id first (the first name in order), then by-path, by-uuid, by-partuuid; else the path as given', () => {
    expect(stablePath(path.join(devs, 'sda'), w.diskDir, isBlock)).toMatchObject({ path: path.join(w.diskDir, 'by-id', 'ata-WDC_WD40-SERIAL1'), kind: 'by-id', given: path.join(devs, 'sda') });
    expect(stablePath(path.join(devs, 'sdb'), w.diskDir, isBlock)).toMatchObject({ path: path.join(w.diskDir, 'by-path', 'pci-0000:00:1f.2-ata-2'), kind: 'by-path' });
    expect(stablePath(path.join(devs, 'sdb1'), w.diskDir, isBlock)).toMatchObject({ path: path.join(w.diskDir, 'by-uuid', '1234-ABCD'), kind: 'by-uuid' });
    expect(stablePath(path.join(devs, 'sdc'), w.diskDir, isBlock)).toMatchObject({ path: path.join(devs, 'sdc'), kind: 'as-given' });
    // Given as one of its links, a disk still gets its best name.
    expect(stablePath(path.join(w.diskDir, 'by-path', 'pci-0000:00:1f.2-ata-1'), w.diskDir, isBlock).kind).toBe('by-id');
    // No /dev/disk at all (a container): the path given.
    expect(stablePath(path.join(devs, 'sda'), path.join(w.root, 'none'), isBlock).kind).toBe('as-given');
  });

  it('a regular file keeps its absolute, resolved path; a missing path is E_DEVICE_MISSING', () => {
    const rel = path.relative(process.cwd(), w.main);
    expect(stablePath(rel, w.diskDir)).toMatchObject({ path: fs.realpathSync(w.main), kind: 'file', identity: `file:${fs.realpathSync(w.main)}` });
    expectDmr(() => stablePath(path.join(w.root, 'nope'), w.diskDir), 'E_DEVICE_MISSING', /nope does not exist/);
  });
});

describe('stable names (/dev/dmremap/<name>)', () => {
  const dev0 = (): string => path.join(w.devDir, 'ublkb0');
  const dev1 = (): string => path.join(w.devDir, 'ublkb1');

  it('links, is idempotent, and unlinks only its own link', () => {
    const p = linkStableName(w.nameDir, 'data', dev0(), () => false);
    expect(p).toBe(path.join(w.nameDir, 'data'));
    expect(fs.readlinkSync(p)).toBe(dev0());
    expect(linkStableName(w.nameDir, 'data', dev0(), () => true)).toBe(p);
    expect(stableNameOf(w.nameDir, 'data', dev0())).toBe(p);
    expect(stableNameOf(w.nameDir, 'data', dev1())).toBeNull();
    expect(stableNameOf(w.nameDir, null, dev0())).toBeNull();
    expect(unlinkStableName(w.nameDir, 'data', dev1())).toBe(false);
    expect(fs.readdirSync(w.nameDir)).toEqual(['data']);
    expect(unlinkStableName(w.nameDir, 'data', dev0())).toBe(true);
    expect(fs.readdirSync(w.nameDir)).toEqual([]);
    expect(unlinkStableName(w.nameDir, 'data', dev0())).toBe(false);
  });

  it('replaces a link to something that is not another device of ours; refuses one that is, and a non-link', () => {
    fs.mkdirSync(w.nameDir);
    const p = path.join(w.nameDir, 'data');
    fs.symlinkSync('/dev/ublkb7', p);
    expect(linkStableName(w.nameDir, 'data', dev0(), (t) => t === dev1())).toBe(p);
    expect(fs.readlinkSync(p)).toBe(dev0());
    fs.rmSync(p);
    fs.symlinkSync(dev1(), p);
    expectDmr(() => linkStableName(w.nameDir, 'data', dev0(), (t) => t === dev1()), 'E_LINK', /data points at .*ublkb1, another dmremap-ublk device: not replaced/);
    expect(fs.readlinkSync(p)).toBe(dev1());
    fs.rmSync(p);
    fs.writeFileSync(p, 'mine');
    expectDmr(() => linkStableName(w.nameDir, 'data', dev0(), () => false), 'E_LINK', /data exists and is not a symlink: not replaced/);
    expect(fs.readFileSync(p, 'utf8')).toBe('mine');
    expect(unlinkStableName(w.nameDir, 'data', dev0())).toBe(false);
    expect(fs.readdirSync(w.nameDir)).toEqual(['data']);
  });
  it('does not take over a link someone made to a disk that exists (README: only a stale link, to a device that is gone, is replaced)', () => {
    fs.mkdirSync(w.nameDir);
    const p = path.join(w.nameDir, 'data');
    // Stand-in for a link to /dev/sda made by hand: its target exists and is not a device of ours.
    fs.symlinkSync(w.main, p);
    expectDmr(() => linkStableName(w.nameDir, 'data', dev0(), () => false), 'E_LINK', /data/);
    expect(fs.readlinkSync(p)).toBe(w.main);
  });
});

describe('ExecStart words (systemd command line rules)', () => {
  it('quotes a path with white space, doubles % and $, refuses quotes, backslashes and control characters', () => {
    expect(execWord('/usr/bin/node')).toBe('/usr/bin/node');
    expect(execWord('/opt/my node/bin/node')).toBe('"/opt/my node/bin/node"');
    expect(execWord('/opt/100%/$HOME/node')).toBe('/opt/100%%/$$HOME/node');
    for (const bad of ['/opt/a"b', "/opt/a'b", '/opt/a\\b', '/opt/a\nb']) {
      expect(() => execWord(bad)).toThrow(expect.objectContaining({ code: 'E_SYSTEMD' }) as unknown as Error);
    }
    const unit = renderUnits(['/opt/my node/node', '/srv/dmremap ublk/bin/dmremap-ublk.js'])['dmremap-ublk@.service'];
    expect(/^ExecStart=(.*)$/m.exec(unit)?.[1]).toBe('"/opt/my node/node" "/srv/dmremap ublk/bin/dmremap-ublk.js" up --foreground %i');
  });
});

describe('install-systemd\'s mark: a file edited here is told from one it wrote', () => {
  it('a marked file is unedited while its rest matches the hash; an unmarked one only when an earlier version shipped it', () => {
    const unit = renderUnits(['/usr/bin/node', '/srv/dmr/bin/dmremap-ublk.js'])['dmremap-ublk@.service'];
    const marked = markedText(unit);
    expect(marked.split('\n')[0]).toMatch(/^# Written by dmremap-ublk install-systemd; sha256 of the lines below: [0-9a-f]{64} /);
    expect(unedited('dmremap-ublk@.service', marked)).toBe(true);
    expect(unedited('dmremap-ublk@.service', marked.replace('RestartSec=2', 'RestartSec=3'))).toBe(false);
    expect(unedited('dmremap-ublk@.service', `${marked}# mine\n`)).toBe(false);
    expect(unedited('dmremap-ublk@.service', '[Service]\nExecStart=/bin/true\n')).toBe(false);
    expect(unedited('dmremap-ublk.target', '')).toBe(false);
  });
});

// An in-memory stand-in for the C++ addon, for unit tests on hosts without ublk. It behaves like the kernel
// where the daemon depends on it: device ids are allocated lowest-free, "device nodes" (plain files in
// `devDir`) appear on start and disappear on stop, start can fail after ADD_DEV (leaving a node the daemon
// must clean up), busy backing devices fail start with EBUSY, and stop is idempotent.
// Selected only by tests (see native-select.ts); never loaded otherwise.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import util from 'node:util';
import * as z from 'zod';
import type {
  BackingClaim,
  BackingInfo,
  BackingRole,
  DeviceInfo,
  DeviceOptions,
  FaultAction,
  KernelDeviceInfo,
  NativeAddon,
  NativeDevice,
  NativeErrorShape,
  NativeEvent,
  QueueStats,
  NativeScanReadResult,
  PeerCred,
  ScanSegment,
  UblkProbe,
} from '../native.js';
import { loadNative, REMAP_FLAG_LOST, REMAP_FLAG_MOVING, REMAP_FLAG_REDIRECT, REMAP_FLAG_REMOVE, UBLK_F_USER_RECOVERY, UBLK_F_USER_RECOVERY_REISSUE } from '../native.js';
import { MAX_DEPTH, MAX_QUEUES } from '../device/config.js';
import { runStop, scanPieces } from './scan-pieces.js';

/** Native's bounds of one scanRead (native/scan_reader.h kScanNarrowMaxBytes, kScanMaxFailures). */
export const FAKE_SCAN_NARROW_MAX_BYTES = 1 << 20;
export const FAKE_SCAN_MAX_FAILURES = 32;

export const fakeConfigSchema = z.strictObject({
  devDir: z.string(),
  controlAvailable: z.boolean().default(true),
  controlErrno: z.number().int().default(2),
  /** UBLK_F_* bits GET_FEATURES reports, as a hex string (JSON carries no bigint); no AUTO_BUF_REG by default. */
  features: z.string().regex(/^0x[0-9a-f]+$/).default('0xc2'),
  /** Paths whose start fails with EBUSY, as an O_EXCL open of a mounted device would. */
  busy: z.array(z.string()).default([]),
  /** errno name START_DEV fails with, after ADD_DEV succeeded. */
  failStart: z.string().nullable().default(null),
  /**
   * errno name recover()'s queue setup (io_uring, buffers) fails with. As the addon does, that setup comes
   * before START_USER_RECOVERY, so the kernel device stays quiesced and recoverable.
   */
  failRecoverSetup: z.string().nullable().default(null),
  logicalBlockSize: z.number().int().default(512),
  /** Milliseconds stop() takes. */
  stopDelayMs: z.number().int().nonnegative().default(0),
  /**
   * Byte ranges of a backing device whose reads (readRange, and the read half of copyRange) or writes fail
   * with errno `code`, like a disk's bad sectors. Tests may change these lists while the device runs.
   */
  failReads: z.array(z.strictObject({ device: z.enum(['main', 'spare']), offset: z.number(), bytes: z.number(), code: z.string() })).default([]),
  failWrites: z.array(z.strictObject({ device: z.enum(['main', 'spare']), offset: z.number(), bytes: z.number(), code: z.string() })).default([]),
  /**
   * What peerCred reports for every control socket peer (null: the test process's own credentials, as the
   * kernel would say of a client run by the same user). Tests may change FakeNative.peer while it runs.
   */
  peer: z.strictObject({ pid: z.number().int(), uid: z.number().int(), gid: z.number().int(), groups: z.array(z.number().int()) }).nullable().default(null),
  /** errno name peerCred fails with (as getsockopt would), null: it answers. */
  failPeerCred: z.string().nullable().default(null),
  /**
   * Not the addon's: what device/in-use.ts reads instead of the system's when it asks whether a device's block
   * device is in use (the fake's nodes are plain files): a sysfs directory per device id (its `dev`, `holders/`,
   * partitions), and the mount table and swaps to read (unset: the system's, where the fake's devnos are not).
   */
  blockSysfs: z.record(z.string(), z.string()).default({}),
  mountinfo: z.string().optional(),
  swaps: z.string().optional(),
  /** The /sys/block to look for loop devices in (unset: the system's). */
  sysBlock: z.string().optional(),
  /** Device ids whose exclusive open fails with EBUSY, as a file system holding it would make it. */
  exclusiveBusy: z.array(z.number().int()).default([]),
});
export type FakeConfig = z.input<typeof fakeConfigSchema>;

const fakeKernelStateSchema = z.strictObject({
  state: z.enum(['dead', 'live', 'quiesced']),
  queues: z.number(),
  depth: z.number(),
  maxIoBytes: z.number(),
  blockSize: z.number(),
  sizeBytes: z.string(),
  zeroCopy: z.boolean(),
  flags: z.string(),
  /**
   * 6.12: a START_USER_RECOVERY whose recovery was cut short: GET_DEV_INFO still
   * says quiesced, and every later START_USER_RECOVERY fails with EINVAL.
   */
  recoveryCutShort: z.boolean().optional(),
});
type FakeKernelState = z.infer<typeof fakeKernelStateSchema>;

/** Where the fake kernel keeps device `devId`'s state: beside devDir (not in it: tests list the device nodes). */
const fakeKernelStatePath = (devDir: string, devId: number): string => path.join(`${devDir}.kernel`, `ublk${devId}.json`);

/**
 * The fake kernel's state of device `devId`. A live device whose server process is gone (killed) reads as the
 * kernel would make it: quiesced when it was created with user recovery, else dead.
 */
function readFakeKernelState(devDir: string, devId: number): FakeKernelState | null {
  let m: FakeKernelState;
  try {
    m = fakeKernelStateSchema.parse(JSON.parse(fs.readFileSync(fakeKernelStatePath(devDir, devId), 'utf8')));
  } catch {
    return null;
  }
  if (m.state !== 'live') return m;
  let pid = 0;
  try {
    pid = Number(fs.readFileSync(path.join(devDir, `ublkc${devId}`), 'utf8'));
  } catch {
    return m;
  }
  if (pid > 0 && !processRunning(pid)) return { ...m, state: (BigInt(m.flags) & UBLK_F_USER_RECOVERY) !== 0n ? 'quiesced' : 'dead' };
  return m;
}

function processRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** An error shaped like the addon's: message "<command>[ <detail>]: <strerror>". */
export function nativeError(code: string, command: string, detail = ''): NativeErrorShape {
  const errno = (os.constants.errno as Record<string, number>)[code] ?? 0;
  const text = util.getSystemErrorMap().get(-errno)?.[1] ?? code;
  const message = `${command}${detail ? ` ${detail}` : ''}: ${text}`;
  return Object.assign(new Error(message), { code, errno, command });
}

/** How a read dispatched by FakeDevice.startRead ended: its data, an errno code, or dropped (detach, crash: the kernel reissues it). */
export type FakeReadResult = { data: Buffer } | { errno: string } | { dropped: true };

export class FakeDevice implements NativeDevice {
  private devId = -1;
  private started = false;
  readonly queueStats: QueueStats[];

  constructor(
    private readonly addon: FakeNative,
    readonly opts: DeviceOptions,
  ) {
    if (opts.queues < 1 || opts.queues > MAX_QUEUES) throw new RangeError(`queues ${opts.queues} out of range`);
    if (opts.depth < 1 || opts.depth > MAX_DEPTH) throw new RangeError(`depth ${opts.depth} out of range`);
    if (opts.sizeBytes % BigInt(opts.blockSize) !== 0n) throw new RangeError('size is not a multiple of the block size');
    this.queueStats = Array.from({ length: opts.queues }, (_, queue) => ({
      queue,
      reads: 0,
      writes: 0,
      flushes: 0,
      discards: 0,
      readBytes: 0,
      writeBytes: 0,
      errors: 0,
      inflight: 0,
      mainWritesOk: 0,
      mainWritesFailed: 0,
      latencyLog2Us: new Array<number>(24).fill(0),
    }));
    this.parkFaults = opts.parkFaults === true;
    this.slowIoUs = opts.slowIoUs ?? 0;
    addon.devices.push(this);
  }

  private node(kind: 'b' | 'c'): string {
    return path.join(this.addon.cfg.devDir, `ublk${kind}${this.devId}`);
  }

  /** The kernel's side of a device, in a file (fakeKernelStatePath) so that another process sees it. */
  private meta(): string {
    return fakeKernelStatePath(this.addon.cfg.devDir, this.devId);
  }

  private writeMeta(state: FakeKernelState['state']): void {
    const m: FakeKernelState = {
      state,
      queues: this.opts.queues,
      depth: this.opts.depth,
      maxIoBytes: this.opts.maxIoBytes,
      blockSize: this.opts.blockSize,
      sizeBytes: String(this.opts.sizeBytes),
      zeroCopy: this.opts.zeroCopy === true,
      flags: `0x${this.flags.toString(16)}`,
    };
    fs.mkdirSync(path.dirname(this.meta()), { recursive: true });
    fs.writeFileSync(this.meta(), JSON.stringify(m));
  }

  /** What the device is created with: CMD_IOCTL_ENCODE, and both recovery flags where the fake kernel offers both. */
  private get flags(): bigint {
    const rec = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
    return 0x40n | ((BigInt(this.addon.cfg.features) & rec) === rec ? rec : 0n);
  }

  /** Whether recover() or start() made this device live (detach or a crash ends it). */
  get live(): boolean {
    return this.started;
  }

  async recover(): Promise<DeviceInfo> {
    const cfg = this.addon.cfg;
    if (this.devId >= 0 || this.opts.devId < 0) throw nativeError('EALREADY', 'recover', '(device already started)');
    for (const p of [this.opts.mainPath, this.opts.sparePath]) {
      if (cfg.busy.includes(p)) throw nativeError('EBUSY', 'open', p);
    }
    const id = this.opts.devId;
    const m = readFakeKernelState(cfg.devDir, id);
    if (m === null) throw nativeError('ENODEV', 'GET_DEV_INFO');
    const rec = UBLK_F_USER_RECOVERY;
    if ((BigInt(m.flags) & rec) === 0n) throw nativeError('EOPNOTSUPP', 'recover', `(device ${id} was created without UBLK_F_USER_RECOVERY)`);
    const want: Array<[string, unknown, unknown]> = [
      ['queues', m.queues, this.opts.queues],
      ['depth', m.depth, this.opts.depth],
      ['max io bytes', m.maxIoBytes, this.opts.maxIoBytes],
      ['zero copy', m.zeroCopy, this.opts.zeroCopy === true],
      ['block size', m.blockSize, this.opts.blockSize],
      ['size bytes', m.sizeBytes, String(this.opts.sizeBytes)],
    ];
    for (const [field, have, wants] of want) {
      if (have !== wants) throw nativeError('EINVAL', 'recover', `(device ${id} has ${field} ${String(have)}, this daemon wants ${String(wants)})`);
    }
    if (cfg.failRecoverSetup !== null) throw nativeError(cfg.failRecoverSetup, 'io_uring_queue_init', '(queue 0)');
    if (m.state !== 'quiesced') throw nativeError('EBUSY', 'START_USER_RECOVERY');
    if (m.recoveryCutShort === true) throw nativeError('EINVAL', 'START_USER_RECOVERY');
    this.calls.push('recover');
    this.devId = id;
    fs.writeFileSync(this.node('c'), String(process.pid));
    this.writeMeta('live');
    this.started = true;
    this.addon.recoveries++;
    for (let q = 0; q < this.opts.queues; q++) {
      setImmediate(() => this.emit({ type: 'queue_started', queue: q, tid: 1000 + q }));
    }
    return this.info();
  }

  async detach(): Promise<void> {
    if (this.devId < 0 || !this.started) return;
    this.calls.push('detach');
    this.endParkedReads({ dropped: true });
    for (let q = 0; q < this.opts.queues; q++) this.emit({ type: 'queue_stopped', queue: q, reason: 'stopped' });
    this.writeMeta('quiesced');
    this.started = false;
    this.devId = -1;
  }

  /** As if the process serving the device died (kill -9): the kernel quiesces a device created with user recovery, stops any other. */
  simulateCrash(): void {
    if (this.devId < 0) return;
    this.endParkedReads({ dropped: true });
    const recovery = (this.flags & UBLK_F_USER_RECOVERY) !== 0n;
    this.writeMeta(recovery ? 'quiesced' : 'dead');
    if (!recovery) {
      // The kernel stops a device without recovery when its server dies, and forgets the pid.
      fs.rmSync(this.node('b'), { force: true });
      fs.writeFileSync(this.node('c'), '-1');
    }
    this.started = false;
    this.devId = -1;
  }

  async start(): Promise<DeviceInfo> {
    const cfg = this.addon.cfg;
    for (const p of [this.opts.mainPath, this.opts.sparePath]) {
      if (cfg.busy.includes(p)) throw nativeError('EBUSY', 'open', p);
    }
    // ADD_DEV: the lowest free id, claimed by creating the char node exclusively.
    for (let id = 0; ; id++) {
      try {
        fs.writeFileSync(path.join(cfg.devDir, `ublkc${id}`), String(process.pid), { flag: 'wx' });
        this.devId = id;
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    this.writeMeta('dead');
    if (cfg.failStart !== null) throw nativeError(cfg.failStart, 'START_DEV');
    fs.writeFileSync(this.node('b'), '');
    this.writeMeta('live');
    this.started = true;
    for (let q = 0; q < this.opts.queues; q++) {
      setImmediate(() => this.emit({ type: 'queue_started', queue: q, tid: 1000 + q }));
    }
    return this.info();
  }

  async stop(): Promise<void> {
    if (this.devId < 0) return;
    this.endParkedReads({ errno: 'EIO' });
    if (this.addon.cfg.stopDelayMs > 0) await new Promise((r) => setTimeout(r, this.addon.cfg.stopDelayMs));
    if (this.started) {
      for (let q = 0; q < this.opts.queues; q++) this.emit({ type: 'queue_stopped', queue: q, reason: 'stopped' });
    }
    fs.rmSync(this.node('b'), { force: true });
    fs.rmSync(this.node('c'), { force: true });
    fs.rmSync(this.meta(), { force: true });
    this.started = false;
    this.devId = -1;
  }

  /** The last table published, as the data path would hold it. */
  remapTable: { blocks: bigint[]; slots: bigint[]; flags: number[] } = { blocks: [], slots: [], flags: [] };
  /** Every call that reaches the data path or the backing devices, in order ("setRemapTable", "drain", "copyRange main->spare", ...). */
  readonly calls: string[] = [];
  /** Every table published, in order. */
  readonly tables: Array<{ blocks: bigint[]; slots: bigint[]; flags: number[] }> = [];

  setRemapTable(blocks: BigUint64Array, slots: BigUint64Array, flags: Uint8Array): void {
    this.checkEntries('setRemapTable', blocks, slots, flags, false);
    this.remapTable = { blocks: [...blocks], slots: [...slots], flags: [...flags] };
    this.tables.push(this.remapTable);
    this.calls.push('setRemapTable');
    this.replanParkedReads();
  }

  updateRemapTable(blocks: BigUint64Array, slots: BigUint64Array, flags: Uint8Array): void {
    this.checkEntries('updateRemapTable', blocks, slots, flags, true);
    const m = new Map<bigint, { slot: bigint; flags: number }>();
    this.remapTable.blocks.forEach((b, i) => m.set(b, { slot: this.remapTable.slots[i] as bigint, flags: this.remapTable.flags[i] as number }));
    blocks.forEach((b, i) => {
      if (flags[i] === REMAP_FLAG_REMOVE) m.delete(b);
      else m.set(b, { slot: slots[i] as bigint, flags: flags[i] as number });
    });
    const sorted = [...m.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    this.remapTable = { blocks: sorted, slots: sorted.map((b) => (m.get(b) as { slot: bigint }).slot), flags: sorted.map((b) => (m.get(b) as { flags: number }).flags) };
    this.tables.push(this.remapTable);
    this.calls.push('updateRemapTable');
    this.replanParkedReads();
  }

  private checkEntries(name: string, blocks: BigUint64Array, slots: BigUint64Array, flags: Uint8Array, update: boolean): void {
    if (slots.length !== blocks.length || flags.length !== blocks.length) throw new RangeError(`${name}: blocks, slots and flags differ in length`);
    const deviceBlocks = this.opts.sizeBytes / BigInt(this.opts.blockSize);
    blocks.forEach((b, i) => {
      if (b >= deviceBlocks || (i > 0 && b <= (blocks[i - 1] as bigint))) throw new RangeError(`${name}: blocks must be sorted, unique and inside the device`);
      const f = flags[i] as number;
      if (!(update && f === REMAP_FLAG_REMOVE) && (f & ~(REMAP_FLAG_LOST | REMAP_FLAG_MOVING | REMAP_FLAG_REDIRECT)) !== 0) throw new RangeError(`${name}: unknown flags ${f}`);
    });
  }

  /**
   * The `written` list native reports in a 'lost_written' io_fault for a write of blocks block..block+blocks-1
   * against the table last published: its LOST and REDIRECT blocks and the slots their data went to, in block order, a
   * run split where the blocks or the slots stop being consecutive (as native/request_plan.cc does).
   */
  writtenRanges(block: number, blocks: number): Array<{ block: number; blocks: number; slot: number }> {
    const out: Array<{ block: number; blocks: number; slot: number }> = [];
    const t = this.remapTable;
    t.blocks.forEach((b, i) => {
      const n = Number(b);
      if (n < block || n >= block + blocks || ((t.flags[i] as number) & (REMAP_FLAG_LOST | REMAP_FLAG_REDIRECT)) === 0) return;
      const slot = Number(t.slots[i] as bigint);
      const prev = out[out.length - 1];
      if (prev !== undefined && prev.block + prev.blocks === n && prev.slot + prev.blocks === slot) prev.blocks++;
      else out.push({ block: n, blocks: 1, slot });
    });
    return out;
  }

  /** Fault parking as last set (DeviceOptions.parkFaults, then setFaultParking). */
  parkFaults = false;
  /** Every resolveFault call, in order. */
  readonly resolutions: Array<{ queue: number; tag: number; seq: number; action: FaultAction }> = [];

  /** A latency (µs) scanRead reports for a block read on main or the spare (at least: the measured one is kept when longer); null: measured only. */
  scanLatencyUs: ((block: number) => number) | null = null;

  /** The slow_io threshold as last set (DeviceOptions.slowIoUs, then setSlowIoUs); 0: off. */
  slowIoUs = 0;

  setSlowIoUs(us: number): void {
    this.slowIoUs = us;
    this.calls.push(`setSlowIoUs ${us}`);
  }

  setFaultParking(on: boolean): void {
    this.parkFaults = on;
    this.calls.push(`setFaultParking ${on ? 1 : 0}`);
  }

  resolveFault(queue: number, tag: number, seq: number, action: FaultAction): void {
    this.resolutions.push({ queue, tag, seq, action });
    this.calls.push(`resolveFault ${action.action}`);
  }

  /** Takes (removes and returns) the resolution of request (tag, seq), or undefined when there is none yet. */
  takeResolution(f: { tag: number; seq: number }): FaultAction | undefined {
    const i = this.resolutions.findIndex((x) => x.tag === f.tag && x.seq === f.seq);
    if (i < 0) return undefined;
    const [r] = this.resolutions.splice(i, 1);
    return r?.action;
  }

  /** Waits until request (tag, seq) is resolved and takes its resolution; throws after `timeoutMs`. */
  async awaitResolution(f: { tag: number; seq: number }, timeoutMs = 3000): Promise<FaultAction> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const r = this.takeResolution(f);
      if (r) return r;
      if (Date.now() > until) throw new Error(`no resolution for tag ${f.tag} seq ${f.seq}`);
      await new Promise((res) => setTimeout(res, 5));
    }
  }

  /** Sequence number of the last request dispatched (startWrite), as native numbers them for drains. */
  private dispatchSeq = 0;
  /** Writes dispatched by startWrite and not completed yet: their sequence number and completion. */
  private readonly inFlight = new Map<number, Promise<void>>();

  /**
   * Resolves once every write dispatched (startWrite) before the call has completed; writes dispatched
   * after it do not hold it up (as native's drain, which waits for the dispatch sequence seen at its call).
   */
  async drain(): Promise<void> {
    this.calls.push('drain');
    const target = this.dispatchSeq;
    const before = [...this.inFlight].filter(([s]) => s <= target).map(([, p]) => p);
    await Promise.all(before);
  }

  /**
   * Dispatches a write of `data` (whole blocks) at `block`, planned against the table published now, as
   * native's queue does: a block with an entry goes to its slot on the spare (a LOST one too: its data goes
   * there), any other to main; a MOVING block would park (an error here). The write stays in flight, holding
   * up drains that started after it, until `complete()`, which puts the data where it was planned and gives
   * the 'lost_written' report native would make (null when it touched no LOST block).
   */
  startWrite(tag: number, seq: number, block: number, data: Buffer): { complete(): Promise<Extract<NativeEvent, { type: 'io_fault' }> | null> } {
    const bs = this.opts.blockSize;
    const blocks = data.length / bs;
    const report = this.plannedWrite(tag, seq, block, blocks);
    const t = this.remapTable;
    const targets: Array<{ role: BackingRole; offset: number }> = [];
    for (let i = 0; i < blocks; i++) {
      const k = t.blocks.indexOf(BigInt(block + i));
      const base = Number(this.opts.spareDataOffset ?? 0n);
      targets.push(k < 0 ? { role: 'main', offset: (block + i) * bs } : { role: 'spare', offset: base + Number(t.slots[k] as bigint) * bs });
    }
    const mySeq = ++this.dispatchSeq;
    let finish!: () => void;
    this.inFlight.set(mySeq, new Promise<void>((r) => (finish = r)));
    return {
      complete: async () => {
        targets.forEach((to, i) => {
          const fd = fs.openSync(this.pathOf(to.role), 'r+');
          try {
            fs.writeSync(fd, data, i * bs, bs, to.offset);
          } finally {
            fs.closeSync(fd);
          }
        });
        this.inFlight.delete(mySeq);
        finish();
        return report;
      },
    };
  }

  /** Reads dispatched by startRead and parked: each planned again at every publish, ended by `end`. */
  private parkedReads: Array<{ retry: () => boolean; end: (r: FakeReadResult) => void }> = [];

  /**
   * Dispatches a read of `blocks` blocks at `block` as native's queue routes one (request_plan.cc): planned
   * against the table published now, block by block in order: a MOVING or REDIRECT block parks it (planned
   * again at each publish, as native's OnTableChanged does), a LOST one fails it with EIO, a remapped one is
   * read from its slot, any other from main (an injected read failure gives its code). A parked read is
   * dropped on detach and crash (the kernel reissues it to the next server) and fails with EIO on stop.
   */
  startRead(block: number, blocks: number): { result: Promise<FakeReadResult>; readonly parked: boolean } {
    let settle!: (r: FakeReadResult) => void;
    const result = new Promise<FakeReadResult>((r) => (settle = r));
    let done = false;
    const end = (r: FakeReadResult): void => {
      done = true;
      settle(r);
    };
    const retry = (): boolean => {
      const r = this.planRead(block, blocks);
      if (r === 'park') return false;
      end(r);
      return true;
    };
    if (!retry()) this.parkedReads.push({ retry, end });
    return {
      result,
      get parked() {
        return !done;
      },
    };
  }

  /** A read of `blocks` blocks at `block` against the table published now, or 'park'. */
  private planRead(block: number, blocks: number): FakeReadResult | 'park' {
    const bs = this.opts.blockSize;
    const t = this.remapTable;
    const out = Buffer.alloc(blocks * bs);
    for (let i = 0; i < blocks; i++) {
      const k = t.blocks.indexOf(BigInt(block + i));
      const flags = k < 0 ? 0 : (t.flags[k] as number);
      // request_plan.cc's order: MOVING parks, then LOST fails the read, then REDIRECT parks.
      if ((flags & REMAP_FLAG_MOVING) !== 0) return 'park';
      if ((flags & REMAP_FLAG_LOST) !== 0) return { errno: 'EIO' };
      if ((flags & REMAP_FLAG_REDIRECT) !== 0) return 'park';
      const role: BackingRole = k < 0 ? 'main' : 'spare';
      const at = k < 0 ? BigInt((block + i) * bs) : BigInt(Number(this.opts.spareDataOffset ?? 0n) + Number(t.slots[k] as bigint) * bs);
      try {
        this.read(role, at, bs).copy(out, i * bs);
      } catch (e) {
        return { errno: (e as NodeJS.ErrnoException).code ?? 'EIO' };
      }
    }
    return { data: out };
  }

  /** Plans every parked read again against the table just published (native: OnTableChanged). */
  private replanParkedReads(): void {
    const waiting = this.parkedReads;
    this.parkedReads = [];
    for (const r of waiting) if (!r.retry()) this.parkedReads.push(r);
  }

  /** Ends every parked read with `r` (detach and crash: dropped, for the kernel to reissue; stop: EIO). */
  private endParkedReads(r: FakeReadResult): void {
    const waiting = this.parkedReads;
    this.parkedReads = [];
    for (const p of waiting) p.end(r);
  }

  /** The injected failure covering [offset, offset + bytes) of `role`, if any. */
  private failure(list: 'failReads' | 'failWrites', role: BackingRole, offset: bigint, bytes: number): string | null {
    const lo = Number(offset);
    for (const f of this.addon.cfg[list]) {
      if (f.device === role && lo < f.offset + f.bytes && f.offset < lo + bytes) return f.code;
    }
    return null;
  }

  private pathOf(role: BackingRole): string {
    return role === 'main' ? this.opts.mainPath : this.opts.sparePath;
  }

  async readRange(from: BackingRole, offset: bigint, bytes: number): Promise<Buffer> {
    this.calls.push(`readRange ${from}`);
    return this.read(from, offset, bytes);
  }

  private read(from: BackingRole, offset: bigint, bytes: number): Buffer {
    if (!this.started) throw nativeError('ENODEV', from, '(device not running)');
    const bad = this.failure('failReads', from, offset, bytes);
    if (bad !== null) throw nativeError(bad, `read ${from}`, `at byte ${offset}`);
    const fd = fs.openSync(this.pathOf(from), 'r');
    try {
      const b = Buffer.alloc(bytes);
      fs.readSync(fd, b, 0, bytes, Number(offset));
      return b;
    } finally {
      fs.closeSync(fd);
    }
  }

  /** 1 before any publish, one more per setRemapTable/updateRemapTable, as native counts them. */
  tableGeneration(): number {
    return 1 + this.tables.length;
  }

  /**
   * scanRead as native plans it (native/scan_reader.cc) against the table published now: unmapped runs from
   * main, remapped runs of consecutive slots with the same flags from the spare, MOVING and LOST runs
   * skipped, pieces of at most maxIoBytes (narrow: one block); a piece overlapping an injected read failure
   * (failReads) fails with its errno, the others are read from the files. Stops as native does: a narrow
   * call after FAKE_SCAN_NARROW_MAX_BYTES, any call after FAKE_SCAN_MAX_FAILURES failed pieces. Touches no
   * queue counter. (It never overlaps another call: it does not wait, so native's EBUSY cannot arise.)
   */
  async scanRead(offset: bigint, bytes: number, narrow = false): Promise<NativeScanReadResult> {
    this.calls.push('scanRead');
    if (!this.started) throw nativeError('ENODEV', 'scan read', '(device not running)');
    const bs = this.opts.blockSize;
    const off = Number(offset);
    if (bytes <= 0 || off % bs !== 0 || bytes % bs !== 0 || off + bytes > Number(this.opts.sizeBytes)) {
      throw nativeError('EINVAL', 'scan read', `(offset ${off} and ${bytes} bytes must be whole blocks of ${bs} inside the device)`);
    }
    const t = this.remapTable;
    const generation = this.tableGeneration();
    const base = Number(this.opts.spareDataOffset ?? 0n);
    const entry = new Map<number, { slot: number; flags: number }>();
    t.blocks.forEach((b, i) => entry.set(Number(b), { slot: Number(t.slots[i] as bigint), flags: t.flags[i] as number }));
    const first = off / bs;
    const capped = narrow && bytes > FAKE_SCAN_NARROW_MAX_BYTES;
    const end = first + (capped ? FAKE_SCAN_NARROW_MAX_BYTES : bytes) / bs;
    const plan: Array<{ spare: boolean; block: number; blocks: number; devOffset: number; flags: number }> = [];
    for (let b = first; b < end; ) {
      const e = entry.get(b);
      let n = 1;
      if (e === undefined) {
        while (b + n < end && !entry.has(b + n)) n++;
        plan.push({ spare: false, block: b, blocks: n, devOffset: b * bs, flags: 0 });
      } else {
        for (;;) {
          const next = entry.get(b + n);
          if (b + n >= end || next === undefined || next.slot !== e.slot + n || next.flags !== e.flags) break;
          n++;
        }
        plan.push({ spare: true, block: b, blocks: n, devOffset: base + e.slot * bs, flags: e.flags });
      }
      b += n;
    }
    const segments: ScanSegment[] = [];
    const step = narrow ? 1 : Number.POSITIVE_INFINITY; // as native: pieces of up to 1 MiB (scanPieces), whatever max-io is
    let failures = 0;
    let covered = end;
    let stopped: NativeScanReadResult['stopped'] = capped ? 'narrow_cap' : null;
    let limit = end;
    pieces: for (const p of plan) {
      for (const piece of scanPieces(p.block, p.block + p.blocks, bs, step)) {
        if (piece.block >= limit) {
          covered = limit;
          stopped = 'failures';
          break pieces;
        }
        const i = piece.block - p.block;
        const n = piece.blocks;
        const device: BackingRole = p.spare ? 'spare' : 'main';
        const skipped = (p.flags & (REMAP_FLAG_MOVING | REMAP_FLAG_REDIRECT)) !== 0 ? 'moving' : (p.flags & REMAP_FLAG_LOST) !== 0 ? 'lost' : null;
        const seg: ScanSegment = { device, block: p.block + i, blocks: n, skipped, latencyUs: 0, errno: 0 };
        if (skipped === null) {
          const at = BigInt(p.devOffset + i * bs);
          const t0 = process.hrtime.bigint();
          try {
            this.read(device, at, n * bs);
          } catch (e) {
            seg.errno = (e as NativeErrorShape).errno || 5;
          }
          seg.latencyUs = Number((process.hrtime.bigint() - t0) / 1000n);
          if (this.scanLatencyUs !== null) for (let k = 0; k < n; k++) seg.latencyUs = Math.max(seg.latencyUs, this.scanLatencyUs(seg.block + k));
        }
        segments.push(seg);
        if (seg.errno !== 0 && ++failures >= FAKE_SCAN_MAX_FAILURES && seg.block + n < end) {
          covered = seg.block + n;
          stopped = 'failures';
          break pieces;
        }
        if (seg.errno !== 0 && !narrow && limit === end) limit = runStop(first, end, seg.block, bs);
      }
    }
    return { offset, bytes, segments, coveredBytes: (covered - first) * bs, stopped, generation };
  }

  async copyRange(from: BackingRole, fromOffset: bigint, to: BackingRole, toOffset: bigint, bytes: number): Promise<void> {
    this.calls.push(`copyRange ${from}->${to}`);
    const data = this.read(from, fromOffset, bytes);
    const bad = this.failure('failWrites', to, toOffset, bytes);
    if (bad !== null) throw nativeError(bad, `write ${to}`, `at byte ${toOffset}`);
    const fd = fs.openSync(this.pathOf(to), 'r+');
    try {
      fs.writeSync(fd, data, 0, bytes, Number(toOffset));
    } finally {
      fs.closeSync(fd);
    }
  }

  async flush(which: BackingRole): Promise<void> {
    this.calls.push(`flush ${which}`);
    if (!this.started) throw nativeError('ENODEV', which, '(device not running)');
    const fd = fs.openSync(this.pathOf(which), 'r+');
    try {
      fs.fdatasyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  info(): DeviceInfo {
    return {
      devId: this.devId,
      blockPath: this.node('b'),
      charPath: this.node('c'),
      queues: this.opts.queues,
      depth: this.opts.depth,
      flags: this.flags,
      state: this.started ? 'live' : 'dead',
      fixedBuffers: false,
      zeroCopy: this.opts.zeroCopy === true,
    };
  }

  stats(): QueueStats[] {
    return this.queueStats.map((s) => ({ ...s, latencyLog2Us: [...s.latencyLog2Us] }));
  }

  /**
   * The 'lost_written' report native makes for a write of blocks [block, block + blocks) planned against
   * the table published now: the LOST blocks it touched, in runs of consecutive blocks and slots, with the
   * slots their data went to (the write's data is in those slots as of now). Null when it touches no LOST
   * block (the write completes without a report). Not emitted: a test emits it when it chooses, after
   * changing whatever it wants to interleave.
   */
  plannedWrite(tag: number, seq: number, block: number, blocks: number, attempt = 0): Extract<NativeEvent, { type: 'io_fault' }> | null {
    const t = this.remapTable;
    t.blocks.forEach((b, i) => {
      const n = Number(b);
      if (n >= block && n < block + blocks && ((t.flags[i] as number) & REMAP_FLAG_MOVING) !== 0) {
        throw new Error(`plannedWrite: block ${n} is MOVING: native would park the write`);
      }
    });
    const written = this.writtenRanges(block, blocks);
    if (written.length === 0) return null;
    return { type: 'io_fault', queue: 0, tag, seq, op: 'write', kind: 'lost_written', block, blocks, attempt, latencyUs: 100, failed: [], written };
  }

  /** Delivers an event as the addon's ThreadSafeFunction would. */
  emit(ev: NativeEvent): void {
    this.opts.onEvent(ev);
  }
}

export class FakeNative implements NativeAddon {
  readonly cfg: z.output<typeof fakeConfigSchema>;
  readonly devices: FakeDevice[] = [];
  readonly Device: new (opts: DeviceOptions) => NativeDevice;
  readonly limits = { maxQueues: MAX_QUEUES, maxDepth: MAX_DEPTH };

  /** What peerCred answers (null: this process's own credentials); starts as the config's `peer`. */
  peer: PeerCred | null;
  failPeerCred: string | null;
  /** The fds peerCred was asked about, in order. */
  readonly peerCredCalls: number[] = [];

  constructor(cfg: FakeConfig) {
    this.cfg = fakeConfigSchema.parse(cfg);
    this.peer = this.cfg.peer;
    this.failPeerCred = this.cfg.failPeerCred;
    const addon = this;
    this.Device = class extends FakeDevice {
      constructor(opts: DeviceOptions) {
        super(addon, opts);
      }
    };
  }

  probe(): UblkProbe {
    return {
      controlAvailable: this.cfg.controlAvailable,
      controlErrno: this.cfg.controlAvailable ? 0 : this.cfg.controlErrno,
      features: BigInt(this.cfg.features),
      featuresKnown: true,
      opcodeEncoding: 'ioctl',
    };
  }

  /** How often openBackingInfo opened a path (a daemon opens each device once, by its claim: none). */
  openBackingInfoCalls = 0;

  openBackingInfo(p: string): BackingInfo {
    this.openBackingInfoCalls++;
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(p, { bigint: true });
    } catch (e) {
      throw nativeError((e as NodeJS.ErrnoException).code ?? 'EIO', 'open', p);
    }
    return this.backingInfo(p, st);
  }

  private backingInfo(p: string, st: fs.BigIntStats): BackingInfo {
    return {
      path: p,
      sizeBytes: st.size,
      isBlockDevice: st.isBlockDevice(),
      rdev: st.rdev,
      dev: st.dev,
      ino: st.ino,
      logicalBlockSize: this.cfg.logicalBlockSize,
      physicalBlockSize: 4096,
      discard: true,
      rotational: false,
    };
  }

  /** Claims held now: fd → identity (a second claim of the same file fails with EBUSY, as flock would). */
  readonly claims = new Map<number, string>();

  claimBacking(p: string): BackingClaim {
    if (this.cfg.busy.includes(p)) throw nativeError('EBUSY', 'open', p);
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(p, { bigint: true });
    } catch (e) {
      throw nativeError((e as NodeJS.ErrnoException).code ?? 'EIO', 'stat', p);
    }
    if (!st.isFile() && !st.isBlockDevice()) throw nativeError('ENOTBLK', 'open', `${p} (not a block device or regular file)`);
    const identity = st.isBlockDevice() ? `b:${st.rdev}` : `f:${st.dev}:${st.ino}`;
    if ([...this.claims.values()].includes(identity)) throw nativeError('EBUSY', 'flock', p);
    let fd: number;
    try {
      fd = fs.openSync(p, 'r+');
    } catch (e) {
      throw nativeError((e as NodeJS.ErrnoException).code ?? 'EIO', 'open', p);
    }
    this.claims.set(fd, identity);
    return { ...this.backingInfo(p, fs.fstatSync(fd, { bigint: true })), fd, isBlockDevice: st.isBlockDevice(), rdev: st.isBlockDevice() ? st.rdev : 0n, dev: st.dev, ino: st.ino };
  }

  releaseBacking(fd: number): void {
    if (!this.claims.delete(fd)) throw nativeError('EBADF', 'close');
    fs.closeSync(fd);
  }

  private claimed(fd: number, offset: bigint, length: number): void {
    if (!this.claims.has(fd)) throw nativeError('EBADF', 'read');
    if (offset % 512n !== 0n || length % 512 !== 0 || length < 512 || length > 16 << 20) {
      throw new RangeError('offset and length must be multiples of 512, the length from 512 to 16 MiB');
    }
  }

  async readClaimed(fd: number, offset: bigint, length: number): Promise<Buffer> {
    this.claimed(fd, offset, length);
    const b = Buffer.alloc(length);
    fs.readSync(fd, b, 0, length, Number(offset)); // past the end stays zero
    return b;
  }

  async writeClaimed(fd: number, offset: bigint, data: Buffer): Promise<void> {
    this.claimed(fd, offset, data.length);
    fs.writeSync(fd, data, 0, data.length, Number(offset));
  }

  async syncClaimed(fd: number): Promise<void> {
    if (!this.claims.has(fd)) throw nativeError('EBADF', 'fdatasync');
    fs.fdatasyncSync(fd);
  }

  async kernelDeviceInfo(devId: number): Promise<KernelDeviceInfo> {
    let pid: number;
    try {
      pid = Number(fs.readFileSync(path.join(this.cfg.devDir, `ublkc${devId}`), 'utf8'));
    } catch {
      throw nativeError('ENODEV', 'GET_DEV_INFO');
    }
    const m = readFakeKernelState(this.cfg.devDir, devId);
    if (m === null) return { devId, state: 'dead', pid, queues: 1, depth: 128, flags: 0x40n };
    return { devId, state: m.state, pid, queues: m.queues, depth: m.depth, flags: BigInt(m.flags) };
  }

  /** Devices recover() made live. */
  recoveries = 0;

  /** As if a recovery of quiesced device `devId` was cut short after START_USER_RECOVERY (6.12): stuck. */
  simulateRecoveryCutShort(devId: number): void {
    const m = readFakeKernelState(this.cfg.devDir, devId);
    if (m === null || m.state !== 'quiesced') throw new Error(`fake device ${devId} is not quiesced`);
    fs.writeFileSync(fakeKernelStatePath(this.cfg.devDir, devId), JSON.stringify({ ...m, recoveryCutShort: true }));
  }

  async deleteKernelDevice(devId: number): Promise<void> {
    fs.rmSync(path.join(this.cfg.devDir, `ublkb${devId}`), { force: true });
    fs.rmSync(path.join(this.cfg.devDir, `ublkc${devId}`), { force: true });
    fs.rmSync(fakeKernelStatePath(this.cfg.devDir, devId), { force: true });
  }

  peerCred(fd: number): PeerCred {
    this.peerCredCalls.push(fd);
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError('peerCred(fd): fd must be a non-negative integer');
    if (this.failPeerCred !== null) throw nativeError(this.failPeerCred, 'getsockopt', 'SO_PEERCRED');
    let st: fs.Stats;
    try {
      st = fs.fstatSync(fd);
    } catch (e) {
      throw nativeError((e as NodeJS.ErrnoException).code ?? 'EBADF', 'getsockopt', 'SO_PEERCRED');
    }
    if (!st.isSocket()) throw nativeError('ENOTSOCK', 'getsockopt', 'SO_PEERCRED');
    if (this.peer !== null) return { ...this.peer, groups: [...this.peer.groups] };
    return { pid: process.pid, uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0, groups: process.getgroups?.() ?? [] };
  }

  /** Watchdogs armed (ms, code). Nothing of the kernel in it to fake: the real addon's watchdog runs. */
  readonly exitWatchdogs: Array<{ ms: number; code: number }> = [];
  armExitWatchdog(ms: number, code: number): void {
    this.exitWatchdogs.push({ ms, code });
    loadNative().armExitWatchdog(ms, code);
  }

  /** Notifications sent (sdNotify's state strings). Nothing of the kernel in it: the real addon sends them. */
  readonly notifications: string[] = [];
  sdNotify(state: string): boolean {
    this.notifications.push(state);
    return loadNative().sdNotify(state);
  }

  /** Redirections asked for (fd, target). Nothing of the kernel in it: the real addon's dup2 runs. */
  readonly stdioRedirects: Array<{ fd: number; target: 1 | 2 }> = [];
  redirectStdio(fd: number, target: 1 | 2): void {
    this.stdioRedirects.push({ fd, target });
    loadNative().redirectStdio(fd, target);
  }
}

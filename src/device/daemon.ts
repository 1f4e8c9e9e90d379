// One device's life inside the daemon process: validate and claim main and spare, check the spare region
// holds nothing a user may care about, create and start the native ublk device, publish it (registry file
// + control socket), serve control requests, and on shutdown stop the device, remove every trace of it and
// release the claims. A failure at any step before the device is live undoes the steps before it.
import { DmrError, errorCodeOf, kernelError, toDmrError } from '../errors.js';
import { refuseIfDeleting } from '../control/deleting.js';
import { deletingInUseWarning, ublkDeviceInUse } from './in-use.js';
import { isNativeError, UBLK_F_USER_RECOVERY, type DeviceInfo, type KernelDeviceInfo, type NativeAddon, type NativeDevice, type NativeEvent, type NativeScanReadResult } from '../native.js';
import type { Logger } from '../log.js';
import { ControlServer } from '../control/server.js';
import type { DeviceStatus, Handlers, ResultOf } from '../control/protocol.js';
import fs from 'node:fs';
import {
  entryState,
  occupied,
  processStartTime,
  readEntries,
  parseEntryFile,
  readEntryOf,
  removeEntry,
  writeEntry,
  type RegistryEntry,
  type Occupant,
  type RegistryEntryV2,
} from '../control/registry.js';
import { ensureRunDir, registryPath, relocationQueuePath, socketPath, stateDir } from '../paths.js';
import type { DeviceConfig } from './config.js';
import { IoErrorCounters, summarizeQueues } from './counters.js';
import { featureNames, hex } from './features.js';
import { planDevice, type DevicePlan } from './validate.js';
import { checkedSpare } from './precheck.js';
import { ClaimedSpareIo } from '../remap/io.js';
import { reapStale } from './reap.js';
import { mainIdentity } from './fingerprint.js';
import { RemapEngine } from './remap-engine.js';
import { remapHandlers, remapStatus } from './remap-control.js';
import { AutoRemapper } from './auto-remap.js';
import { BurstLog } from './burst-log.js';
import { DEFAULT_POLICY } from '../config/policy.js';
import { hasSupervisor } from '../supervisor/child-process.js';
import { Scanner } from '../scan/scanner.js';
import { serialScanReads } from '../scan/serial-scan-reads.js';
import { SlowBlockRule } from '../scan/slow-blocks.js';
import { UserSlowReads } from '../scan/user-slow-reads.js';
import { loadScan, saveScan, type SavedScan } from '../scan/scan-file.js';
import { DEFAULT_SCAN_SETTINGS, resolveScanSettings, type ScanSettings } from '../scan/settings.js';
import { resolveControlGroup } from '../config/control-group.js';
import { configPath, deviceKey, loadConfig, resolveAlertCommand, resolveHealthConfig, resolveScanConfig } from '../config/file.js';
import { DeviceHealth } from './device-health.js';
import { CommitEvents, DeviceEvents } from './device-events.js';
import { ScanEvents } from './scan-events.js';
import { DEFAULT_HEALTH_SETTINGS, resolveHealthSettings, type HealthSettings } from '../health/index.js';
import { scanHandlers } from '../scan/scan-control.js';
import { surfaceModel } from '../map/surface.js';
import { forgetUdevName, linkStableName, nameDir, tellUdev, unlinkStableName } from './stable-name.js';

/**
 * The exit code of a daemon that detached (Daemon.detach): its device is quiesced and its registry entry
 * kept, and a successor should take it over (`recover`). EX_TEMPFAIL of sysexits.h.
 */
export const RESTART_EXIT_CODE = 75;

/** How long recover retries a claim of main or spare that the dead daemon's process still holds. */
const CLAIM_RETRY_MS = 5000;

export interface DaemonDeps {
  native: NativeAddon;
  runDir: string;
  log: Logger;
  /** Where this daemon's log goes, for status output; null for stderr. */
  logFile: string | null;
  /** Directory for state kept across restarts (queued relocations); default stateDir(). */
  stateDir?: string;
  /** Directory of the stable names (/dev/dmremap/<name>, stable-name.ts); default nameDir(). */
  nameDir?: string;
}

export class Daemon {
  private readonly errors = new IoErrorCounters();
  private readonly startedAt = new Date();
  private device: NativeDevice | null = null;
  private server: ControlServer | null = null;
  /** The config's controlGroup as a gid (read at start and at recover), null without one. */
  private controlGid: number | null = null;
  private entry: RegistryEntry | null = null;
  private deviceInfo: DeviceInfo | null = null;
  private engine: RemapEngine | null = null;
  private auto: AutoRemapper | null = null;
  /** The background scan (issue 13); created once the device is live. */
  private scanner: Scanner | null = null;
  /** The health model's series and its judgement (issue 14); opened with the remap table. */
  private health: DeviceHealth | null = null;
  /** What happens to the device, for `watch` (device-events.ts). */
  private readonly events: DeviceEvents;
  /** The judge of users' reads slower than slow_io_ms (native's slow_io events); created with the scanner. */
  private userSlow: UserSlowReads | null = null;
  /** The scan's settings, read once before the device is made (its slow_io threshold is native's). */
  private scanSettingsNow: ScanSettings | null = null;
  /** Passed-through I/O errors (auto-remap off) are logged through this: no line per failed request in a burst. */
  private readonly burst: BurstLog;
  private stopping: Promise<number> | null = null;
  /** The device id this daemon took over (recover), or null for a device it created (start). */
  private recoverId: number | null = null;
  private resolveExited!: (code: number) => void;
  /** Resolves with the process exit code once the device is stopped and its files are removed. */
  readonly exited: Promise<number> = new Promise((r) => (this.resolveExited = r));

  private constructor(
    private readonly cfg: DeviceConfig,
    private readonly plan: DevicePlan,
    private readonly spareIo: ClaimedSpareIo,
    private readonly deps: DaemonDeps,
  ) {
    this.burst = new BurstLog(deps.log);
    this.events = new DeviceEvents({ device: () => this.deviceInfo?.blockPath ?? cfg.mainPath });
    this.burst.onNote = (n) => this.events.burst(n);
    const scanEvents = new ScanEvents({ bus: this.events, status: () => this.scanner?.status() ?? null });
    this.events.onListeners = (count) => scanEvents.listeners(count);
  }

  /**
   * Validates and claims the devices, checks the spare, starts the device and publishes it. Throws a
   * DmrError, leaving nothing behind (nothing written, the claims released), on failure.
   */
  static async start(cfg: DeviceConfig, deps: DaemonDeps): Promise<Daemon> {
    const { controlGid, runDirGid } = configuredControlGid(deps.log);
    ensureRunDir(deps.runDir, runDirGid);
    const entries = readEntries(deps.runDir);
    // Quiesced devices (daemon gone, kernel device waiting for `recover`) are kept, and their main and spare
    // stay taken; only entries with nothing to recover are cleaned up.
    for (const e of entries.gone) {
      const result = await reapStale(deps.native, deps.runDir, e, deps.log);
      // The device is gone: its stable name and udev's name file go with it, or the next device given its
      // number (unnamed, or named otherwise) would be reached through /dev/dmremap/<the old name>. A number
      // reused by a newer live daemon is that daemon's: its name file is its own.
      if (result !== 'reused') {
        if (e.name !== null) unlinkStableName(deps.nameDir ?? nameDir(), e.name, e.blockPath);
        forgetUdevName(deps.runDir, e.devId);
      }
    }
    const plan = planDevice(deps.native, cfg, occupied(entries));
    try {
      const spareIo = await checkedSpare(deps, cfg, plan);
      const daemon = new Daemon(cfg, plan, spareIo, deps);
      daemon.controlGid = controlGid;
      await daemon.bringUp();
      return daemon;
    } catch (e) {
      plan.held.release();
      throw toDmrError(e);
    }
  }

  /**
   * Takes over the quiesced device `devId` whose daemon died or detached (ublk user recovery), with the
   * parameters its registry entry saved: claims main and spare again (retrying while the dead process's fds
   * are released), opens the remap metadata on the spare (journal replay; never a format, never the
   * signature check of a new spare), publishes the table, recovers the kernel device (requests the dead
   * daemon held are reissued to this one) and publishes it again (registry entry with this pid, control
   * socket). Refuses, changing nothing, a device that is live (E_DEVICE_LIVE), not quiesced (E_NOT_QUIESCED),
   * unknown (E_NOT_FOUND) or whose saved state is invalid or does not match its devices (E_STATE).
   */
  static async recover(devId: number, deps: DaemonDeps): Promise<Daemon> {
    const { controlGid, runDirGid } = configuredControlGid(deps.log);
    ensureRunDir(deps.runDir, runDirGid);
    const entries = readEntries(deps.runDir);
    const entry = recoverableEntry(deps.runDir, devId);
    await checkKernelQuiesced(deps.native, entry);
    const cfg = recoveredConfig(entry);
    // An unreadable entry of another device does not stop this one coming back: its main and spare were
    // this device's already, and the exclusive claims keep anyone else off them.
    const readable = { ...entries, invalid: entries.invalid.filter((e) => e.main !== null && e.spare !== null) };
    const others = occupied(readable).filter((e) => e.devId !== devId);
    const plan = await claimRetrying(() => planDevice(deps.native, cfg, others));
    try {
      checkSameDevices(entry, plan);
      const spareIo = new ClaimedSpareIo(deps.native, plan.spare.fd, plan.spare.sizeBytes, plan.spare.path);
      const daemon = new Daemon(cfg, { ...plan, zeroCopy: entry.recovery.zeroCopy }, spareIo, deps);
      daemon.recoverId = devId;
      daemon.controlGid = controlGid;
      await daemon.bringUp();
      return daemon;
    } catch (e) {
      plan.held.release();
      throw toDmrError(e);
    }
  }

  /**
   * What `recover` without --foreground checks before it starts the daemon: the refusals of recover() that
   * need neither main, the spare nor the kernel's recovery (unknown, live, not quiesced, invalid state).
   */
  static async precheckRecover(devId: number, deps: Pick<DaemonDeps, 'native' | 'runDir'>): Promise<RegistryEntryV2> {
    const entry = recoverableEntry(deps.runDir, devId);
    await checkKernelQuiesced(deps.native, entry);
    return entry;
  }

  get info(): DeviceInfo {
    if (this.deviceInfo === null) throw new DmrError('E_INTERNAL', 'device is not started');
    return this.deviceInfo;
  }

  /** The UUID of the remap table this daemon opened on its spare (status's remap.pairId). */
  get pairId(): string {
    return this.liveEngine().store.pairId;
  }

  private async bringUp(): Promise<void> {
    const { log, native } = this.deps;
    const p = this.plan;
    // debug: a foreground daemon logs to stderr, where a failed start must leave only the one error line.
    log.debug(
      { main: p.main.path, spare: p.spare.path, sizeBytes: p.sizeBytes.toString(), blockSize: p.blockSize, queues: p.queues, depth: p.depth },
      'starting device',
    );
    // The remap metadata is opened before the device exists, and the table is published before it starts:
    // no I/O ever misses a remap.
    const id = mainIdentity(p.main.path, p.main.sizeBytes);
    log.debug({ fingerprintSource: id.source }, 'main identity');
    try {
      this.engine = await RemapEngine.open({
        spare: this.spareIo,
        main: id,
        blockSize: p.blockSize,
        deviceBytes: p.sizeBytes,
        spareOffset: this.cfg.spareOffset,
        spareSize: this.cfg.spareSize,
        forceFormat: this.recoverId === null && this.cfg.forceFormat === true,
        // A device brought up from its record (`up`) keeps its remaps on the spare: a blank disk in the
        // spare's place is refused, never formatted (that would drop every remap in silence).
        mustExist: this.recoverId !== null || this.cfg.requireTable === true,
        ...(this.recoverId === null && this.cfg.requireTable === true ? { noTableMessage: noRecordedTable(this.cfg) } : {}),
        log,
      });
    } catch (e) {
      const err = toDmrError(e);
      throw this.recoverId === null && this.cfg.requireTable === true ? recordedSpareRefusal(err, this.cfg) : err;
    }
    const engine = this.engine;
    const policy = { ...DEFAULT_POLICY, ...this.cfg.policy };
    log.debug({ report: engine.report, slots: engine.store.geometry.slotCount }, 'remap table loaded');
    const scanSettings = this.scanSettings();
    this.scanSettingsNow = scanSettings;
    try {
      this.device = new native.Device({
        mainPath: p.main.path,
        sparePath: p.spare.path,
        mainFd: p.main.fd,
        spareFd: p.spare.fd,
        queues: p.queues,
        depth: p.depth,
        blockSize: p.blockSize,
        sizeBytes: p.sizeBytes,
        maxIoBytes: p.maxIoBytes,
        discard: p.discard,
        zeroCopy: p.zeroCopy,
        spareDataOffset: engine.spareDataOffset,
        devId: this.recoverId ?? -1,
        parkFaults: policy.autoRemap,
        // Users' reads slower than slow_io_ms are reported (slow_io) and judged like the scan's (user-slow-reads.ts).
        slowIoUs: scanSettings.slowIoMs * 1000,
        onEvent: (ev) => this.onEvent(ev),
      });
      engine.attach(this.device);
      const queueFile = relocationQueuePath(this.deps.stateDir ?? stateDir(), engine.store.pairId);
      this.auto = new AutoRemapper(engine, this.device, policy, log, queueFile);
      this.openHealth(engine, this.auto);
      // A del that began while this successor claimed and loaded: it wins, the device is not taken over.
      if (this.recoverId !== null) refuseIfDeleting(this.deps.runDir, this.recoverId, `ublk device ${this.recoverId}`);
      this.deviceInfo = this.recoverId === null ? await this.device.start() : await this.device.recover();
      this.auto.restore();
    } catch (e) {
      await this.releaseDevice();
      await this.closeEngine();
      this.closeHealth(false);
      throw this.recoverId === null ? startError(e, p) : recoverError(e, this.recoverId);
    }
    const info = this.deviceInfo;
    const sock = socketPath(this.deps.runDir, info.devId);
    try {
      this.entry = {
        version: 2,
        devId: info.devId,
        name: this.cfg.name,
        pid: process.pid,
        pidStart: processStartTime(process.pid),
        blockPath: info.blockPath,
        charPath: info.charPath,
        socket: sock,
        logFile: this.deps.logFile,
        startedAt: this.startedAt.toISOString(),
        main: { path: p.main.path, identity: p.main.identity },
        spare: { path: p.spare.path, identity: p.spare.identity },
        recovery: {
          userRecovery: (info.flags & UBLK_F_USER_RECOVERY) !== 0n,
          blockSize: p.blockSize,
          queues: p.queues,
          depth: p.depth,
          maxIoBytes: p.maxIoBytes,
          buffers: this.cfg.buffers,
          zeroCopy: p.zeroCopy,
          sizeBytes: p.sizeBytes.toString(),
          spareOffset: this.cfg.spareOffset ?? null,
          spareSize: this.cfg.spareSize ?? null,
          policy,
          ...(this.cfg.policyGiven !== undefined ? { policyGiven: this.cfg.policyGiven } : {}),
        },
        quiesced: null,
      };
      const native = this.deps.native;
      const access = { peerCred: (fd: number) => native.peerCred(fd), ownUid: process.geteuid?.() ?? 0, controlGid: this.controlGid };
      this.server = new ControlServer({ socketPath: sock, handlers: this.handlers(), log, access, events: this.events, device: () => info.blockPath });
      await this.server.listen();
      // A del that began during the kernel recovery: the entry is not published again (del removed it or
      // will); the device is detached below, quiesced, and del deletes it.
      if (this.recoverId !== null) refuseIfDeleting(this.deps.runDir, info.devId, info.blockPath);
      writeEntry(this.deps.runDir, this.entry);
      this.linkName(info);
    } catch (e) {
      await this.server?.close();
      this.server = null;
      // A recovered device's entry is its saved state: it stays (with the dead daemon's pid).
      if (this.entry && this.recoverId === null) removeEntry(this.deps.runDir, this.entry.devId, process.pid);
      this.entry = null;
      await this.releaseDevice();
      await this.closeEngine();
      this.closeHealth(false);
      throw toDmrError(e);
    }
    log.info({ devId: info.devId, blockPath: info.blockPath, name: this.cfg.name, socket: sock, recovered: this.recoverId !== null }, 'device live');
    const h = this.health?.assess();
    if (h !== undefined) log.info({ state: h.state, score: h.score, since: new Date(h.since).toISOString() }, `health ${h.state} (score ${h.score})`);
    this.startScanner();
  }

  /**
   * The health model (issue 14): the pair's series from <state dir>/<pairId>.health (or a new one; one that
   * cannot be used is reported, never replaced), fed where each event is decided: the store's commits (new
   * bad blocks by origin, pending blocks, a spare sample), auto-remap (errors on main and the spare,
   * recovered reads), the two outage monitors (main not answering, or refusing writes: one outage while
   * either lasts), the scanner's slow reads (startScanner) and the data path's passed-through errors (onEvent).
   */
  private openHealth(engine: RemapEngine, auto: AutoRemapper): void {
    const health = DeviceHealth.open({
      dir: this.deps.stateDir ?? stateDir(),
      pairId: engine.store.pairId,
      log: this.deps.log,
      device: () => this.deviceInfo?.blockPath ?? this.cfg.mainPath,
      name: this.cfg.name,
      settings: this.healthSettings(),
      gauge: () => {
        const st = engine.store;
        return { used: st.geometry.slotCount - st.allocator.free, slots: st.geometry.slotCount, lost: st.table.counts().lost };
      },
      alertCommand: () => this.alertCommand(),
      table: () => engine.store.table.entries(),
    });
    this.health = health;
    const events = this.events;
    const commits = new CommitEvents(events, this.plan.blockSize / 512, engine.store.table.entries());
    engine.store.onCommitted = (ops) => {
      commits.committed(ops);
      health.tableCommitted(ops);
    };
    events.forwardHealth(health.events);
    auto.burst.onNote = (n) => events.burst(n);
    auto.health = health;
    auto.outage.onChange = (active) => {
      events.outage('read', active);
      if (!auto.writeOutage.active) health.outage(active);
    };
    auto.writeOutage.onChange = (active) => {
      events.outage('write', active);
      if (!auto.outage.active) health.outage(active);
    };
  }

  /** The health model's settings: the DeviceConfig's, else the config file's (device section, global keys, defaults), read at start. */
  private healthSettings(): HealthSettings {
    if (this.cfg.health !== undefined) return resolveHealthSettings(this.cfg.health);
    try {
      return resolveHealthConfig(loadConfig(configPath()).config, deviceKey(this.cfg.name, this.cfg.mainPath));
    } catch (e) {
      this.deps.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'the config file cannot be read: health is judged with its default settings');
      return { ...DEFAULT_HEALTH_SETTINGS };
    }
  }

  /** The alert command: the DeviceConfig's, else the config file's, read when an alert is due (a `config set` applies at once). */
  private alertCommand(): string | null {
    if (this.cfg.alertCommand !== undefined) return this.cfg.alertCommand;
    return resolveAlertCommand(loadConfig(configPath()).config, deviceKey(this.cfg.name, this.cfg.mainPath));
  }

  /** Stops the health timers; saves the series unless `save` is false (a start that failed leaves no file). */
  private closeHealth(save = true): void {
    const h = this.health;
    if (h === null) return;
    if (save) h.close();
    else h.discard();
  }

  private liveHealth(): DeviceHealth {
    if (this.health === null) throw new DmrError('E_INTERNAL', 'the health model is not running');
    return this.health;
  }

  /** The health command's result: the assessment, with the series day by day when asked. */
  private healthResult(view: ReturnType<DeviceHealth['assess']>, history: boolean): ResultOf<'health'> {
    const out: ResultOf<'health'> = { ...view, device: this.info.blockPath, name: this.cfg.name };
    if (history) {
      out.history = this.liveHealth().history().map((d) => ({ day: new Date(d.day).toISOString().slice(0, 10), counts: d.counts, spare: d.spare }));
    }
    return out;
  }

  /**
   * The background scan: its cursor from <state dir>/<pairId>.scan (a running scan resumes where it was, a
   * paused one stays paused, a finished one stays done); an unusable file is logged and the scan starts
   * over from a fresh cursor. Saved by the scanner every 5 s while running and at close.
   */
  private startScanner(): void {
    const engine = this.liveEngine();
    const device = this.device;
    const auto = this.auto;
    if (device === null || auto === null) return;
    const dir = this.deps.stateDir ?? stateDir();
    const pairId = engine.store.pairId;
    const deviceBytes = Number(this.plan.sizeBytes);
    let saved: SavedScan | null = null;
    try {
      saved = loadScan(dir, pairId, deviceBytes);
    } catch (e) {
      this.deps.log.warn({ err: e instanceof Error ? e.message : String(e), dir }, 'the saved scan cannot be used: the scan starts over');
    }
    const settings = this.scanSettingsNow ?? this.scanSettings();
    // The scan and the judge of users' slow reads share native's one scan read at a time, and the
    // slow-block rule: a block slow once in each reaches slow_threshold.
    const reads = serialScanReads(device);
    const sink = auto.scanSink();
    const slowRule = new SlowBlockRule({ slowThreshold: settings.slowThreshold, log: this.deps.log, relocate: (b, d) => sink.slowBlock(b, d) });
    let scanner: Scanner;
    try {
      this.userSlow = new UserSlowReads({ device: reads, blockSize: this.plan.blockSize, deviceBytes, slowIoMs: settings.slowIoMs, rule: slowRule, log: this.deps.log, onConfirmed: () => this.health?.record({ type: 'slow_io' }) });
      scanner = new Scanner({
        device: reads,
        blockSize: this.plan.blockSize,
        deviceBytes,
        settings,
        log: this.deps.log,
        sink,
        slowRule,
        onSlowIo: () => this.health?.record({ type: 'slow_io' }),
        saved,
        save: (s) => saveScan(dir, pairId, s),
      });
    } catch (e) {
      // The device serves without a scan rather than not at all.
      this.deps.log.error({ err: e instanceof Error ? e.message : String(e) }, 'the scanner cannot start: no background scan on this device');
      return;
    }
    this.scanner = scanner;
    if (saved !== null) this.deps.log.info({ state: saved.cursor.state, position: saved.cursor.position, pass: saved.cursor.pass }, 'scan cursor loaded');
    this.scanner.begin();
  }

  /**
   * The scan's settings: the DeviceConfig's when it has them, else the config file's (the device's section,
   * then the global keys, then the defaults), read now: at start and at recover. A config file that cannot
   * be used is logged and the defaults apply (the device still starts).
   */
  private scanSettings(): ScanSettings {
    if (this.cfg.scan !== undefined) return resolveScanSettings(this.cfg.scan);
    try {
      return resolveScanConfig(loadConfig(configPath()).config, deviceKey(this.cfg.name, this.cfg.mainPath));
    } catch (e) {
      this.deps.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'the config file cannot be read: the scan runs with its default settings');
      return { ...DEFAULT_SCAN_SETTINGS };
    }
  }

  private liveScanner(): Scanner {
    if (this.scanner === null) throw new DmrError('E_INTERNAL', 'the scanner is not running');
    return this.scanner;
  }

  /** Ends the scan loop after its read in flight and saves the cursor (shutdown, detach). */
  private async closeScanner(): Promise<void> {
    try {
      await this.userSlow?.close();
      await this.scanner?.close();
    } catch (e) {
      this.deps.log.error({ err: String(e) }, 'closing the scanner failed');
    }
  }

  private handlers(): Handlers {
    return {
      ping: () => 'pong',
      status: () => this.status(),
      ...remapHandlers(
        () => this.liveEngine(),
        () => this.status(),
        () => this.liveAuto(),
        {
          handlers: scanHandlers(() => this.liveScanner()),
          counters: () => {
            const s = this.liveScanner().stats();
            const u = this.userSlow?.stats() ?? { slowReads: 0, unjudged: 0 };
            return { ...s, slowIos: s.slowIos + u.slowReads, userSlowReads: u.slowReads, userSlowUnjudged: u.unjudged };
          },
        },
        () => this.liveHealth().assess().state,
      ),
      health: (req) => this.healthResult(this.liveHealth().assess(), req.history === true),
      health_reset: () => this.healthResult(this.liveHealth().reset(), false),
      ...scanHandlers(() => this.liveScanner()),
      scan_read: (req) => this.scanRead(req.offset, req.bytes, req.narrow === true),
      scan_map: () => this.scanMap(),
      shutdown: () => {
        // Answer first, then stop: the reply is written before the socket closes.
        setImmediate(() => void this.shutdown('shutdown requested over the control socket'));
        return { stopping: true };
      },
      restart: () => {
        // Without user recovery the kernel stops the device when its daemon leaves: refused, nothing changed.
        if ((this.info.flags & UBLK_F_USER_RECOVERY) === 0n) throw noRecoveryError(this.info.blockPath);
        // As shutdown: the reply is written first. The supervisor (if any) starts the successor.
        setImmediate(() => void this.detach('restart requested over the control socket'));
        return { restarting: true, supervised: hasSupervisor() };
      },
    };
  }

  private onEvent(ev: NativeEvent): void {
    const log = this.deps.log;
    switch (ev.type) {
      case 'queue_started':
        log.debug({ queue: ev.queue, tid: ev.tid }, 'queue started');
        break;
      case 'queue_stopped':
        if (this.stopping) {
          log.debug({ queue: ev.queue, reason: ev.reason }, 'queue stopped');
        } else {
          log.error({ queue: ev.queue, reason: ev.reason }, 'queue stopped unexpectedly; stopping the device');
          void this.shutdown(`queue ${ev.queue} stopped: ${ev.reason}`, 1);
        }
        break;
      case 'io_error':
        if (ev.op === 'discard') {
          // A discard main refused or failed: the request succeeded (a discard is a hint). Not an I/O
          // error of the user's, and no write error on main: counted apart.
          this.errors.recordDiscardRefused();
          this.burst.note(`discard:${ev.device}`, 'info', `discards refused by ${ev.device} (the requests succeeded)`, {
            blocks: [Number(ev.sector)],
            count: ev.sectors,
            fields: { op: ev.op, device: ev.device, errno: ev.errno },
            unit: 'sectors',
          });
          break;
        }
        this.errors.record(ev);
        this.engine?.recordIoError(ev);
        // Passed through (auto-remap off: native does not park it, auto-remap never sees it): the health model counts it here.
        if (ev.device === 'spare') this.health?.record({ type: 'spare_error', op: ev.op === 'read' ? 'read' : 'write' });
        else this.health?.record({ type: ev.op === 'read' ? 'read_error' : 'write_error' });
        this.burst.note(`${ev.op}:${ev.device}`, 'warn', `backing ${ev.op} errors on ${ev.device} (passed to the user)`, {
          blocks: [Number(ev.sector)],
          count: ev.sectors,
          fields: { op: ev.op, device: ev.device, errno: ev.errno },
          unit: 'sectors',
        });
        break;
      case 'slow_io':
        this.userSlow?.suspect(ev);
        break;
      case 'io_fault':
      case 'fault_cleared':
        if (this.auto) this.auto.handle(ev);
        else if (ev.type === 'io_fault') this.device?.resolveFault(ev.queue, ev.tag, ev.seq, { action: 'fail', errno: 5 });
        break;
    }
  }

  status(): DeviceStatus {
    const info = this.info;
    const health = this.liveHealth().assess();
    const p = this.plan;
    const stats = this.device?.stats() ?? [];
    const backing = (b: DevicePlan['main']): DeviceStatus['main'] => ({
      path: b.path,
      sizeBytes: Number(b.sizeBytes),
      logicalBlockSize: b.logicalBlockSize,
      isBlockDevice: b.isBlockDevice,
      rotational: b.rotational,
    });
    return {
      devId: info.devId,
      name: this.cfg.name,
      pid: process.pid,
      blockPath: info.blockPath,
      charPath: info.charPath,
      state: this.stopping ? 'stopping' : (this.device?.info().state ?? info.state),
      main: backing(p.main),
      spare: backing(p.spare),
      sizeBytes: Number(p.sizeBytes),
      blockSize: p.blockSize,
      queues: info.queues,
      depth: info.depth,
      maxIoBytes: p.maxIoBytes,
      discard: p.discard,
      startedAt: this.startedAt.toISOString(),
      uptimeSeconds: Math.floor((Date.now() - this.startedAt.getTime()) / 1000),
      ...summarizeQueues(stats),
      ioErrors: this.errors.snapshot(),
      kernel: {
        features: hex(p.probe.features),
        featureNames: featureNames(p.probe.features),
        featuresKnown: p.probe.featuresKnown,
        opcodeEncoding: p.probe.opcodeEncoding,
        deviceFlags: hex(info.flags),
        deviceFlagNames: featureNames(info.flags),
        fixedBuffers: info.fixedBuffers,
        zeroCopy: info.zeroCopy,
      },
      logFile: this.deps.logFile,
      health,
      remap: remapStatus(this.liveEngine(), health.state, this.scanner?.status().progress ?? 0),
    };
  }

  /**
   * scan_map: the surface map's data: the scanner's region record (every region unread when the device has
   * no scanner) with each region's pending, remapped and relocated blocks counted from the table now.
   */
  private scanMap(): ResultOf<'scan_map'> {
    return surfaceModel({
      device: this.info.blockPath,
      name: this.cfg.name,
      deviceBytes: Number(this.plan.sizeBytes),
      blockSize: this.plan.blockSize,
      regions: this.scanner?.regions ?? null,
      scan: this.scanner?.status() ?? null,
      entries: this.liveEngine().store.table.entries(),
      now: Date.now(),
    });
  }

  /** The scan_read debug command: one native scanRead of whole blocks inside the device (E_OUT_OF_RANGE otherwise). */
  private async scanRead(offset: number, bytes: number, narrow: boolean): Promise<ResultOf<'scan_read'>> {
    const bs = this.plan.blockSize;
    const size = Number(this.plan.sizeBytes);
    if (offset % bs !== 0 || bytes % bs !== 0 || offset + bytes > size) {
      throw new DmrError('E_OUT_OF_RANGE', `scan_read: offset ${offset} and ${bytes} bytes must be whole ${bs}-byte blocks inside the device (${size} bytes)`);
    }
    if (this.device === null) throw new DmrError('E_DAEMON', 'scan_read: the device is not running');
    let r: NativeScanReadResult;
    try {
      r = await this.device.scanRead(BigInt(offset), bytes, narrow);
    } catch (e) {
      const code = errorCodeOf(e);
      if (code === 'EBUSY') throw new DmrError('E_SCAN_STATE', 'scan_read: another scan read of this device is running (EBUSY: one at a time per device, the background scan included)', { cause: e });
      if (code === 'ENODEV') throw new DmrError('E_DAEMON', 'scan_read: the device stopped while it was read', { cause: e });
      throw e;
    }
    return { offset: Number(r.offset), bytes: r.bytes, segments: r.segments, coveredBytes: r.coveredBytes, stopped: r.stopped, generation: r.generation };
  }

  private liveAuto(): AutoRemapper {
    if (this.auto === null) throw new DmrError('E_INTERNAL', 'auto-remap is not running');
    return this.auto;
  }

  private liveEngine(): RemapEngine {
    if (this.engine === null) throw new DmrError('E_INTERNAL', 'the remap engine is not open');
    return this.engine;
  }

  /** Persists the counters and closes the spare's metadata (after the device stopped). */
  private async closeEngine(): Promise<void> {
    const e = this.engine;
    this.engine = null;
    if (e === null) return;
    try {
      await e.close();
    } catch (err) {
      this.deps.log.error({ err: String(err) }, 'closing the remap store failed');
    }
  }

  /**
   * A stop request ends the device even when its block device is in use (mounted, held, swap: `del` and
   * `down` refuse that without --force, but SIGTERM, `systemctl stop` and `shutdown` are obeyed): one warning
   * naming its users. Never throws: nothing here may hold up the shutdown.
   */
  private warnIfInUse(): void {
    const info = this.deviceInfo;
    if (info === null) return;
    try {
      const use = ublkDeviceInUse(info.devId);
      if (use !== null) this.deps.log.warn({ device: info.blockPath, [use.kind]: use.where, partition: use.partition }, deletingInUseWarning(info.blockPath, use));
    } catch (err) {
      this.deps.log.warn({ err: String(err) }, 'cannot tell whether the device is in use');
    }
  }

  /** Stops the device, closes the socket, removes the registry entry. Idempotent; resolves with the exit code. */
  shutdown(reason: string, exitCode = 0): Promise<number> {
    if (this.stopping) return this.stopping;
    let begin!: () => void;
    const begun = new Promise<void>((r) => (begin = r));
    this.stopping = (async () => {
      await begun; // this.stopping is set before anything (an event fired by stop()) can look at it
      const log = this.deps.log;
      log.info({ reason }, 'stopping device');
      this.warnIfInUse();
      // Queued auto-remap work is dropped (its requests fail when the device stops; queued relocations are
      // saved first, synchronously); a move in progress finishes first: the device never stops with a
      // block parked as MOVING. Meanwhile the scan's read in flight ends (what it found is left undecided
      // and read again next time) and its cursor is saved (a running scan resumes next time).
      const autoClosed = this.auto?.close();
      await this.closeScanner();
      await autoClosed;
      await this.engine?.quiesce();
      const stopped = await this.stopDevice();
      this.burst.flush();
      await this.server?.close();
      await this.closeEngine();
      // Every commit is done: the series has all of this run's events.
      this.closeHealth();
      // Nothing uses main or the spare any more (the native device closed its dups when it stopped).
      this.plan.held.release();
      if (this.entry) removeEntry(this.deps.runDir, this.entry.devId, process.pid);
      // The device is deleted: its stable name goes with it (a device that failed to stop keeps it).
      if (stopped && this.cfg.name !== null && this.deviceInfo !== null) {
        unlinkStableName(this.deps.nameDir ?? nameDir(), this.cfg.name, this.deviceInfo.blockPath);
        forgetUdevName(this.deps.runDir, this.deviceInfo.devId);
      }
      const code = stopped ? exitCode : 1;
      log.info({ exitCode: code }, 'device stopped');
      this.resolveExited(code);
      return code;
    })();
    begin();
    return this.stopping;
  }

  /**
   * Leaves the device to a successor instead of stopping it (an in-place restart): stops taking control
   * requests, finishes a relocation in progress and saves the queued ones, lets backing I/O in flight
   * complete (every other request is reissued by the kernel to the successor), flushes the remap metadata,
   * closes the ublk char device without deleting the device (the kernel quiesces it: its users wait) and
   * releases main and spare. The registry entry stays, marked quiesced with `reason`: it is the state
   * `recover` takes over. Resolves (and `exited` resolves) with RESTART_EXIT_CODE, or 1 if the native
   * detach failed. Idempotent with shutdown: whichever comes first wins.
   */
  detach(reason: string): Promise<number> {
    if (this.stopping) return this.stopping;
    let begin!: () => void;
    const begun = new Promise<void>((r) => (begin = r));
    this.stopping = (async () => {
      await begun;
      const log = this.deps.log;
      log.info({ reason }, 'detaching: the device stays quiesced for a successor');
      const detached = await this.leaveDevice();
      this.burst.flush();
      await this.closeEngine();
      this.closeHealth();
      this.plan.held.release();
      if (this.entry !== null && this.entry.version === 2) {
        this.entry = { ...this.entry, quiesced: { since: new Date().toISOString(), reason } };
        try {
          writeEntry(this.deps.runDir, this.entry);
        } catch (e) {
          log.error({ err: String(e) }, 'cannot mark the registry entry quiesced');
        }
      }
      const code = detached ? RESTART_EXIT_CODE : 1;
      log.info({ exitCode: code }, 'device detached');
      this.resolveExited(code);
      return code;
    })();
    begin();
    return this.stopping;
  }

  /**
   * Leaves the device quiesced for the next daemon, holding back every request it has not answered (detach,
   * and a recover that fails after the kernel's recovery). First, before anything awaits: auto-remap resolves
   * no held request from now on (the jobs it drops and the faults still arriving would otherwise fail with
   * EIO while the queues still complete requests); native leaves them uncommitted at detach and the kernel
   * reissues them to the next daemon. A batch running now (a relocation, a redirect commit) finishes; queued
   * relocations are saved. Then the control socket closes, the engine takes no more remap requests, and
   * native detaches. False if the native detach failed (logged).
   */
  private async leaveDevice(): Promise<boolean> {
    const autoClosed = this.auto?.close({ leaveHeld: true });
    await this.server?.close();
    await this.closeScanner();
    await autoClosed;
    await this.engine?.quiesce();
    try {
      await this.device?.detach();
      return true;
    } catch (e) {
      this.deps.log.error({ err: kernelError(e, 'detach').message }, 'detaching the ublk device failed');
      return false;
    }
  }

  /**
   * After a failed start: stops (deletes) a device this daemon created; leaves one it recovered quiesced
   * for the next daemon as a detach does (leaveDevice: no request it holds is failed).
   */
  private async releaseDevice(): Promise<void> {
    if (this.recoverId === null || this.device === null) {
      await this.stopDevice();
      return;
    }
    await this.leaveDevice();
  }

  /** Stops the native device if there is one; false if stopping failed (logged). */
  /**
   * Points /dev/dmremap/<name> at the device (stable-name.ts), before the device is announced live. A new
   * device whose name is held by another of ours (or by a file that is not a link) is refused and undone
   * (E_LINK); a recovered one is served anyway (its users wait for it) and the refusal is logged.
   */
  private linkName(info: DeviceInfo): void {
    const name = this.cfg.name;
    if (name === null) return;
    const others = (target: string): boolean => {
      const { live, quiesced } = readEntries(this.deps.runDir);
      return [...live, ...quiesced].some((e) => e.devId !== info.devId && e.blockPath === target);
    };
    try {
      const link = linkStableName(this.deps.nameDir ?? nameDir(), name, info.blockPath, others);
      this.deps.log.info({ link, blockPath: info.blockPath }, 'stable name linked');
      const udev = tellUdev(this.deps.runDir, info.devId, name, info.blockPath);
      if (udev !== null) this.deps.log.warn({ err: udev }, 'udev not told the stable name');
    } catch (e) {
      if (this.recoverId === null) throw e;
      this.deps.log.error({ err: toDmrError(e).message }, 'stable name not linked');
    }
  }

  private async stopDevice(): Promise<boolean> {
    if (this.device === null) return true;
    try {
      await this.device.stop();
      return true;
    } catch (e) {
      this.deps.log.error({ err: kernelError(e, 'stop').message }, 'stopping the ublk device failed');
      return false;
    }
  }
}

/** The refusal of `restart` for a device created without ublk user recovery (daemon and CLI say the same). */
export function noRecoveryError(blockPath: string): DmrError {
  return new DmrError(
    'E_NO_RECOVERY',
    `${blockPath} was created without ublk user recovery (the kernel offered none): a restart would stop it; nothing was changed`,
  );
}

/** The registry entry of `devId` if it can be recovered; a typed refusal otherwise. */
function recoverableEntry(dir: string, devId: number): RegistryEntryV2 {
  const file = registryPath(dir, devId);
  if (!fs.existsSync(file)) throw new DmrError('E_NOT_FOUND', `no dmremap-ublk device ${devId} (no state file ${file})`);
  const parsed = parseEntryFile(file);
  if (parsed === null) throw new DmrError('E_NOT_FOUND', `no dmremap-ublk device ${devId} (no state file ${file})`);
  if ('invalid' in parsed) throw new DmrError('E_STATE', `the state file ${file} of device ${devId} is not valid (${parsed.invalid.reason})`);
  const { entry } = parsed;
  const state = entryState(entry);
  if (state === 'live') throw new DmrError('E_DEVICE_LIVE', `${entry.blockPath} is live (daemon pid ${entry.pid}): nothing to recover`);
  if (entry.version !== 2) throw new DmrError('E_STATE', `the state file ${file} was written by a version without recovery (version 1)`);
  if (!entry.recovery.userRecovery) {
    throw new DmrError('E_NOT_QUIESCED', `${entry.blockPath} was created without ublk user recovery (the kernel offered none): it cannot outlive its daemon`);
  }
  if (state !== 'quiesced') throw new DmrError('E_NOT_QUIESCED', `${entry.blockPath} is gone: its kernel device no longer exists`);
  refuseIfDeleting(dir, devId, entry.blockPath);
  return entry;
}

/** Refuses a kernel device that is gone, stopped, or served by a live process. */
async function checkKernelQuiesced(native: NativeAddon, entry: RegistryEntryV2): Promise<void> {
  let k: KernelDeviceInfo;
  try {
    k = await native.kernelDeviceInfo(entry.devId);
  } catch (e) {
    if (isNativeError(e) && e.code === 'ENODEV') throw new DmrError('E_NOT_QUIESCED', `${entry.blockPath} is gone: its kernel device no longer exists`);
    throw kernelError(e, `cannot query ublk device ${entry.devId}`);
  }
  if (k.state === 'dead' || k.state === 'fail_io') throw new DmrError('E_NOT_QUIESCED', `${entry.blockPath} is not quiesced (kernel state ${k.state}): it cannot be recovered; del removes it`);
  if (k.state === 'live' && k.pid > 0 && k.pid !== entry.pid && pidRunning(k.pid)) {
    throw new DmrError('E_DEVICE_LIVE', `${entry.blockPath} is live: served by pid ${k.pid}`);
  }
}

function pidRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errorCodeOf(e) === 'EPERM';
  }
}

/** Why a recorded device's blank spare is refused (--require-table, as `up` starts it). */
function noRecordedTable(cfg: DeviceConfig): string {
  const who = cfg.name !== null ? `device ${cfg.name}` : `main ${cfg.mainPath}`;
  return `the spare ${cfg.sparePath} holds no remap table, but ${who} keeps its remaps there (its record): not formatted; if a new spare is meant, "dmremap-ublk add" it by hand`;
}

/**
 * A refusal of a recorded device's spare (`up`) says what to check, never --force-format: the record names
 * this main and this spare, so a spare holding another main's table means the record's disks are not the
 * disks at its paths (or the spare was taken over since), and formatting it would drop that main's remaps.
 */
function recordedSpareRefusal(err: DmrError, cfg: DeviceConfig): DmrError {
  const who = cfg.name !== null ? `device ${cfg.name}` : `main ${cfg.mainPath}`;
  const check = `check the record's disks (${who}: main ${cfg.mainPath}, spare ${cfg.sparePath}); not formatted`;
  if (err.code === 'E_SPARE_FOREIGN') {
    const detail = /\((formatted for [^)]*)\)/.exec(err.message)?.[1];
    return new DmrError('E_SPARE_FOREIGN', `the spare ${cfg.sparePath} holds another main's remap table${detail !== undefined ? ` (${detail})` : ''}: ${check}`);
  }
  if (!err.message.includes('--force-format')) return err;
  const bare = err.message.replace(/;? ?\(?use --force-format[^)]*\)?/, '');
  return new DmrError(err.code, `${bare}: ${check}`);
}

/** The configuration the device ran with, from its saved state. */
function recoveredConfig(e: RegistryEntryV2): DeviceConfig {
  const r = e.recovery;
  return {
    mainPath: e.main.path,
    sparePath: e.spare.path,
    name: e.name,
    queues: r.queues,
    depth: r.depth,
    blockSize: r.blockSize,
    maxIoBytes: r.maxIoBytes,
    buffers: r.buffers,
    ...(r.spareOffset !== null ? { spareOffset: r.spareOffset } : {}),
    ...(r.spareSize !== null ? { spareSize: r.spareSize } : {}),
    forceFormat: false,
    policy: r.policy,
    ...(r.policyGiven !== undefined ? { policyGiven: r.policyGiven } : {}),
  };
}

/** planDevice, retried for a while when main or the spare is still held (the dead process is being torn down). */
async function claimRetrying(plan: () => DevicePlan): Promise<DevicePlan> {
  const deadline = Date.now() + CLAIM_RETRY_MS;
  for (;;) {
    try {
      return plan();
    } catch (e) {
      if (!(e instanceof DmrError && e.code === 'E_DEVICE_BUSY')) throw e;
      if (Date.now() > deadline) throw predecessorBusy(e);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A claim still refused when the retries end: an exclusive open that failed with EBUSY and nothing else
 * explains (not mounted, no holder, not swap) is the dead daemon's io_uring still holding the device until
 * a backing I/O in flight ends (a failing disk's timeouts take 30 s and more): E_PREDECESSOR_BUSY, which
 * the supervisor retries. A device in use for a reason we can name stays E_DEVICE_BUSY.
 */
function predecessorBusy(e: DmrError): DmrError {
  if (errorCodeOf(e.cause) !== 'EBUSY') return e;
  return new DmrError('E_PREDECESSOR_BUSY', `${e.message.replace(/ is in use \(mounted, or held by another program\)$/, '')} is still held after ${CLAIM_RETRY_MS / 1000} s (by the dead daemon's process, while a backing I/O it started ends?); try again later`, { cause: e });
}

/** Refuses paths that now name other devices than the ones the device was added with, or a main of another size. */
function checkSameDevices(e: RegistryEntryV2, plan: DevicePlan): void {
  for (const [role, saved, now] of [['main', e.main, plan.main], ['spare', e.spare, plan.spare]] as const) {
    if (saved.identity !== now.identity) {
      throw new DmrError('E_STATE', `${role} device ${saved.path} is not the device ${e.blockPath} was added with (${saved.identity}, now ${now.identity})`);
    }
  }
  if (plan.sizeBytes.toString() !== e.recovery.sizeBytes) {
    throw new DmrError('E_STATE', `main device ${e.main.path} now gives ${plan.sizeBytes} bytes, ${e.blockPath} has ${e.recovery.sizeBytes}`);
  }
}

/** A refusal of the kernel's recovery as a typed error: nothing was changed (the device stays quiesced). */
function recoverError(e: unknown, devId: number): DmrError {
  if (e instanceof DmrError) return e;
  const what = `ublk device ${devId}`;
  switch (errorCodeOf(e)) {
    case 'EOPNOTSUPP':
      return new DmrError('E_NOT_QUIESCED', `${what} cannot be recovered: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    case 'EINVAL':
      if (isNativeError(e) && e.command === 'START_USER_RECOVERY') {
        return new DmrError(
          'E_RECOVERY_STUCK',
          `${what} cannot be recovered: the kernel refuses START_USER_RECOVERY (EINVAL), an earlier recovery was cut short after it started; ` +
            `the device stays quiesced (its I/O waits). Run \`dmremap-ublk del ${devId}\` (waiting I/O fails), then add it again: the remaps stay on the spare`,
          { cause: e },
        );
      }
      return new DmrError('E_STATE', `${what} does not match its saved state: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    case 'EBUSY':
      // The kernel answers EBUSY until the dead daemon's /dev/ublkcN is released: temporary.
      return new DmrError('E_PREDECESSOR_BUSY', `${what} was not quiesced within 5 s (its dead daemon's process still holds /dev/ublkc${devId}); try again later`, { cause: e });
    case 'ENODEV':
      return new DmrError('E_NOT_QUIESCED', `${what} is gone: its kernel device no longer exists`, { cause: e });
    default:
      return kernelError(e, `cannot recover ${what}`);
  }
}

function startError(e: unknown, p: DevicePlan): DmrError {
  if (e instanceof DmrError) return e;
  if (errorCodeOf(e) === 'EBUSY') {
    const msg = e instanceof Error ? e.message : '';
    const which = msg.includes(p.spare.path) && !msg.includes(p.main.path)
      ? `spare device ${p.spare.path} is`
      : msg.includes(p.main.path)
        ? `main device ${p.main.path} is`
        : `main ${p.main.path} or spare ${p.spare.path} is`;
    return new DmrError('E_DEVICE_BUSY', `${which} in use (mounted, or held by another program)`, { cause: e });
  }
  return kernelError(e, 'cannot start the ublk device');
}

/**
 * The config file's controlGroup as a gid for this daemon's socket (null without one), and what the run
 * directory is set to (ensureRunDir). A file that cannot be used at all (the device still starts, as with
 * the scan's settings) gives no group: only root gets in, the stricter side. A group name that does not
 * resolve now (no such group, or getent failing: NSS or LDAP down) is no reason to keep a device down
 * (`recover` of a crashed daemon holds user I/O until it succeeds): a warning, this socket root-only, and
 * the run directory left as it is (a lookup that failed says nothing about what the other devices' daemons
 * serve). `config set` still refuses such a name (E_CONFIG).
 */
function configuredControlGid(log: Logger): { controlGid: number | null; runDirGid: number | null | undefined } {
  let loaded: ReturnType<typeof loadConfig>;
  try {
    loaded = loadConfig(configPath());
  } catch (e) {
    log.warn({ err: e instanceof Error ? e.message : String(e) }, 'the config file cannot be read: no control group (root only)');
    return { controlGid: null, runDirGid: null };
  }
  try {
    const gid = resolveControlGroup(loaded.config.controlGroup, loaded.file);
    return { controlGid: gid, runDirGid: gid };
  } catch (e) {
    log.warn({ err: e instanceof Error ? e.message : String(e) }, 'the control group does not resolve now: this control socket is root only');
    return { controlGid: null, runDirGid: undefined };
  }
}

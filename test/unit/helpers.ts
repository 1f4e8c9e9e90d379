// Shared fixtures for unit tests: a temporary world (run dir, fake device-node dir, backing files), a CLI
// context that captures output, and the built CLI run as a child process with the fake addon.
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FakeNative, type FakeConfig } from '../../src/testing/fake-native.js';
import { createLogger, type Logger } from '../../src/log.js';
import type { AccessPolicy } from '../../src/control/access.js';
import type { CliContext } from '../../src/cli/context.js';
import type { DeviceConfig } from '../../src/device/config.js';
import { readEntries } from '../../src/control/registry.js';
import { supervisorOf } from '../../src/supervisor/find.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(REPO, 'bin/dmremap-ublk.js');

export interface World {
  root: string;
  runDir: string;
  /** Where detached daemons log (DMREMAP_LOG_DIR of the CLI the tests run). */
  logDir: string;
  devDir: string;
  /** Where daemons link their stable names (/dev/dmremap in production). */
  nameDir: string;
  /** Where device records go (/etc/dmremap-ublk/devices.d in production). */
  devicesDir: string;
  /** The fake /dev/disk (by-id, by-path, ... links); empty unless a test fills it. */
  diskDir: string;
  main: string;
  spare: string;
  /** Creates a file of `bytes` bytes under the world's root and returns its path. */
  file(name: string, bytes: number): string;
  /** Names of entries in the run dir (empty if it does not exist). */
  runDirEntries(): string[];
  /** Fake device nodes currently present. */
  devNodes(): string[];
  cleanup(): void;
}

/** SIGKILLs every daemon `w`'s registry lists as live, and its supervisor (a test's clean-up). */
export function killDaemons(w: World): void {
  for (const e of readEntries(w.runDir).live) {
    for (const pid of [supervisorOf(e.pid), e.pid]) {
      try {
        if (pid !== null) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

export function makeWorld(): World {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-test-'));
  const devDir = path.join(root, 'dev');
  fs.mkdirSync(devDir);
  const file = (name: string, bytes: number): string => {
    const p = path.join(root, name);
    fs.writeFileSync(p, '');
    fs.truncateSync(p, bytes);
    return p;
  };
  const list = (d: string): string[] => (fs.existsSync(d) ? fs.readdirSync(d).sort() : []);
  return {
    root,
    runDir: path.join(root, 'run'),
    logDir: path.join(root, 'log'),
    devDir,
    nameDir: path.join(root, 'dmremap'),
    devicesDir: path.join(root, 'devices.d'),
    diskDir: path.join(root, 'disk'),
    main: file('main.img', 8 << 20),
    spare: file('spare.img', 4 << 20),
    file,
    runDirEntries: () => list(path.join(root, 'run')),
    devNodes: () => list(devDir),
    cleanup: () => fs.rmSync(root, { recursive: true, force: true }),
  };
}

export function fakeFor(w: World, cfg: Partial<FakeConfig> = {}): FakeNative {
  return new FakeNative({ devDir: w.devDir, ...cfg });
}

export const quietLog = (): Logger => createLogger({ level: 'silent' });

/**
 * A control server's access policy for tests: peers' credentials from a fake addon (this process's own
 * unless `fake.peer` says otherwise), the daemon's uid this process's, and `controlGid` (default none).
 */
export function testAccess(controlGid: number | null = null, fake: FakeNative = new FakeNative({ devDir: os.tmpdir() })): AccessPolicy {
  return { peerCred: (fd) => fake.peerCred(fd), ownUid: process.geteuid?.() ?? 0, controlGid };
}

/** What a kernel with user recovery offers: CMD_IOCTL_ENCODE | USER_COPY | USER_RECOVERY | USER_RECOVERY_REISSUE. */
export const RECOVERY_FEATURES = '0xd8';

/** A pid above the kernel's default pid_max: no process has it (a daemon that died). */
export const DEAD_PID = 2 ** 22 + 4321;

export interface Captured {
  ctx: CliContext;
  stdout: () => string;
  stderr: () => string;
}

export function captureCtx(w: World, native: FakeNative): Captured {
  let out = '';
  let err = '';
  return {
    ctx: {
      env: { DMREMAP_RUN_DIR: w.runDir, DMREMAP_LOG_DIR: path.join(w.root, 'log'), DMREMAP_NAME_DIR: w.nameDir, DMREMAP_DEVICES_DIR: w.devicesDir, DMREMAP_DISK_DIR: w.diskDir },
      stdout: { write: (s: string) => (out += s) },
      stderr: { write: (s: string) => (err += s) },
      stderrIsTTY: false,
      loadNative: async () => native,
    },
    stdout: () => out,
    stderr: () => err,
  };
}

export function cliEnv(w: World, fake: Partial<FakeConfig>): NodeJS.ProcessEnv {
  return {
    ...process.env,
    VITEST: 'true',
    DMREMAP_RUN_DIR: w.runDir,
    DMREMAP_LOG_DIR: path.join(w.root, 'log'),
    DMREMAP_NAME_DIR: w.nameDir,
    DMREMAP_DEVICES_DIR: w.devicesDir,
    DMREMAP_DISK_DIR: w.diskDir,
    DMREMAP_FAKE_NATIVE: JSON.stringify({ devDir: w.devDir, ...fake }),
  };
}

/** Runs the built CLI to completion with the fake addon. */
export function cli(w: World, args: string[], fake: Partial<FakeConfig> = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [BIN, ...args], { env: cliEnv(w, fake), encoding: 'utf8', timeout: 30_000 });
}

/** Starts the built CLI without waiting (for `add --foreground`). */
export function cliSpawn(w: World, args: string[], fake: Partial<FakeConfig> = {}) {
  return spawn(process.execPath, [BIN, ...args], { env: cliEnv(w, fake), stdio: ['ignore', 'pipe', 'pipe'] });
}

export async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The DeviceConfig the daemon tests start with: the world's main and spare, one queue, named "data". */
export function deviceConfig(w: World, over: Partial<DeviceConfig> = {}): DeviceConfig {
  return {
    mainPath: w.main,
    sparePath: w.spare,
    name: 'data',
    queues: 1,
    depth: 64,
    blockSize: undefined,
    maxIoBytes: 256 << 10,
    buffers: 'auto',
    ...over,
  };
}

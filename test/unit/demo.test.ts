// `dmremap-ublk demo` (src/demo/demo.ts, src/cli/demo.ts) with its tools replaced: the steps it prints, the
// check of the data read back, and the clean-up of everything it made, in reverse order, after success, a
// failed step, a wrong read-back and Ctrl-C. The real thing runs in the VM (test/e2e/lifecycle.test.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEMO_LAYOUT, dmTable, parseLosetupJ, parseSha256sum, runDemo, type DemoIo, type RunResult } from '../../src/demo/demo.js';
import { shellQuote } from '../../src/demo/shell-quote.js';
import { demoPlace, IN_VM_ENV, missingPrerequisites } from '../../src/cli/demo.js';

const ok = (stdout = ''): RunResult => ({ status: 0, stdout, stderr: '' });

/** A fake host: records every command; `fail` and `readBackSum` and `onCommand` change what happens. */
function fakeIo(opts: { fail?: string; readBackSum?: string; onCommand?: (line: string) => void } = {}) {
  const log: string[] = [];
  const live = new Set<string>();
  /** Attached loop devices and their files (what `losetup -j` answers from). */
  const attached = new Map<string, string>();
  let loops = 0;
  const io: DemoIo = {
    exec: async (cmd, args) => {
      const line = shellQuote([cmd, ...args]);
      log.push(line);
      opts.onCommand?.(line);
      if (opts.fail !== undefined && line.startsWith(opts.fail)) return { status: 1, stdout: '', stderr: `${cmd}: it broke\n` };
      if (cmd === 'losetup' && args[0] === '--find') {
        const dev = `/dev/loop${loops++}`;
        live.add(dev);
        attached.set(dev, args[2] as string);
        return ok(`${dev}\n`);
      }
      if (cmd === 'losetup' && args[0] === '-j') {
        return ok([...attached].filter(([, f]) => f === args[1]).map(([d, f]) => `${d}: [2049]:12 (${f})\n`).join(''));
      }
      if (cmd === 'losetup' && args[0] === '-d') {
        live.delete(args[1] as string);
        attached.delete(args[1] as string);
      }
      if (cmd === 'dmsetup' && args[0] === 'info') return live.has(`dm:${args[1]}`) ? ok(`Name: ${args[1]}\n`) : { status: 1, stdout: '', stderr: 'Device does not exist.\n' };
      if (cmd === 'dmsetup' && args[0] === 'create') live.add(`dm:${args[1]}`);
      if (cmd === 'dmsetup' && args[0] === 'remove') live.delete(`dm:${args[2]}`);
      if (cmd === 'sha256sum') return ok(`aaaa  ${args[0]}\n${opts.readBackSum ?? 'aaaa'}  ${args[1]}\n`);
      return ok();
    },
    cli: async (args, signal) => {
      const line = shellQuote(['dmremap-ublk', ...args]);
      log.push(line);
      opts.onCommand?.(line);
      if (opts.fail !== undefined && line.startsWith(opts.fail)) return { status: 1, stdout: '', stderr: 'dmremap-ublk: it broke\n' };
      if (args[0] === 'add') {
        live.add('ublk');
        return ok('/dev/ublkb7\n');
      }
      if (args[0] === 'del') live.delete('ublk');
      if (args[0] === 'watch') {
        await new Promise<void>((r) => (signal?.aborted ? r() : signal?.addEventListener('abort', () => r())));
        return ok('12:00 scan idle -> running\n');
      }
      return ok(`${args[0]} output\n`);
    },
    makeTempDir: () => {
      const d = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-demo-test-'));
      live.add(d);
      return d;
    },
    writeFile: (f, t) => fs.writeFileSync(f, t),
    removeDir: (d) => {
      fs.rmSync(d, { recursive: true, force: true });
      live.delete(d);
    },
    sleep: async () => {},
  };
  return { io, log, live };
}

function run(io: DemoIo, signal = new AbortController().signal) {
  let out = '';
  return runDemo(io, { out: { write: (s: string) => (out += s) }, signal, tag: '42' }).then((r) => ({ r, out }));
}

describe('demo', () => {
  it('dmTable: linear segments around the error ones, covering the device', () => {
    expect(dmTable('/dev/loop3', 100, [{ start: 40, sectors: 2 }, { start: 10, sectors: 5 }])).toBe(
      '0 10 linear /dev/loop3 0\n10 5 error\n15 25 linear /dev/loop3 15\n40 2 error\n42 58 linear /dev/loop3 42\n',
    );
    expect(dmTable('/dev/l', 10, [{ start: 0, sectors: 10 }])).toBe('0 10 error\n');
    expect(() => dmTable('/dev/l', 10, [{ start: 8, sectors: 5 }])).toThrow(/outside/);
  });

  it('its layout: every bad range inside the part written and read back', () => {
    for (const b of DEMO_LAYOUT.bad) expect(b.start + b.sectors).toBeLessThanOrEqual(DEMO_LAYOUT.writeMib * 2048);
    expect(parseSha256sum('ab  x\ncd  y\n')).toEqual(['ab', 'cd']);
    expect(shellQuote(['dd', 'if=/a b', "it's"])).toBe(`dd 'if=/a b' 'it'\\''s'`);
  });

  it('runs every step, prints each command and its output, and removes everything in reverse order', async () => {
    const { io, log, live } = fakeIo();
    const { r, out } = await run(io);
    expect(r.error).toBeNull();
    expect(r.ok).toBe(true);
    expect(r.written).toBe('aaaa');
    expect(r.readBack).toBe('aaaa');
    expect(r.blockPath).toBe('/dev/ublkb7');
    // Each command's program (and for dmremap-ublk its command), in order.
    const cmds = log.map((l) => (l.startsWith('dmremap-ublk') ? l.split(' ').slice(0, 2).join(' ') : l.split(' ')[0]));
    expect(cmds).toEqual([
      'truncate', 'truncate', 'losetup', 'losetup', 'cat', 'dmsetup',
      'dmremap-ublk add', 'dmremap-ublk list', 'dd', 'dd', 'dd', 'sha256sum',
      'dmremap-ublk status', 'dmremap-ublk table', 'dmremap-ublk health', 'dmremap-ublk watch', 'dmremap-ublk scan', 'dmremap-ublk map',
      'dmremap-ublk del', 'dmsetup', 'dmsetup', 'losetup', 'losetup', 'losetup', 'losetup',
    ]);
    expect(log.filter((l) => l.startsWith('dd ')).map((l) => l.split(' ').slice(1, 3))).toEqual([
      ['if=/dev/urandom', expect.stringMatching(/^of=.*\/pattern$/)],
      [expect.stringMatching(/^if=.*\/pattern$/), 'of=/dev/ublkb7'],
      ['if=/dev/ublkb7', expect.stringMatching(/^of=.*\/read-back$/)],
    ]);
    // Each removal looks first (dmsetup info, losetup -j: questions, not shown) and removes what it finds.
    expect(log.slice(-7).map((l) => l.replace(/\/tmp\/[^/]+\//, '<dir>/'))).toEqual([
      'dmremap-ublk del dmremap-demo',
      'dmsetup info dmremap-demo-main-42',
      'dmsetup remove --retry dmremap-demo-main-42',
      'losetup -j <dir>/spare.img',
      'losetup -d /dev/loop1',
      'losetup -j <dir>/main.img',
      'losetup -d /dev/loop0',
    ]);
    expect(out).not.toContain('$ dmsetup info');
    expect(out).not.toContain('$ losetup -j');
    expect(live.size).toBe(0); // the temporary directory too
    expect(out).toContain('\n$ dmremap-ublk status dmremap-demo\nstatus output\n');
    expect(out).toContain('\n$ dmremap-ublk watch dmremap-demo    # (stopped with Ctrl-C after the scan)\n12:00 scan idle -> running\n');
    expect(out).toMatch(/# Done: the data read back was right \(sha256 aaaa\)/);
    expect(r.cleanup.map((c) => c.status)).toEqual([0, 0, 0, 0, 0]);
    for (const st of r.steps) expect(st.ms).toBeGreaterThanOrEqual(0);
  });

  it('data read back wrong: not ok (E_DEMO), and still everything removed', async () => {
    const { io, live } = fakeIo({ readBackSum: 'bbbb' });
    const { r, out } = await run(io);
    expect(r.ok).toBe(false);
    expect(r.error).toEqual({ code: 'E_DEMO', message: 'the data read back differs from what was written' });
    expect(out).toContain('NOT the same');
    expect(live.size).toBe(0);
  });

  it('a step failing half-way: only what was made is removed', async () => {
    const { io, log, live } = fakeIo({ fail: 'dmsetup create' });
    const { r } = await run(io);
    expect(r.ok).toBe(false);
    expect(r.error?.code).toBe('E_DEMO');
    expect(r.error?.message).toBe('dmsetup failed (exit 1): dmsetup: it broke');
    expect(log.some((l) => l.startsWith('dmremap-ublk'))).toBe(false);
    expect(log.filter((l) => l.startsWith('losetup -d') || l.startsWith('dmsetup remove'))).toEqual(['losetup -d /dev/loop1', 'losetup -d /dev/loop0']);
    expect(live.size).toBe(0);
  });

  it('Ctrl-C during a step: it stops after it, says so, and removes everything', async () => {
    const stop = new AbortController();
    const { io, log, live } = fakeIo({ onCommand: (l) => l.startsWith('dmremap-ublk table') && stop.abort() });
    const { r, out } = await run(io, stop.signal);
    expect(r.ok).toBe(false);
    expect(r.error?.code).toBe('E_INTERRUPTED');
    expect(log).not.toContain('dmremap-ublk health dmremap-demo');
    expect(out).toContain('# Interrupted: removing everything the demo made.');
    expect(log.slice(-7)[0]).toBe('dmremap-ublk del dmremap-demo');
    expect(live.size).toBe(0);
  });

  it('Ctrl-C while losetup or dmsetup create runs (and succeeds): the loop and dm devices it made are still removed', async () => {
    for (const step of ['losetup --find --show', 'dmsetup create']) {
      const stop = new AbortController();
      // The signal arrives while the command runs; the command still completes (it had already attached the
      // loop device / created the dm device when the abort came, or it does not die of it).
      const { io, live } = fakeIo({ onCommand: (l) => l.startsWith(step) && stop.abort() });
      const { r } = await run(io, stop.signal);
      expect(r.error?.code).toBe('E_INTERRUPTED');
      expect([...live], `after Ctrl-C during ${step}`).toEqual([]);
    }
  });

  it('Ctrl-C kills dmsetup create or losetup half-way (the device made, the command dead): that device is still removed', async () => {
    for (const step of ['losetup --find --show', 'dmsetup create']) {
      const stop = new AbortController();
      const f = fakeIo();
      const exec = f.io.exec;
      f.io.exec = async (cmd, args, signal) => {
        const line = shellQuote([cmd, ...args]);
        if (!line.startsWith(step)) return exec(cmd, args, signal);
        // The terminal's SIGINT reaches the child too: it dies after the kernel made the device, before it
        // printed or finished (losetup attached the file; dmsetup created the device, loaded no table yet).
        // (The demo no longer lets Ctrl-C kill these: no abort signal, and its own process group on the host.)
        expect(signal, `${step} given the abort signal`).toBeUndefined();
        await exec(cmd, args, signal);
        stop.abort();
        return { status: null, stdout: '', stderr: '' };
      };
      const { r } = await run(f.io, stop.signal);
      expect(r.error?.code).toBe('E_INTERRUPTED');
      expect([...f.live], `after ${step} was killed`).toEqual([]);
    }
  });

  it('parseLosetupJ: the devices of `losetup -j`, whatever the file name holds', () => {
    expect(parseLosetupJ('/dev/loop0: [2049]:12 (/tmp/a: b/main.img)\n/dev/loop7: []: (/x)\n\n')).toEqual(['/dev/loop0', '/dev/loop7']);
    expect(parseLosetupJ('')).toEqual([]);
  });

  it('a clean-up step that fails makes the demo fail, and the rest is still removed', async () => {
    const { io, live } = fakeIo({ fail: 'dmsetup remove' });
    const { r } = await run(io);
    expect(r.ok).toBe(false);
    expect(r.error?.message).toMatch(/could not remove everything: dmsetup remove --retry dmremap-demo-main-42/);
    expect([...live]).toEqual(['dm:dmremap-demo-main-42']);
  });

  it('not root on a host whose ublk_drv is there but not loaded: E_PREREQUISITE (needs root), not the VM', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-path-'));
    const calls = path.join(dir, 'calls');
    const env = { PATH: `${dir}:/usr/bin:/bin`, CALLS: calls };
    const noControl = path.join(dir, 'ublk-control'); // not there: ublk_drv not loaded
    try {
      for (const t of ['dmsetup', 'losetup']) fs.writeFileSync(path.join(dir, t), '#!/bin/sh\n', { mode: 0o755 });
      fs.writeFileSync(path.join(dir, 'modprobe'), '#!/bin/sh\necho "modprobe $*" >> "$CALLS"\nexit "${MODPROBE_EXIT:-0}"\n', { mode: 0o755 });
      await expect(demoPlace(env, 1000, noControl)).rejects.toThrow(
        expect.objectContaining({ code: 'E_PREREQUISITE', message: 'demo needs root (it creates loop, device-mapper and ublk devices: run it with sudo)' }) as Error,
      );
      expect(fs.readFileSync(calls, 'utf8')).toBe('modprobe -n ublk_drv\n'); // a question: nothing loaded
      // Loaded (a control node there; /dev/null stands for it): the same.
      await expect(demoPlace({ ...env, MODPROBE_EXIT: '1' }, 1000, '/dev/null')).rejects.toThrow(expect.objectContaining({ code: 'E_PREREQUISITE' }) as Error);
      // No ublk at all: the VM; so too when asked for (DMREMAP_FORCE_VM), or inside it: the host.
      expect(await demoPlace({ ...env, MODPROBE_EXIT: '1' }, 1000, noControl)).toBe('vm');
      expect(await demoPlace({ ...env, DMREMAP_FORCE_VM: '1' }, 1000, noControl)).toBe('vm');
      expect(await demoPlace({ ...env, [IN_VM_ENV]: '1' }, 1000, noControl)).toBe('host');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names what is missing: root, dmsetup, losetup', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-path-'));
    try {
      expect(missingPrerequisites({ PATH: dir }, 1000)).toEqual(['root (it creates loop, device-mapper and ublk devices: run it with sudo)', 'dmsetup (not on PATH)', 'losetup (not on PATH)']);
      for (const t of ['dmsetup', 'losetup']) fs.writeFileSync(path.join(dir, t), '#!/bin/sh\n', { mode: 0o755 });
      expect(missingPrerequisites({ PATH: dir }, 0)).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

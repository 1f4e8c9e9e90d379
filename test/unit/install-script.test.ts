// scripts/install.sh on a fake root: a copy of the script in a made-up checkout, with apt-get, apt-cache,
// dpkg-query, modprobe, npm and the CLI replaced by fakes that record what they are asked, and the places it
// writes (/usr/local/bin, /etc, /sys/module/ublk_drv, /run/systemd/system) moved into a temporary directory.
// Checks --dry-run (says everything, changes nothing), a real run, and that a second run changes nothing.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { REPO } from './helpers.js';

let root: string;
const p = (...s: string[]): string => path.join(root, ...s);

function exe(file: string, body: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `#!/bin/bash\n${body}\n`, { mode: 0o755 });
}

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'dmr-install-'));
  // The checkout: the real script and logrotate snippet, a CLI that only answers --help and install-systemd.
  for (const f of ['scripts/install.sh', 'scripts/logrotate/dmremap-ublk']) {
    fs.mkdirSync(path.dirname(p('repo', f)), { recursive: true });
    fs.copyFileSync(path.join(REPO, f), p('repo', f));
  }
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'binding.gyp', 'src/x.ts', 'native/x.cc']) {
    fs.mkdirSync(path.dirname(p('repo', f)), { recursive: true });
    fs.writeFileSync(p('repo', f), '{}');
  }
  exe(p('repo/bin/dmremap-ublk.js'), `case "$1" in
  --help) printf 'Commands:\\n  add      create\\n%s' "$FAKE_HELP_EXTRA" ;;
  install-systemd) echo "cli $*" >> "$FAKE_CALLS"; echo "units: unchanged" ;;
esac`);
  // Fakes on PATH. The package database is a file of installed package names.
  fs.writeFileSync(p('installed'), 'make\npython3\n');
  exe(p('fake/dpkg-query'), `grep -qx "\${@: -1}" "$FAKE_ROOT/installed" && printf 'install ok installed'; true`);
  exe(p('fake/apt-get'), `echo "apt-get $*" >> "$FAKE_CALLS"; [[ $1 == install ]] && for a in "$@"; do [[ $a == -* || $a == install ]] || echo "$a" >> "$FAKE_ROOT/installed"; done; true`);
  exe(p('fake/apt-cache'), `printf 'nodejs:\\n  Installed: (none)\\n  Candidate: %s\\n' "\${FAKE_NODE_CANDIDATE:-20.19.2+dfsg-1}"`);
  exe(p('fake/modprobe'), `echo "modprobe $*" >> "$FAKE_CALLS"; [[ -n $FAKE_NO_UBLK ]] && exit 1; [[ $1 == -n || -n $FAKE_UBLK_BUILTIN ]] || mkdir -p "$FAKE_ROOT/sys/module/ublk_drv"`);
  exe(p('fake/npm'), `echo "npm $*" >> "$FAKE_CALLS"
case "$1" in
  ci) mkdir -p node_modules && touch node_modules/.package-lock.json ;;
  run) mkdir -p build/Release dist/cli && touch build/Release/dmremap_native.node dist/cli/main.bundle.cjs ;;
esac`);
  fs.mkdirSync(p('etc/logrotate.d'), { recursive: true });
  fs.mkdirSync(p('run/systemd/system'), { recursive: true });
  fs.writeFileSync(p('kernel-config'), '# CONFIG_BLK_DEV_UBLK is not set\n');
  fs.writeFileSync(p('calls'), '');
  // Every file a little in the past, so that what the fakes make is newer.
  const past = new Date(Date.now() - 60_000);
  for (const f of ['package.json', 'package-lock.json', 'tsconfig.json', 'binding.gyp', 'src/x.ts', 'native/x.cc', 'bin/dmremap-ublk.js']) fs.utimesSync(p('repo', f), past, past);
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

function install(args: string[] = [], env: Record<string, string> = {}) {
  const r = spawnSync('bash', [p('repo/scripts/install.sh'), ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: {
      PATH: `${p('fake')}:${path.dirname(process.execPath)}:/usr/bin:/bin`,
      FAKE_ROOT: root,
      FAKE_CALLS: p('calls'),
      FAKE_HELP_EXTRA: '  install-systemd  install the units\n',
      DMREMAP_INSTALL_BIN_DIR: p('usr/local/bin'),
      DMREMAP_INSTALL_ETC_DIR: p('etc'),
      DMREMAP_INSTALL_UBLK_MODULE: p('sys/module/ublk_drv'),
      DMREMAP_INSTALL_UBLK_CONTROL: p('dev/ublk-control'),
      DMREMAP_INSTALL_SYSTEMD_RUN: p('run/systemd/system'),
      DMREMAP_INSTALL_KERNEL_CONFIG: p('kernel-config'),
      DMREMAP_INSTALL_NO_ROOT: '1',
      ...env,
    },
  });
  const calls = fs.readFileSync(p('calls'), 'utf8');
  fs.writeFileSync(p('calls'), '');
  return { status: r.status, out: r.stdout, err: r.stderr, calls };
}

/** Every file under the fake root outside the fakes' own bookkeeping, with its content or link target. */
function tree(): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const f = path.join(d, e.name);
      const rel = path.relative(root, f);
      if (rel === 'calls') continue;
      if (e.isSymbolicLink()) out[rel] = `-> ${fs.readlinkSync(f)}`;
      else if (e.isDirectory()) walk(f);
      else out[rel] = `${fs.readFileSync(f, 'utf8')} @${fs.statSync(f).mtimeMs}`;
    }
  };
  walk(root);
  return out;
}

describe('scripts/install.sh (fake root)', () => {
  it('--dry-run says what it would do and changes nothing; a run does it; a second run changes nothing and says so', () => {
    const before = tree();
    const dry = install(['--dry-run']);
    expect(dry.err).toBe('');
    expect(dry.status).toBe(0);
    expect(dry.out).toContain('would: apt-get install liburing-dev pkg-config g++ util-linux fdisk dmsetup\n');
    expect(dry.out).toContain('would: npm ci');
    expect(dry.out).toContain('would: npm run build');
    expect(dry.out).toContain(`would: ln -sfn ${p('repo/bin/dmremap-ublk.js')} ${p('usr/local/bin/dmremap-ublk')}\n`);
    expect(dry.out).toContain(`would: write ${p('etc/logrotate.d/dmremap-ublk')}\n`);
    expect(dry.out).toContain('would: modprobe ublk_drv\n');
    expect(dry.out).toContain(`would: write ${p('etc/modules-load.d/dmremap-ublk.conf')}\n`);
    expect(dry.out).toContain('would: dmremap-ublk install-systemd');
    expect(dry.out).toMatch(/dry run: 7 change\(s\) would be made; nothing was changed\n$/);
    expect(dry.calls).toBe('modprobe -n ublk_drv\n'); // a question only
    expect(tree()).toEqual(before);

    const real = install();
    expect(real.err).toBe('');
    expect(real.status).toBe(0);
    expect(real.calls.split('\n').filter(Boolean)).toEqual([
      'apt-get update',
      'apt-get install -y --no-install-recommends liburing-dev pkg-config g++ util-linux fdisk dmsetup',
      'npm ci',
      'npm run build',
      'modprobe -n ublk_drv',
      'modprobe ublk_drv',
      'cli install-systemd',
    ]);
    expect(fs.readlinkSync(p('usr/local/bin/dmremap-ublk'))).toBe(p('repo/bin/dmremap-ublk.js'));
    expect(fs.readFileSync(p('etc/logrotate.d/dmremap-ublk'), 'utf8')).toBe(fs.readFileSync(path.join(REPO, 'scripts/logrotate/dmremap-ublk'), 'utf8'));
    expect(fs.readFileSync(p('etc/modules-load.d/dmremap-ublk.conf'), 'utf8')).toBe('ublk_drv\n');
    expect(real.out).toContain('units: unchanged');
    expect(real.out).toMatch(/done: 7 change\(s\) made/);

    const after = tree();
    const again = install();
    expect(again.status).toBe(0);
    expect(again.out).not.toMatch(/doing:/);
    expect(again.out).toMatch(/nothing to do: everything was already installed\n$/);
    expect(again.calls).toBe('cli install-systemd\n'); // which reports its own "unchanged"
    expect(tree()).toEqual(after);
    const dryAgain = install(['--dry-run']);
    expect(dryAgain.out).toMatch(/nothing to do: everything was already installed\n$/);
  });

  it('node_modules is judged by content, not file times: a newer package-lock.json (a fresh checkout) needs no npm ci; a package at another version, or missing, does', () => {
    const lock = {
      lockfileVersion: 3,
      packages: {
        '': { name: 'x', dependencies: { a: '^1.0.0' }, devDependencies: { b: '^2.0.0' } },
        'node_modules/a': { version: '1.2.3' },
        'node_modules/b': { version: '2.0.0', dev: true },
        'node_modules/c-aix-ppc64': { version: '1.0.0', optional: true, os: ['aix'], cpu: ['ppc64'] }, // another platform's: rightly absent
      },
    };
    fs.writeFileSync(p('repo/package.json'), JSON.stringify({ name: 'x', dependencies: { a: '^1.0.0' }, devDependencies: { b: '^2.0.0' } }));
    fs.writeFileSync(p('repo/package-lock.json'), JSON.stringify(lock));
    const pkg = (name: string, version: string): void => {
      fs.mkdirSync(p('repo/node_modules', name), { recursive: true });
      fs.writeFileSync(p('repo/node_modules', name, 'package.json'), JSON.stringify({ name, version }));
    };
    pkg('a', '1.2.3');
    pkg('b', '2.0.0');
    // node_modules older than the lock, as after a checkout that rewrote the same files.
    const older = new Date(Date.now() - 120_000);
    fs.writeFileSync(p('repo/node_modules/.package-lock.json'), '{}');
    fs.utimesSync(p('repo/node_modules/.package-lock.json'), older, older);
    const same = install(['--dry-run']);
    expect(same.out).toContain('ok: node_modules matches package-lock.json\n');
    expect(same.out).not.toContain('npm ci');

    pkg('a', '1.2.4');
    expect(install(['--dry-run']).out).toContain('would: npm ci (in ' + p('repo') + ': node_modules/a is 1.2.4, package-lock.json says 1.2.3)\n');
    fs.rmSync(p('repo/node_modules/b'), { recursive: true });
    pkg('a', '1.2.3');
    expect(install(['--dry-run']).out).toContain(': node_modules/b is missing)\n');
    pkg('b', '2.0.0');
    fs.writeFileSync(p('repo/package.json'), JSON.stringify({ name: 'x', dependencies: { a: '^1.1.0' }, devDependencies: { b: '^2.0.0' } }));
    expect(install(['--dry-run']).out).toContain(': package-lock.json does not match package.json (dependencies))\n');
  });

  // What an earlier content check of node_modules missed, or judged wrong (found in review).
  describe('node_modules judged by content: optional packages, key order, commands', () => {
    const pkg = (name: string, version: string): void => {
      fs.mkdirSync(p('repo/node_modules', name), { recursive: true });
      fs.writeFileSync(p('repo/node_modules', name, 'package.json'), JSON.stringify({ name, version }));
    };
    const setup = (pkgJson: object, lockRoot: object, packages: Record<string, object>): void => {
      fs.writeFileSync(p('repo/package.json'), JSON.stringify(pkgJson));
      fs.writeFileSync(p('repo/package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: { '': lockRoot, ...packages } }));
    };

    it("this platform's optional package (esbuild's binary, @esbuild/<os>-<cpu>) missing from node_modules: npm ci runs (the build cannot work without it)", () => {
      const own = `@esbuild/${process.platform}-${process.arch}`;
      const deps = { devDependencies: { esbuild: '^0.25.12' } };
      setup({ name: 'x', ...deps }, { name: 'x', ...deps }, {
        'node_modules/esbuild': { version: '0.25.12', dev: true, hasInstallScript: true, optionalDependencies: { [own]: '0.25.12', '@esbuild/aix-ppc64': '0.25.12' } },
        [`node_modules/${own}`]: { version: '0.25.12', dev: true, optional: true, os: [process.platform], cpu: [process.arch] },
        'node_modules/@esbuild/aix-ppc64': { version: '0.25.12', dev: true, optional: true, os: ['aix'], cpu: ['ppc64'] },
      });
      pkg('esbuild', '0.25.12'); // the other platform's binary is rightly absent; this platform's is missing
      const r = install(['--dry-run']);
      expect(r.out).not.toContain('ok: node_modules matches package-lock.json');
      expect(r.out).toContain(`node_modules/${own} is missing`);
    });

    it("package.json's optionalDependencies changed (a package added) without npm ci: not in node_modules, npm ci runs", () => {
      setup({ name: 'x', dependencies: { a: '^1.0.0' }, optionalDependencies: { o: '^1.0.0' } }, { name: 'x', dependencies: { a: '^1.0.0' } }, {
        'node_modules/a': { version: '1.0.0' },
      });
      pkg('a', '1.0.0');
      const r = install(['--dry-run']);
      expect(r.out).not.toContain('ok: node_modules matches package-lock.json');
      expect(r.out).toContain('package-lock.json does not match package.json (optionalDependencies)');
    });

    it('package.json listing the same dependencies in another order (an edit, or a tool that sorts keys) needs no npm ci', () => {
      setup({ name: 'x', dependencies: { b: '^1.0.0', a: '^1.0.0' } }, { name: 'x', dependencies: { a: '^1.0.0', b: '^1.0.0' } }, {
        'node_modules/a': { version: '1.0.0' },
        'node_modules/b': { version: '1.0.0' },
      });
      pkg('a', '1.0.0');
      pkg('b', '1.0.0');
      const r = install(['--dry-run']);
      expect(r.out).toContain('ok: node_modules matches package-lock.json');
      expect(r.out).not.toContain('npm ci');
    });

    it('package.json listing a package in both dependencies and optionalDependencies (the old way to support npm before optional ones): npm writes it only under optionalDependencies in the lock; no npm ci', () => {
      // What npm 11 writes for this package.json (`npm install` of two local packages): read-package-json
      // drops an optional package from dependencies, so the lock's root lists it only as optional.
      setup(
        { name: 'x', dependencies: { a: '^1.0.0', o: '^1.0.0' }, optionalDependencies: { o: '^1.0.0' } },
        { name: 'x', dependencies: { a: '^1.0.0' }, optionalDependencies: { o: '^1.0.0' } },
        { 'node_modules/a': { version: '1.0.0' }, 'node_modules/o': { version: '1.0.0', optional: true } },
      );
      pkg('a', '1.0.0');
      pkg('o', '1.0.0');
      const r = install(['--dry-run']);
      expect(r.out).toContain('ok: node_modules matches package-lock.json');
      expect(r.out).not.toContain('npm ci');
    });

    it("a package's command (node_modules/.bin/tsc, which the build runs) missing while the package is in place: npm ci runs", () => {
      const deps = { devDependencies: { typescript: '^5.9.3' } };
      setup({ name: 'x', ...deps }, { name: 'x', ...deps }, {
        'node_modules/typescript': { version: '5.9.3', dev: true, bin: { tsc: 'bin/tsc', tsserver: 'bin/tsserver' } },
      });
      pkg('typescript', '5.9.3'); // no node_modules/.bin at all
      const r = install(['--dry-run']);
      expect(r.out).not.toContain('ok: node_modules matches package-lock.json');
    });
  });

  it('a kernel without ublk: one paragraph naming the kernel and CONFIG_BLK_DEV_UBLK, the VM demo; no modules-load entry', () => {
    const r = install([], { FAKE_NO_UBLK: '1' });
    expect(r.status).toBe(0);
    expect(r.out).toContain(`No ublk on this kernel: Linux ${os.release()} has no ublk_drv module`);
    expect(r.out).toContain('# CONFIG_BLK_DEV_UBLK is not set');
    expect(r.out).toMatch(/`dmremap-ublk demo`\s+runs the demo inside a test VM/);
    expect(fs.existsSync(p('etc/modules-load.d'))).toBe(false);
  });

  it('node too old and no new enough nodejs package: says how to get it, exit 1, nothing changed', () => {
    exe(p('fake/node'), 'echo v18.19.0');
    const before = tree();
    const r = install([], { FAKE_NODE_CANDIDATE: '18.19.0+dfsg-6~deb12u2' });
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/^install\.sh: Node\.js >= 20\.17 is needed \(found: v18\.19\.0; this release's nodejs package: 18\.19\.0\+dfsg-6~deb12u2\)/);
    expect(r.err).toContain('Debian trixie (13) ships nodejs 20.19');
    expect(r.err).not.toMatch(/https?:|\.org|\.com/);
    expect(r.calls).toBe('');
    expect(tree()).toEqual(before);
  });

  it('node missing but the release has a new enough nodejs: it is installed with the rest', () => {
    exe(p('fake/node'), 'grep -qx nodejs "$FAKE_ROOT/installed" && echo v20.19.2 || exit 127');
    const r = install(['--dry-run']);
    expect(r.status).toBe(0);
    expect(r.out).toContain('this release\'s nodejs package is 20.19.2+dfsg-1: installing it');
    expect(r.out).toContain('would: apt-get install liburing-dev pkg-config g++ util-linux fdisk dmsetup nodejs npm\n');
  });

  it('without install-systemd in the CLI, or without systemd running, the units are skipped', () => {
    expect(install(['--dry-run'], { FAKE_HELP_EXTRA: '' }).out).toContain('skip: this version has no dmremap-ublk install-systemd');
    fs.rmSync(p('run/systemd'), { recursive: true });
    expect(install(['--dry-run']).out).toContain('skip: systemd is not running here');
  });

  it('/usr/local/bin/dmremap-ublk already a symbolic link to something else (the user\'s own): not replaced, exit 1, one line', () => {
    fs.mkdirSync(p('usr/local/bin'), { recursive: true });
    fs.symlinkSync('/opt/other-dmremap/bin/dmremap-ublk', p('usr/local/bin/dmremap-ublk'));
    const before = tree();
    const r = install();
    expect(fs.readlinkSync(p('usr/local/bin/dmremap-ublk'))).toBe('/opt/other-dmremap/bin/dmremap-ublk');
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/^install\.sh: .*dmremap-ublk.*\n$/);
    expect(r.calls).toBe(''); // checked before apt, npm or the build ran
    expect(tree()).toEqual(before);
    // A regular file there: the same, before any change.
    fs.rmSync(p('usr/local/bin/dmremap-ublk'));
    fs.writeFileSync(p('usr/local/bin/dmremap-ublk'), '#!/bin/sh\n');
    const file = install();
    expect(file.status).toBe(1);
    expect(file.err).toBe(`install.sh: ${p('usr/local/bin/dmremap-ublk')} exists and is not a symbolic link: move it away and run this script again\n`);
    expect(file.calls).toBe('');
  });

  it('/usr/local/bin/dmremap-ublk a link to an earlier checkout\'s bin/dmremap-ublk.js: replaced by this one', () => {
    fs.mkdirSync(p('usr/local/bin'), { recursive: true });
    fs.symlinkSync('/home/me/old-checkout/bin/dmremap-ublk.js', p('usr/local/bin/dmremap-ublk'));
    const r = install();
    expect(r.status).toBe(0);
    expect(r.out).toContain(`doing: ln -sfn ${p('repo/bin/dmremap-ublk.js')} ${p('usr/local/bin/dmremap-ublk')}\n`);
    expect(fs.readlinkSync(p('usr/local/bin/dmremap-ublk'))).toBe(p('repo/bin/dmremap-ublk.js'));
  });

  it('an /etc/logrotate.d/dmremap-ublk the admin edited (rotate 52) is not overwritten by a second run', () => {
    expect(install().status).toBe(0);
    const conf = p('etc/logrotate.d/dmremap-ublk');
    const edited = fs.readFileSync(conf, 'utf8').replace('rotate 8', 'rotate 52');
    fs.writeFileSync(conf, edited);
    const again = install();
    expect(fs.readFileSync(conf, 'utf8')).toBe(edited);
    expect(again.out).toContain(`kept: ${conf} differs from this version's (${p('repo/scripts/logrotate/dmremap-ublk')}): left as it is`);
    expect(again.out).toMatch(/nothing to do: everything was already installed\n$/);
  });

  it('a kernel with ublk built in (/dev/ublk-control, no /sys/module/ublk_drv): no modprobe, a second run changes nothing', () => {
    const env = { FAKE_UBLK_BUILTIN: '1', DMREMAP_INSTALL_UBLK_CONTROL: '/dev/null' }; // /dev/null: a character device
    const first = install([], env);
    expect(first.status).toBe(0);
    expect(first.out).toContain('ok: ublk is there (/dev/null)\n');
    expect(first.calls).not.toContain('modprobe');
    expect(fs.readFileSync(p('etc/modules-load.d/dmremap-ublk.conf'), 'utf8')).toBe('ublk_drv\n');
    const again = install([], env);
    expect(again.out).toMatch(/nothing to do: everything was already installed\n$/);
  });

  it('bad arguments: exit 2, one line', () => {
    const r = install(['--bogus']);
    expect(r.status).toBe(2);
    expect(r.err).toBe('install.sh: unknown argument --bogus (usage: scripts/install.sh [--dry-run])\n');
  });
});

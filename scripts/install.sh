#!/usr/bin/env bash
# Installs dmremap-ublk from this checkout on a Debian or Ubuntu machine, as root:
#   the system packages it builds and runs with, Node.js >= 20.17 (checked), `npm ci` and `npm run build`,
#   the `dmremap-ublk` command on the PATH (/usr/local/bin), ublk_drv loaded now and at boot
#   (/etc/modules-load.d) where the kernel has it, the logrotate snippet, and the systemd units where
#   systemd runs and this version has `dmremap-ublk install-systemd`.
# Idempotent: each step looks first and changes only what is not as it should be; a second run changes
# nothing and says so. --dry-run prints what it would do and changes nothing.
# It replaces nothing that is not its own: an existing /usr/local/bin/dmremap-ublk that is not a link to a
# checkout's bin/dmremap-ublk.js stops it before any change; an edited logrotate or modules-load file is kept.
#
# Usage: scripts/install.sh [--dry-run]
#
# For tests, these move what it touches (defaults in brackets):
#   DMREMAP_INSTALL_BIN_DIR [/usr/local/bin]   DMREMAP_INSTALL_ETC_DIR [/etc]
#   DMREMAP_INSTALL_UBLK_MODULE [/sys/module/ublk_drv]   DMREMAP_INSTALL_UBLK_CONTROL [/dev/ublk-control]
#   DMREMAP_INSTALL_SYSTEMD_RUN [/run/systemd/system]
#   DMREMAP_INSTALL_KERNEL_CONFIG [/boot/config-$(uname -r)]   DMREMAP_INSTALL_NO_ROOT=1 (skip the root check)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${DMREMAP_INSTALL_BIN_DIR:-/usr/local/bin}"
etc_dir="${DMREMAP_INSTALL_ETC_DIR:-/etc}"
ublk_module="${DMREMAP_INSTALL_UBLK_MODULE:-/sys/module/ublk_drv}"
ublk_control="${DMREMAP_INSTALL_UBLK_CONTROL:-/dev/ublk-control}"
systemd_run="${DMREMAP_INSTALL_SYSTEMD_RUN:-/run/systemd/system}"
kernel="$(uname -r)"
kernel_config="${DMREMAP_INSTALL_KERNEL_CONFIG:-/boot/config-$kernel}"

# What the build and the daemon need (the same as .ci/run's build and run set; not the test-only packages):
# g++/make/python3 for node-gyp, pkg-config + liburing-dev for the native addon, util-linux (losetup) and
# fdisk (sfdisk) for preparing disks, dmsetup for `dmremap-ublk demo`.
PACKAGES=(liburing-dev pkg-config g++ make python3 util-linux fdisk dmsetup)
NODE_MIN_MAJOR=20
NODE_MIN_MINOR=17

dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h | --help)
      sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install.sh: unknown argument $arg (usage: scripts/install.sh [--dry-run])" >&2
      exit 2
      ;;
  esac
done

changes=0
say() { printf '%s\n' "$*"; }
# change DESCRIPTION COMMAND...: runs the command (or, with --dry-run, says it would), and counts it.
change() {
  local what="$1"
  shift
  changes=$((changes + 1))
  if [[ $dry_run -eq 1 ]]; then
    say "would: $what"
    return 0
  fi
  say "doing: $what"
  "$@"
}
fail() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}

if [[ $dry_run -eq 0 && -z "${DMREMAP_INSTALL_NO_ROOT:-}" && $(id -u) -ne 0 ]]; then
  fail "run it as root (sudo scripts/install.sh): it installs packages and writes to $bin_dir and $etc_dir"
fi

# ---- before any change: is /usr/local/bin/dmremap-ublk ours to (re)place? -----------------------------------
# Ours: missing, or a symbolic link to this checkout's bin/dmremap-ublk.js (ok) or to another checkout's
# (*/bin/dmremap-ublk.js, an earlier install: replaced). Anything else (a file, a directory, a link elsewhere)
# belongs to someone else: stop here, before apt, npm or the build have changed anything.
link="$bin_dir/dmremap-ublk"
target="$repo/bin/dmremap-ublk.js"
link_state=make
if [[ -L "$link" ]]; then
  link_to="$(readlink "$link")"
  if [[ "$link_to" == "$target" ]]; then
    link_state=ok
  elif [[ "$link_to" != */bin/dmremap-ublk.js ]]; then
    fail "$link is a symbolic link to $(printf '%q' "$link_to"), not to a dmremap-ublk checkout's bin/dmremap-ublk.js: move it away and run this script again"
  fi
elif [[ -e "$link" ]]; then
  fail "$link exists and is not a symbolic link: move it away and run this script again"
fi

# ---- Node.js ----------------------------------------------------------------------------------------------
# node_ok: whether `node` is there and >= 20.17.
node_ok() {
  local v major minor
  v="$(node --version 2>/dev/null)" || return 1
  v="${v#v}"
  major="${v%%.*}"
  minor="${v#*.}"
  minor="${minor%%.*}"
  [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 1
  ((major > NODE_MIN_MAJOR || (major == NODE_MIN_MAJOR && minor >= NODE_MIN_MINOR)))
}
# The version apt would install as `nodejs`, or nothing.
apt_node_candidate() {
  apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ { print $2 }' | grep -v '(none)' || true
}
version_ok() { # "20.19.2+dfsg-1" -> ok if >= 20.17
  local v="${1#*:}" major minor
  major="${v%%.*}"
  minor="${v#*.}"
  minor="${minor%%[!0-9]*}"
  [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] && ((major > NODE_MIN_MAJOR || (major == NODE_MIN_MAJOR && minor >= NODE_MIN_MINOR)))
}

want_node_pkgs=()
if node_ok; then
  say "ok: node $(node --version) (>= $NODE_MIN_MAJOR.$NODE_MIN_MINOR)"
else
  have="$(node --version 2>/dev/null || echo none)"
  candidate="$(apt_node_candidate)"
  if [[ -n "$candidate" ]] && version_ok "$candidate"; then
    say "node: $have here; this release's nodejs package is $candidate: installing it"
    want_node_pkgs=(nodejs npm)
  else
    fail "Node.js >= $NODE_MIN_MAJOR.$NODE_MIN_MINOR is needed (found: $have; this release's nodejs package: ${candidate:-none}).
  Debian trixie (13) ships nodejs 20.19, new enough: apt-get install nodejs npm. Debian bookworm (12) ships 18.19
  and Ubuntu 24.04 18.19, too old: install Node.js 20.17 or newer another way (the Node.js project's own
  binaries or packages), make sure \`node --version\` shows it for root, and run this script again."
  fi
fi

# ---- system packages ---------------------------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}" "${want_node_pkgs[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  say "ok: packages ${PACKAGES[*]} installed"
else
  install_packages() {
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  }
  change "apt-get install ${missing[*]}" install_packages
fi
if [[ $dry_run -eq 0 ]] && ! node_ok; then
  fail "node is still missing or older than $NODE_MIN_MAJOR.$NODE_MIN_MINOR after installing nodejs"
fi

# ---- npm ci, build ------------------------------------------------------------------------------------------
cd "$repo"
# The dependencies are in place when every package package-lock.json lists is in node_modules at its version
# with its commands (an optional one may be missing if it is another platform's) and the lock is package.json's. Looked at by content,
# not by file times: a fresh checkout or a `git pull` makes package-lock.json newer than node_modules without
# changing a thing, and npm ci needs the network (and rebuilds the addon) for nothing.
deps_problem() {
  # Prints why node_modules is not what package-lock.json says (nothing when it is): the lock's root must
  # list package.json's dependencies (each kind, key order aside); every package must be in place at the
  # lock's version, an optional one too if it is made for this platform (os, cpu, libc: esbuild's binary),
  # and its commands linked in its node_modules/.bin. stderr is dropped: a reason is one line.
  node -e '
    const fs = require("fs");
    const read = (f) => JSON.parse(fs.readFileSync(f, "utf8"));
    const lock = read("package-lock.json");
    const pkg = read("package.json");
    const root = (lock.packages || {})[""] || {};
    const sorted = (o) => JSON.stringify(Object.entries(o || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    // A package listed in both dependencies and optionalDependencies is locked as optional only.
    const wanted = { ...pkg, dependencies: Object.fromEntries(Object.entries(pkg.dependencies || {}).filter(([n]) => !(n in (pkg.optionalDependencies || {})))) };
    for (const kind of ["dependencies", "devDependencies", "optionalDependencies", "peerDependencies"]) {
      if (sorted(root[kind]) !== sorted(wanted[kind])) { console.log("package-lock.json does not match package.json (" + kind + ")"); process.exit(0); }
    }
    // The rule npm applies to os/cpu/libc lists: a name matches; "!name" excludes; a list of only exclusions admits the rest.
    const fits = (list, have) => {
      if (!Array.isArray(list) || list.length === 0) return true;
      if (list.includes("!" + have)) return false;
      return list.includes(have) || list.every((x) => x.startsWith("!"));
    };
    const report = process.report && process.report.getReport ? process.report.getReport() : {};
    const libc = report.header && report.header.glibcVersionRuntime ? "glibc" : "musl";
    const forHere = (e) => fits(e.os, process.platform) && fits(e.cpu, process.arch) && (process.platform !== "linux" || fits(e.libc, libc));
    for (const [p, e] of Object.entries(lock.packages || {})) {
      if (p === "" || e.link) continue;
      let v;
      try { v = read(p + "/package.json").version; } catch {
        // An optional package is skipped by npm ci when it is for another platform, or when only such
        // a package needs it (a wasm runtime): one missing is a problem only if it names this platform.
        const platformOnly = e.os !== undefined || e.cpu !== undefined || e.libc !== undefined;
        if ((e.optional || e.devOptional) && !(platformOnly && forHere(e))) continue;
        console.log(p + " is missing"); process.exit(0);
      }
      if (e.version !== undefined && v !== e.version) { console.log(p + " is " + v + ", package-lock.json says " + e.version); process.exit(0); }
      const binDir = p.slice(0, p.lastIndexOf("node_modules/") + "node_modules/".length) + ".bin/";
      const bins = typeof e.bin === "string" ? [p.slice(p.lastIndexOf("/") + 1)] : Object.keys(e.bin || {});
      for (const b of bins) {
        if (!fs.existsSync(binDir + b)) { console.log(binDir + b + " (a command of " + p + ") is missing"); process.exit(0); }
      }
    }' 2>/dev/null || echo "cannot read package-lock.json or node_modules"
}
if [[ ! -d node_modules ]]; then
  change "npm ci (in $repo: no node_modules)" npm ci
elif why="$(deps_problem)" && [[ -z "$why" ]]; then
  say "ok: node_modules matches package-lock.json"
else
  change "npm ci (in $repo: $why)" npm ci
fi
# Built: the addon and the CLI bundle exist and no source is newer than them.
addon="build/Release/dmremap_native.node"
bundle="dist/cli/main.bundle.cjs"
newer=""
if [[ -f "$addon" && -f "$bundle" ]]; then
  newer="$(find src bin package.json tsconfig.json -newer "$bundle" -type f -print -quit 2>/dev/null || echo missing)"
  newer+="$(find native binding.gyp -newer "$addon" -type f -print -quit 2>/dev/null || echo missing)"
fi
if [[ -f "$addon" && -f "$bundle" && -z "$newer" ]]; then
  say "ok: built ($addon, $bundle newer than their sources)"
else
  change "npm run build (in $repo)" npm run build
fi

# ---- the command on the PATH --------------------------------------------------------------------------------
link="$bin_dir/dmremap-ublk"
target="$repo/bin/dmremap-ublk.js"
if [[ "$link_state" == ok ]]; then
  say "ok: $link -> $target"
else
  change "ln -sfn $target $link" bash -c 'mkdir -p "$1" && ln -sfn "$2" "$3"' _ "$bin_dir" "$target" "$link"
fi

# ---- file contents: install_text TEXT DEST MODE -------------------------------------------------------------
# Writes DEST when it is missing. One that differs is left as it is (an admin's edit, or an earlier version's
# file) and said so, with where this version's text is: never overwritten.
install_text() {
  local text="$1" dest="$2" mode="$3" source="$4"
  if [[ -f "$dest" && "$(cat "$dest")" == "${text%$'\n'}" ]]; then
    say "ok: $dest"
  elif [[ -e "$dest" || -L "$dest" ]]; then
    say "kept: $dest differs from this version's ($source): left as it is (edited here?); compare the two and merge by hand"
  else
    change "write $dest" bash -c 'mkdir -p "$(dirname "$2")" && printf "%s" "$1" > "$2.tmp" && chmod "$3" "$2.tmp" && mv "$2.tmp" "$2"' _ "$text" "$dest" "$mode"
  fi
}

# ---- logrotate ------------------------------------------------------------------------------------------------
if [[ -d "$etc_dir/logrotate.d" ]]; then
  install_text "$(cat "$repo/scripts/logrotate/dmremap-ublk")"$'\n' "$etc_dir/logrotate.d/dmremap-ublk" 0644 "$repo/scripts/logrotate/dmremap-ublk"
else
  say "skip: no $etc_dir/logrotate.d (logrotate not installed): the logs in /var/log/dmremap-ublk are not rotated"
fi

# ---- the kernel's ublk ----------------------------------------------------------------------------------------
ublk=0
if [[ -c "$ublk_control" ]]; then
  # Loaded, or built into the kernel (then there may be no $ublk_module): nothing to load.
  ublk=1
  say "ok: ublk is there ($ublk_control)"
elif [[ -d "$ublk_module" ]]; then
  ublk=1
  say "ok: ublk_drv loaded ($ublk_module)"
elif modprobe -n ublk_drv >/dev/null 2>&1; then
  ublk=1
  change "modprobe ublk_drv" modprobe ublk_drv
fi
if [[ $ublk -eq 1 ]]; then
  # Loaded at boot too. A kernel with ublk built in needs no entry, and one does no harm.
  install_text $'ublk_drv\n' "$etc_dir/modules-load.d/dmremap-ublk.conf" 0644 "the line ublk_drv"
else
  if [[ -r "$kernel_config" ]]; then
    config_line="$(grep -E '^(# )?CONFIG_BLK_DEV_UBLK[ =]' "$kernel_config" || true)"
    config_says="$kernel_config says: ${config_line:-nothing about CONFIG_BLK_DEV_UBLK}"
  else
    config_says="there is no $kernel_config to look in"
  fi
  cat <<EOF

No ublk on this kernel: Linux $kernel has no ublk_drv module
($config_says),
so dmremap-ublk devices cannot run on this machine: ublk needs a kernel built with CONFIG_BLK_DEV_UBLK=m
or =y (Debian trixie's kernel has it as a module). Everything else is installed. To see it work anyway,
\`dmremap-ublk demo\` runs the demo inside a test VM (a Debian trixie kernel with ublk under QEMU, no KVM
needed), which needs these packages too: apt-get install qemu-system-x86 busybox-static cpio xz-utils
zstd kmod debian-archive-keyring.

EOF
fi

# ---- systemd -------------------------------------------------------------------------------------------------
if [[ ! -d "$systemd_run" ]]; then
  say "skip: systemd is not running here: no units installed"
elif ! "$repo/bin/dmremap-ublk.js" --help 2>/dev/null | grep -qE '^  install-systemd\b'; then
  say "skip: this version has no dmremap-ublk install-systemd: no units installed"
elif [[ $dry_run -eq 1 ]]; then
  say "would: dmremap-ublk install-systemd (it reports what it changes)"
else
  say "units: dmremap-ublk install-systemd (it says what it changes)"
  "$repo/bin/dmremap-ublk.js" install-systemd
fi

# ---- summary --------------------------------------------------------------------------------------------------
if [[ $changes -eq 0 ]]; then
  say "nothing to do: everything was already installed"
elif [[ $dry_run -eq 1 ]]; then
  say "dry run: $changes change(s) would be made; nothing was changed"
else
  say "done: $changes change(s) made; run it again to check (it then changes nothing)"
fi

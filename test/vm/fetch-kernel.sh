#!/usr/bin/env bash
# Fetch a Debian kernel that ships ublk_drv.ko, for the QEMU test VM.
#
# Usage: test/vm/fetch-kernel.sh <trixie|sid>
#
# Leaves (idempotently; a second call downloads nothing):
#   .cache/vm/<suite>/vmlinuz
#   .cache/vm/<suite>/root/lib/modules/<ver>/...   (depmod'ed)
#   .cache/vm/<suite>/version                      (the <ver> string)
# and prints <ver> on stdout. Progress goes to stderr.
#
# Why this way: the host runs Debian bookworm, whose 6.1 kernel has no ublk,
# and the host's own running kernel may lack it too. Newer Debian suites ship
# ublk_drv. We reach them with apt, but through a *private* sources list and
# private state/cache dirs, so the host's apt configuration, lists and package
# set are left untouched. The mirror is the one the host's apt already uses for
# the Debian main archive: no registry host name is written in this repo.
set -euo pipefail

suite="${1:-}"
case "$suite" in
  trixie | sid) ;;
  *)
    echo "usage: $0 <trixie|sid>" >&2
    exit 2
    ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$repo/.cache/vm/$suite"

log() { echo "fetch-kernel[$suite]: $*" >&2; }

# Fast path: already fetched and extracted.
if [[ -s "$out/version" && -f "$out/vmlinuz" ]]; then
  ver="$(cat "$out/version")"
  if [[ ! -L "$out/root/lib/modules" && -f "$out/root/lib/modules/$ver/modules.dep" ]]; then
    echo "$ver"
    exit 0
  fi
fi

# Several engineers (and run.sh instances) may share this cache: serialise the
# slow path. A second caller waits, then finds the work done.
mkdir -p "$out"
exec 9>"$out.lock"
flock 9
if [[ -s "$out/version" && -f "$out/vmlinuz" ]]; then
  ver="$(cat "$out/version")"
  if [[ ! -L "$out/root/lib/modules" && -f "$out/root/lib/modules/$ver/modules.dep" ]]; then
    echo "$ver"
    exit 0
  fi
fi

for tool in apt-get apt-cache dpkg-deb depmod flock; do
  command -v "$tool" >/dev/null || {
    log "missing tool: $tool"
    exit 1
  }
done

# --- Find the host's Debian main-archive mirror -----------------------------
# We want the URI that serves the Debian main archive (dists/<codename>), not
# -security/-updates/-backports and not third-party repos. We recognise it as a
# source whose suites include a plain Debian release name (no "-suffix").
# Sources may be deb822 (*.sources) or one-line (sources.list, *.list).
# shellcheck source=/dev/null
host_codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
is_main_suite() {
  case "$1" in
    "$host_codename" | bullseye | bookworm | trixie | forky | duke | sid | \
      oldstable | stable | testing | unstable) return 0 ;;
  esac
  return 1
}

find_mirror() {
  local f line uris suites enabled types s u
  # deb822 stanzas: fields separated by blank lines.
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    uris="" suites="" enabled="yes" types=""
    while IFS= read -r line || [[ -n "$line" ]]; do
      # Comment lines are not stanza separators; only truly blank lines are.
      [[ "$line" =~ ^[[:space:]]*# ]] && continue
      line="${line%%#*}"
      if [[ -z "${line//[[:space:]]/}" ]]; then
        # End of stanza.
        if [[ "$enabled" != no && " $types " == *" deb "* && -n "$uris" ]]; then
          for s in $suites; do
            if is_main_suite "$s"; then
              for u in $uris; do
                echo "$u"
                return 0
              done
            fi
          done
        fi
        uris="" suites="" enabled="yes" types=""
        continue
      fi
      case "${line,,}" in
        uris:*) uris="${line#*:}" ;;
        suites:*) suites="${line#*:}" ;;
        enabled:*) enabled="$(echo "${line#*:}" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')" ;;
        types:*) types="${line#*:}" ;;
      esac
    done < <(cat "$f"; echo)
  done
  # One-line format: deb [opts] URI SUITE COMPONENTS...
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    while read -r -a w; do
      [[ "${w[0]:-}" == deb ]] || continue
      local i=1
      if [[ "${w[1]:-}" == \[* ]]; then
        while [[ $i -lt ${#w[@]} && "${w[$i]}" != *"]" ]]; do i=$((i + 1)); done
        i=$((i + 1))
      fi
      u="${w[$i]:-}" s="${w[$((i + 1))]:-}"
      if [[ -n "$u" ]] && is_main_suite "$s"; then
        echo "$u"
        return 0
      fi
    done <"$f"
  done
  return 1
}

if [[ -n "${DMREMAP_VM_MIRROR:-}" ]]; then
  mirror="$DMREMAP_VM_MIRROR" # escape hatch for unusual hosts
else
  mirror="$(find_mirror)" || {
    log "could not find a Debian main-archive mirror in the host's apt sources"
    log "(set DMREMAP_VM_MIRROR=<uri> to override)"
    exit 1
  }
fi
mirror="${mirror%/}"
log "mirror: $mirror"

# --- Private apt setup -------------------------------------------------------
# The host's debian-archive-keyring (bookworm's 2023.3+deb12u2 and later)
# already carries the trixie archive keys (13/trixie automatic + stable), and
# sid's Release file is signed by the current archive automatic keys, which are
# the same. So signatures are verified for real with the host keyring; no
# [trusted=yes]. If a future sid switches to a key the host does not yet have,
# `apt-get update` below fails loudly with NO_PUBKEY rather than silently
# trusting anything.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -f "$keyring" ]] || {
  log "missing $keyring (apt-get install debian-archive-keyring)"
  exit 1
}

apt_dir="$repo/.cache/vm/apt/$suite"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" \
  "$apt_dir/etc" "$out"
echo "deb [arch=amd64 signed-by=$keyring] $mirror $suite main" \
  >"$apt_dir/etc/sources.list"
: >"$apt_dir/status" # empty dpkg status: nothing "installed" in this view

apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/etc/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::Etc::Preferences=/dev/null"
  -o "Dir::Etc::PreferencesParts=/dev/null"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::State::status=$apt_dir/status"
  -o "Dir::State::extended_states=$apt_dir/extended_states"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Dir::Cache::pkgcache=$apt_dir/cache/pkgcache.bin"
  -o "Dir::Cache::srcpkgcache=$apt_dir/cache/srcpkgcache.bin"
  -o "APT::Architecture=amd64"
  -o "APT::Architectures=amd64"
  -o "Acquire::Languages=none"
  -o "Debug::NoLocking=1"
  # The cache lives in the work tree, which the unprivileged _apt user may not
  # be able to write; download as the invoking user instead of warning.
  -o "APT::Sandbox::User=$(id -un)"
)

log "apt-get update (private lists in $apt_dir)"
# --error-on=any: a mirror that cannot be reached or verified (NO_PUBKEY) is
# an error, not a warning followed by stale or empty lists.
apt-get "${apt_opts[@]}" -q --error-on=any update >&2

# --- Resolve linux-image-amd64 -> linux-image-<ver>-amd64 -------------------
# The metapackage depends on exactly one real image package. On sid it may be
# the signed one (linux-image-<ver>-amd64) or -unsigned; both carry vmlinuz and
# the same modules.
real_pkg="$(apt-cache "${apt_opts[@]}" depends linux-image-amd64 |
  sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)"
[[ -n "$real_pkg" ]] || {
  log "could not resolve linux-image-amd64 in $suite"
  exit 1
}
log "kernel package: $real_pkg"

# Since 7.x, sid splits the kernel: linux-image-<abi> is an empty package
# depending on linux-binary-<abi> (vmlinuz), linux-modules-<abi> and
# linux-base-<abi>. trixie's linux-image-<abi> carries everything itself.
# Take the image package plus every direct dependency named after the same
# <abi>, so both layouts work.
abi="${real_pkg#linux-image-}"
pkgs=("$real_pkg")
while read -r dep; do
  [[ "$dep" == *"$abi"* ]] && pkgs+=("$dep")
done < <(apt-cache "${apt_opts[@]}" depends "$real_pkg" |
  sed -n 's/^ *|\{0,1\}Depends: \([^ <>]*\)$/\1/p' | sort -u)
log "packages: ${pkgs[*]}"

dl="$apt_dir/debs"
mkdir -p "$dl"
debs=()
for pkg in "${pkgs[@]}"; do
  deb="$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)"
  if [[ -z "$deb" ]]; then
    log "downloading $pkg"
    (cd "$dl" && apt-get "${apt_opts[@]}" -q download "$pkg" >&2)
    deb="$(find "$dl" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)"
  fi
  [[ -n "$deb" ]] || {
    log "download of $pkg failed"
    exit 1
  }
  debs+=("$deb")
done

# --- Extract and depmod ------------------------------------------------------
tmp="$out/root.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
for deb in "${debs[@]}"; do
  log "extracting $(basename "$deb")"
  dpkg-deb -x "$deb" "$tmp"
done
ver="$(for d in "$tmp/lib/modules" "$tmp/usr/lib/modules"; do
  if [[ -d "$d" ]]; then find "$d" -mindepth 1 -maxdepth 1 -type d -printf '%f\n'; fi
done | head -n1)"
[[ -n "$ver" ]] || {
  log "no modules directory in ${debs[*]}"
  exit 1
}
# Newer kernel packages may install under usr/lib/modules (merged /usr).
# Normalise to <root>/lib/modules, a real directory: depmod -b wants that
# path, and the VM stacks <root>/lib over the host's /lib (overlayfs), where
# a symlink would resolve against the guest's root.
if [[ ! -d "$tmp/lib/modules/$ver" && -d "$tmp/usr/lib/modules/$ver" ]]; then
  mkdir -p "$tmp/lib"
  mv "$tmp/usr/lib/modules" "$tmp/lib/modules"
fi
depmod -b "$tmp" "$ver"
rm -rf "$out/root"
mv "$tmp" "$out/root"
# trixie: /boot/vmlinuz-<ver>; sid 7.x: /usr/lib/modules/<ver>/vmlinuz.
vmlinuz=
for f in "$out/root/boot/vmlinuz-$ver" "$out/root/lib/modules/$ver/vmlinuz"; do
  if [[ -f "$f" ]]; then vmlinuz="$f" && break; fi
done
[[ -n "$vmlinuz" ]] || {
  log "no vmlinuz-$ver in ${debs[*]}"
  exit 1
}
cp "$vmlinuz" "$out/vmlinuz"
echo "$ver" >"$out/version"
# Drop packages of older kernels; keep only what this one was built from.
for f in "$dl"/*.deb; do
  keep=
  for deb in "${debs[@]}"; do [[ "$f" == "$deb" ]] && keep=1; done
  [[ -n "$keep" ]] || rm -f "$f"
done
log "ready: $out (kernel $ver)"
echo "$ver"

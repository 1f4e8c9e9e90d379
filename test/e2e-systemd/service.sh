#!/usr/bin/env bash
# The systemd units, the udev rule and scripts/install.sh, run for real: what an admin does on a machine with
# systemd as PID 1, udev and ublk. Runs INSIDE the test VM booted with systemd (test/vm/run.sh --init systemd,
# whose root is the host's under a throw-away overlay), as root, from the checkout:
#
#   test/vm/run.sh --init systemd --suite trixie -- bash test/e2e-systemd/service.sh
#
# (test/vm/run-e2e.sh runs it after the primary suite.) Each step asserts; the first failure names the step,
# prints the unit's `systemctl status` and journal, and skips the rest (they build on it). Ends with one line
# `e2e-systemd-<kernel>: N passed, N failed`; exit 0 only if every step passed. Refuses to run anywhere but
# in that VM (it installs into /usr/local/bin and /etc).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NAME=data
UNIT="dmremap-ublk@$NAME.service"
LINK="/dev/dmremap/$NAME"
MNT=/mnt/dmremap-$NAME
MOUNT_UNIT="$(systemd-escape --path --suffix=mount "$MNT")"
DEV_UNIT="$(systemd-escape --path --suffix=device "$LINK")"
DMR=/usr/local/bin/dmremap-ublk
work=/tmp/dmremap-e2e-systemd
label="e2e-systemd-$(uname -r)"

if [[ ! -d /run/dmremap-vm || "$(cat /proc/1/comm 2>/dev/null)" != systemd ]]; then
  echo "service.sh: runs only inside the test VM booted with systemd (test/vm/run.sh --init systemd)" >&2
  echo "$label: 0 passed, 1 failed"
  exit 2
fi

passed=0
failed=0
current=""
t0=$(date +%s)

# fail MESSAGE: the step fails; what systemd knows of the device's unit is printed.
fail() {
  echo "FAIL [$current]: $*" >&2
  echo "--- systemctl status $UNIT" >&2
  systemctl status --no-pager -l "$UNIT" >&2 2>&1 | tail -n 30
  echo "--- journalctl -u $UNIT (last 40 lines)" >&2
  journalctl -u "$UNIT" --no-pager -n 40 -o short-monotonic >&2 2>&1
  return 1
}
# run CMD...: runs it, its output in $out; fails the step (with the output) if it exits non-zero or hangs
# (300 s: a hang is reported by step, not by the VM's timeout).
run() {
  out="$(timeout -k 5 300 "$@" 2>&1)"
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    fail "\`$*\` exited $rc: $out"
    return 1
  fi
}
# expect WHAT ACTUAL WANTED: equality.
expect() {
  [[ "$2" == "$3" ]] || { fail "$1: got '$2', expected '$3'"; return 1; }
}
# wait_for WHAT SECONDS CMD...: until CMD succeeds (polling, not a timed assertion: the limit only ends a hang).
wait_for() {
  local what="$1" limit="$2" end
  shift 2
  end=$(($(date +%s) + limit))
  while (($(date +%s) < end)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  "$@" >/dev/null 2>&1 && return 0
  fail "$what: not within ${limit}s"
}
prop() { systemctl show -p "$2" --value "$1"; }
unit_state() { echo "$(prop "$1" ActiveState)/$(prop "$1" SubState)"; }
ublk_nodes() { find /dev -maxdepth 1 -name 'ublk[bc][0-9]*' -printf '%f\n' | sort | tr '\n' ' '; }
file_sha() { sha256sum "$1" | cut -d' ' -f1; }
drop_caches() { sync && echo 3 >/proc/sys/vm/drop_caches; }

# ---- the steps ------------------------------------------------------------------------------------------------

step_install() {
  run bash "$repo/scripts/install.sh" || return 1
  echo "$out" | sed 's/^/  install.sh: /'
  [[ -d /sys/module/ublk_drv && -c /dev/ublk-control ]] || { fail "ublk_drv is not loaded after install.sh"; return 1; }
  expect "modules-load entry" "$(cat /etc/modules-load.d/dmremap-ublk.conf)" ublk_drv || return 1
  expect "$DMR" "$(readlink "$DMR")" "$repo/bin/dmremap-ublk.js" || return 1
  [[ -f /etc/udev/rules.d/90-dmremap-ublk.rules ]] || { fail "no udev rule installed"; return 1; }
  # Installed and read by systemd (daemon-reload): the instance's unit comes from the installed template.
  expect "the unit's file" "$(prop "$UNIT" FragmentPath)" /etc/systemd/system/dmremap-ublk@.service || return 1
  expect "the unit's ExecStart program" "$(prop "$UNIT" ExecStart | grep -o 'path=[^ ;]*')" "path=$(node -p process.execPath)" || return 1
  expect "dmremap-ublk.target" "$(systemctl is-enabled dmremap-ublk.target)" enabled || return 1
}

step_install_again() {
  run bash "$repo/scripts/install.sh" || return 1
  expect "the second run's last line" "$(echo "$out" | tail -n 1)" "nothing to do: everything was already installed" || return 1
  if echo "$out" | grep -E '^(doing|written)|: written$'; then fail "the second run changed something: $out"; return 1; fi
}

step_modules_load() {
  # The entry, not install.sh's modprobe, loads the module: unload it and let systemd-modules-load do it.
  run rmmod ublk_drv || return 1
  [[ ! -d /sys/module/ublk_drv ]] || { fail "ublk_drv still loaded after rmmod"; return 1; }
  run systemctl restart systemd-modules-load.service || return 1
  [[ -d /sys/module/ublk_drv ]] || { fail "systemd-modules-load did not load ublk_drv from /etc/modules-load.d/dmremap-ublk.conf"; return 1; }
  wait_for /dev/ublk-control 10 test -c /dev/ublk-control
}

step_disks() {
  # Two device-mapper disks over loop devices: udev gives them /dev/disk/by-id links, which the record keeps.
  mkdir -p "$work"
  run modprobe -a loop dm_mod ext4 || return 1
  truncate -s 64M "$work/main.img" && truncate -s 16M "$work/spare.img"
  local m s
  m="$(losetup -f --show "$work/main.img")" && s="$(losetup -f --show "$work/spare.img")" || { fail "losetup failed"; return 1; }
  run dmsetup create dmr-sd-main --uuid DMRSD-main --table "0 $((64 * 2048)) linear $m 0" || return 1
  run dmsetup create dmr-sd-spare --uuid DMRSD-spare --table "0 $((16 * 2048)) linear $s 0" || return 1
  wait_for "udev's by-id link of main" 30 test -e /dev/disk/by-id/dm-uuid-DMRSD-main
}

step_add_persist() {
  run "$DMR" add --main /dev/mapper/dmr-sd-main --spare /dev/mapper/dmr-sd-spare --name "$NAME" --persist || return 1
  echo "$out" | sed 's/^/  add: /'
  expect "the record's main" "$(node -e 'console.log(require(process.argv[1]).main.path)' "/etc/dmremap-ublk/devices.d/$NAME.json")" /dev/disk/by-id/dm-name-dmr-sd-main || return 1
  expect "the unit after add --persist" "$(systemctl is-enabled "$UNIT")" enabled || return 1
  # A device started by hand is not taken over by the unit: start fails with 73 and is not restarted.
  if systemctl start "$UNIT" 2>/dev/null; then fail "systemctl start took over a device added by hand"; return 1; fi
  expect "the refused start's exit status" "$(prop "$UNIT" ExecMainStatus)" 73 || return 1
  # down goes through the unit (enabled): it stops it (nothing runs) and deletes the device.
  run "$DMR" down "$NAME" || return 1
  [[ "$out" =~ ^$NAME:\ down\ /dev/ublkb[0-9]+$ ]] || { fail "down said: $out"; return 1; }
  expect "ublk devices after down" "$(ublk_nodes)" "" || return 1
  run systemctl reset-failed "$UNIT" || return 1
}

step_systemctl_start() {
  run systemctl start "$UNIT" || return 1
  expect "$UNIT" "$(unit_state "$UNIT")" active/running || return 1
  expect "Type" "$(prop "$UNIT" Type)" notify || return 1
  local pid status
  pid="$(prop "$UNIT" MainPID)"
  status="$(prop "$UNIT" StatusText)"
  [[ "$status" =~ ^serving\ /dev/ublkb[0-9]+\ \($NAME\) ]] || { fail "StatusText '$status'"; return 1; }
  # The unit's main process is the daemon serving the device (list's pid), no supervisor beside it.
  run "$DMR" list --json || return 1
  expect "list's pid of $NAME" "$(echo "$out" | node -e 'const l=JSON.parse(require("fs").readFileSync(0,"utf8")).find((e)=>e.name===process.argv[1]); console.log(`${l?.pid} ${l?.supervisorPid} ${l?.stableName}`)' "$NAME")" "$pid null $LINK" || return 1
  [[ -b "$LINK" ]] || { fail "$LINK is not a block device"; return 1; }
  # udev made the same link (the rule), so systemd has a device unit for it.
  wait_for "$DEV_UNIT" 30 systemctl is-active --quiet "$DEV_UNIT" || return 1
  expect "$DEV_UNIT's device" "$(prop "$DEV_UNIT" SysFSPath | sed 's,.*/,,')" "$(basename "$(readlink -f "$LINK")")" || return 1
}

step_fstab_mount() {
  run mkfs.ext4 -q -F "$LINK" || return 1
  mkdir -p "$MNT"
  echo "$LINK $MNT ext4 defaults,x-systemd.requires=$UNIT 0 2" >>/etc/fstab
  run systemctl daemon-reload || return 1
  prop "$MOUNT_UNIT" Requires | grep -qw "$UNIT" || { fail "$MOUNT_UNIT does not require $UNIT: $(prop "$MOUNT_UNIT" Requires)"; return 1; }
  run systemctl start "$MOUNT_UNIT" || return 1
  expect "mounted from" "$(findmnt -n -o SOURCE "$MNT")" "$(readlink -f "$LINK")" || return 1
  head -c 8M /dev/urandom >"$MNT/one" && sync || { fail "writing $MNT/one failed"; return 1; }
  sha_one="$(file_sha "$MNT/one")"
}

step_kill9() {
  local pid1 pid2 dev1
  pid1="$(prop "$UNIT" MainPID)"
  dev1="$(readlink -f "$LINK")"
  # With x-systemd.requires= (systemd 252) the automatic restart is a restart job, which restarts the
  # mount that requires the unit too: its umount then waits on the quiesced device, which only the restarted
  # daemon recovers, until systemd's stop timeouts give up (4.5 min measured). So the line that survives a
  # daemon crash orders the mount after the unit without requiring it (the enabled target pulls the unit in):
  # the README's line, with nofail and a device timeout longer than the unit's start timeout (180 s).
  run umount "$MNT" || return 1
  sed -i "s|defaults,x-systemd.requires=$UNIT|defaults,nofail,x-systemd.device-timeout=200s,x-systemd.after=$UNIT|" /etc/fstab
  run systemctl daemon-reload || return 1
  prop "$MOUNT_UNIT" After | grep -qw "$UNIT" || { fail "$MOUNT_UNIT is not ordered after $UNIT: $(prop "$MOUNT_UNIT" After)"; return 1; }
  ! prop "$MOUNT_UNIT" Requires | grep -qw "$UNIT" || { fail "$MOUNT_UNIT still requires $UNIT"; return 1; }
  run systemctl start "$MOUNT_UNIT" || return 1
  local journal_since mounted_at
  journal_since="$(date '+%Y-%m-%d %H:%M:%S')"
  mounted_at="$(prop "$MOUNT_UNIT" ActiveEnterTimestampMonotonic)"
  run kill -9 "$pid1" || return 1
  # systemd restarts the unit (Restart=on-failure, after 2 s) and its up --foreground recovers the device.
  wait_for "the unit to restart" 120 bash -c "[[ \$(systemctl show -p NRestarts --value $UNIT) == 1 && \$(systemctl show -p ActiveState --value $UNIT) == active ]]" || return 1
  journalctl -u "$UNIT" --since "$journal_since" -o short-monotonic | grep -v '"level":' | sed 's/^/  journal: /'
  pid2="$(prop "$UNIT" MainPID)"
  [[ "$pid2" != "$pid1" && "$pid2" != 0 ]] || { fail "MainPID $pid2 after the restart (was $pid1)"; return 1; }
  expect "the device after the restart" "$(readlink -f "$LINK")" "$dev1" || return 1
  journalctl -u "$UNIT" --since "$journal_since" -o cat | grep -q '"recovered":true.*"msg":"device live"' ||
    { fail "the journal has no 'device live' with recovered:true since the kill"; return 1; }
  # The mount never went away: the old file reads back (from the device, not the cache), a new one writes.
  expect "mounted after the restart" "$(findmnt -n -o SOURCE "$MNT")" "$dev1" || return 1
  expect "$MOUNT_UNIT after the restart" "$(unit_state "$MOUNT_UNIT")" active/mounted || return 1
  expect "$MOUNT_UNIT's last activation (not restarted with the unit)" "$(prop "$MOUNT_UNIT" ActiveEnterTimestampMonotonic)" "$mounted_at" || return 1
  drop_caches
  expect "sha256 of one after kill -9" "$(file_sha "$MNT/one")" "$sha_one" || return 1
  head -c 4M /dev/urandom >"$MNT/two" && sync || { fail "writing $MNT/two after the restart failed"; return 1; }
  sha_two="$(file_sha "$MNT/two")"
}

step_stop_start() {
  # The mount requires the unit (x-systemd.requires): stopping the unit unmounts it first, then the daemon
  # deletes the device on SIGTERM and exits 0.
  run systemctl stop "$UNIT" || return 1
  expect "$UNIT after stop" "$(unit_state "$UNIT")" inactive/dead || return 1
  expect "its exit status" "$(prop "$UNIT" ExecMainStatus)" 0 || return 1
  expect "$MOUNT_UNIT after stop" "$(prop "$MOUNT_UNIT" ActiveState)" inactive || return 1
  if findmnt "$MNT" >/dev/null; then fail "$MNT still mounted"; return 1; fi
  expect "ublk devices after stop" "$(ublk_nodes)" "" || return 1
  [[ ! -e "$LINK" ]] || { fail "$LINK left behind"; return 1; }
  # Starting the mount pulls the unit in again.
  run systemctl start "$MOUNT_UNIT" || return 1
  expect "$UNIT started by the mount" "$(unit_state "$UNIT")" active/running || return 1
  drop_caches
  expect "sha256 of one after stop/start" "$(file_sha "$MNT/one")" "$sha_one" || return 1
}

step_up_down() {
  # Mounted: down refuses before it stops the unit (which would delete the device under the mount).
  local refused rc
  refused="$(timeout -k 5 300 "$DMR" down "$NAME" 2>&1)"
  rc=$?
  expect "down's exit status while $MNT is mounted" "$rc" 1 || return 1
  expect "down said" "$refused" "$NAME: failed: $(readlink -f "$LINK") ($NAME) is mounted on $MNT; unmount it first, or use --force to delete it under its users" || return 1
  expect "$UNIT after the refused down" "$(unit_state "$UNIT")" active/running || return 1
  run umount "$MNT" || return 1
  # down and up of a device whose unit is enabled go through systemctl: the unit stops and starts.
  run "$DMR" down "$NAME" || return 1
  [[ "$out" =~ ^$NAME:\ down\ /dev/ublkb[0-9]+$ ]] || { fail "down said: $out"; return 1; }
  expect "$UNIT after down" "$(unit_state "$UNIT")" inactive/dead || return 1
  expect "ublk devices after down" "$(ublk_nodes)" "" || return 1
  run "$DMR" up "$NAME" || return 1
  [[ "$out" =~ ^$NAME:\ up\ /dev/ublkb[0-9]+$ ]] || { fail "up said: $out"; return 1; }
  expect "$UNIT after up" "$(unit_state "$UNIT")" active/running || return 1
  # up started no detached daemon (with its supervisor) beside the unit: the device's daemon is the unit's.
  run "$DMR" list --json || return 1
  expect "list's pid of $NAME after up" "$(echo "$out" | node -e 'const l=JSON.parse(require("fs").readFileSync(0,"utf8")).find((e)=>e.name===process.argv[1]); console.log(`${l?.pid} ${l?.supervisorPid}`)' "$NAME")" "$(prop "$UNIT" MainPID) null" || return 1
  run "$DMR" down "$NAME" || return 1
}

step_target() {
  expect "$UNIT" "$(systemctl is-enabled "$UNIT")" enabled || return 1
  run systemctl start dmremap-ublk.target || return 1
  wait_for "$UNIT started by dmremap-ublk.target" 60 bash -c "[[ \$(systemctl show -p ActiveState --value $UNIT) == active ]]" || return 1
  run systemctl start "$MOUNT_UNIT" || return 1
  drop_caches
  expect "sha256 of one via the target" "$(file_sha "$MNT/one")" "$sha_one" || return 1
}

step_journal() {
  # Under systemd the daemon logs to the journal (stderr), not to /var/log/dmremap-ublk/data.log: the file
  # holds the lines of the daemon add started by hand, and none of the unit's.
  local pid
  pid="$(prop "$UNIT" MainPID)"
  journalctl -u "$UNIT" -o cat _PID="$pid" | grep -q '"msg":"device live"' || { fail "no 'device live' of pid $pid in the journal"; return 1; }
  if grep -q "\"pid\":$pid," "/var/log/dmremap-ublk/$NAME.log" 2>/dev/null; then fail "the unit's daemon (pid $pid) wrote to /var/log/dmremap-ublk/$NAME.log"; return 1; fi
}

step_disable() {
  run "$DMR" disable "$NAME" || return 1
  expect "$UNIT after disable" "$(systemctl is-enabled "$UNIT" 2>/dev/null)" disabled || return 1
  [[ ! -e "/etc/dmremap-ublk/devices.d/$NAME.json" ]] || { fail "the record is still there"; return 1; }
  # The device keeps running until stopped.
  expect "$UNIT after disable" "$(unit_state "$UNIT")" active/running || return 1
  # A bare systemctl stop while $MNT is mounted (x-systemd.after= does not stop the mount first): the stop is
  # obeyed, with a warning naming the mount point; the device's removal takes the mount with it (BindsTo= on
  # its device unit), which lets the kernel finish deleting the device.
  local pid dev
  pid="$(prop "$UNIT" MainPID)"
  dev="$(readlink -f "$LINK")"
  expect "mounted before the stop" "$(findmnt -n -o SOURCE "$MNT")" "$dev" || return 1
  run systemctl stop "$UNIT" || return 1
  expect "ublk devices at the end" "$(ublk_nodes)" "" || return 1
  journalctl -u "$UNIT" -o cat _PID="$pid" | grep -qF "\"msg\":\"deleting $dev while mounted on $MNT: its file system loses its disk" ||
    { fail "no warning naming $MNT in the journal of pid $pid"; return 1; }
}

steps=(install install_again modules_load disks add_persist systemctl_start fstab_mount stop_start kill9 up_down target journal disable)
# DMREMAP_E2E_SYSTEMD_STEPS="install ... kill9" runs the first steps only (to look into one; later steps need
# the earlier ones).
if [[ -n "${DMREMAP_E2E_SYSTEMD_STEPS:-}" ]]; then read -r -a steps <<<"$DMREMAP_E2E_SYSTEMD_STEPS"; fi
for s in "${steps[@]}"; do
  current="$s"
  t=$(date +%s)
  echo "---- $s"
  if "step_$s"; then
    passed=$((passed + 1))
    echo "ok   $s ($(($(date +%s) - t)) s)"
  else
    failed=$((failed + 1))
    echo "FAIL $s ($(($(date +%s) - t)) s); the remaining steps are skipped"
    break
  fi
done
echo "systemd e2e: $(($(date +%s) - t0)) s"
echo "$label: $passed passed, $failed failed"
[[ $failed -eq 0 && $passed -eq ${#steps[@]} ]]

#!/usr/bin/env bash
# Runs INSIDE the test VM booted with `run.sh --init systemd`: the ExecStart of dmremap-vm.service, which
# dmremap-vm.target starts once systemd has reached basic.target. Runs the boot script run.sh wrote (the
# environment, then the command in its directory), writes the command's exit status to the control share
# and powers off at once (nothing in the VM is worth a clean shutdown: the root's changes live in a tmpfs).
set -u
ctl=/run/dmremap-vm
/bin/bash "$ctl/boot.sh"
status=$?
echo "$status" >"$ctl/status.tmp" && mv "$ctl/status.tmp" "$ctl/status"
sync
systemctl poweroff --force --force
# Not reached unless systemctl failed.
echo o >/proc/sysrq-trigger

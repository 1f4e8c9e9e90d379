#!/usr/bin/env bash
# Where a refused `add` spends its time, inside the VM (run as root):
#   test/vm/run.sh -- bash test/vm/timing/refusal.sh
set -u
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$repo"
BIN="$repo/bin/dmremap-ublk.js"
d="$(mktemp -d /tmp/refusal.XXXXXX)"
truncate -s 64M "$d/main.img"; truncate -s 32M "$d/spare.img"
main="$(losetup -f --show --direct-io=on "$d/main.img")"
spare="$(losetup -f --show --direct-io=on "$d/spare.img")"
mkfs.ext4 -q -F -L backup "$spare"
t() {
  local s=$EPOCHREALTIME
  "$@" >"$d/out" 2>"$d/err"
  local rc=$? e=$EPOCHREALTIME
  printf '%8.3f s  rc=%s  %s\n' "$(awk -v a="$s" -v b="$e" 'BEGIN{print b-a}')" "$rc" "$*"
}
echo "== whole commands"
t node -e 0
t node "$BIN" --version
t blkid -p -o export "$spare"
t blkid -p -o export -O 0 "$spare"
t sfdisk --json "$spare"
for i in 1 2 3; do t node "$BIN" add --main "$main" --spare "$spare" --json; done
cat "$d/err"
t node "$BIN" add --main "$main" --spare "$spare" --json --foreground
cat "$d/err"
echo "== the e2e test's own checks on the 32 MiB spare"
t node -e "require('crypto').createHash('sha256').update(require('fs').readFileSync('$spare')).digest('hex')"
t node -e "const fs=require('fs'); const a=fs.readFileSync('$spare'); if (!a.equals(fs.readFileSync('$spare'))) process.exit(1)"
t node -e "require('fs').readFileSync('$spare')"
echo "== in-process phases"
node test/vm/timing/phases.mjs "$main" "$spare"
echo "== strace of one refused add (execve, wait4, exit, and the first open of each module dir)"
strace -f -tt -e trace=execve,wait4,exit_group,openat -o "$d/strace" node "$BIN" add --main "$main" --spare "$spare" --json >/dev/null 2>&1
grep -v ENOENT "$d/strace" | grep -v 'resumed>' | grep -E 'execve|wait4|exit_group|\.node"|openat.*(dist/cli/(main|add)\.js|zod/index\.js|zod/v4/locales/zh-TW|pino/pino\.js|dist/device/(daemon|precheck)\.js|/dev/loop)' | head -40
echo "strace lines: $(wc -l <"$d/strace"), openat: $(grep -c openat "$d/strace")"
awk '{print $2}' "$d/strace" | head -1; awk '{print $2}' "$d/strace" | tail -1
losetup -d "$main" "$spare"
rm -rf "$d"

// `dmremap-ublk install-systemd [--prefix DIR] [--json]`: writes the systemd units (scripts/systemd/, with
// ExecStart running this installation) into /etc/systemd/system and the udev rule that gives systemd a device
// unit for /dev/dmremap/<name> into /etc/udev/rules.d; then, where systemd runs, `systemctl daemon-reload`,
// `udevadm control --reload` and enables dmremap-ublk.target. --prefix DIR installs under DIR instead (a
// root being prepared: DIR/etc/systemd/system, DIR/etc/udev/rules.d) and reloads nothing. Idempotent:
// unchanged files are left alone, and so are files an admin edited (systemd.ts unedited: each file written
// holds the hash of its text), one line each; --force replaces them.
import path from 'node:path';
import { DEFAULT_UDEV_DIR, DEFAULT_UNIT_DIR, installUnits, systemctl, udevDir, unitDir } from '../service/systemd.js';
import { printJson, PROG, type CliContext } from './context.js';
import type { InstallSystemdFlags } from './schemas.js';

export async function runInstallSystemd(ctx: CliContext, flags: InstallSystemdFlags): Promise<number> {
  const p = flags.prefix;
  const units = p === undefined ? unitDir(ctx.env) : path.join(p, DEFAULT_UNIT_DIR);
  const udev = p === undefined ? udevDir(ctx.env) : path.join(p, DEFAULT_UDEV_DIR);
  const ctl = systemctl(ctx.env);
  const r = installUnits(units, udev, ctl, p === undefined, undefined, flags.force);
  if (flags.json) {
    printJson(ctx, r);
    return 0;
  }
  for (const f of r.files) {
    if (f.action === 'kept') ctx.stdout.write(`${f.file}: kept: edited here (it differs from what install-systemd wrote); left as it is ("${PROG} install-systemd --force" replaces it)\n`);
    else ctx.stdout.write(`${f.file}: ${f.action}\n`);
  }
  let how: string;
  if (r.reloaded) how = `systemd reloaded, dmremap-ublk.target enabled; "${PROG} enable <name>" enables a device's unit`;
  else if (p !== undefined) how = `installed under ${p}: nothing reloaded`;
  else how = 'systemd is not running here: nothing reloaded ("systemctl daemon-reload" once it runs)';
  ctx.stdout.write(`${how}\n`);
  return 0;
}

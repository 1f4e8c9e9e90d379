// `dmremap-ublk install-systemd [--prefix DIR] [--json]`: writes the systemd units (scripts/systemd/, with
// ExecStart running this installation) into DIR (default /etc/systemd/system), then, where systemd runs,
// `systemctl daemon-reload` and enables dmremap-ublk.target. Idempotent: unchanged files are left alone.
import { installUnits, systemctl, unitDir } from '../service/systemd.js';
import { printJson, PROG, type CliContext } from './context.js';
import type { InstallSystemdFlags } from './schemas.js';

export async function runInstallSystemd(ctx: CliContext, flags: InstallSystemdFlags): Promise<number> {
  const r = installUnits(flags.prefix ?? unitDir(ctx.env), systemctl(ctx.env));
  if (flags.json) {
    printJson(ctx, r);
    return 0;
  }
  for (const f of r.files) ctx.stdout.write(`${f.file}: ${f.changed ? 'written' : 'unchanged'}\n`);
  ctx.stdout.write(
    r.reloaded
      ? `systemd reloaded, dmremap-ublk.target enabled; "${PROG} enable <name>" enables a device's unit\n`
      : `systemd is not running here: nothing reloaded ("systemctl daemon-reload" once it runs)\n`,
  );
  return 0;
}

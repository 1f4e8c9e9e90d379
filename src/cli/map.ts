// `dmremap-ublk map <device> --out FILE.svg|FILE.html [--json]`: asks the daemon for the surface model
// (scan_map), draws it (src/map/) and replaces FILE atomically; --json alone prints the model.
import { request } from '../control/client.js';
import { writeFileAtomic } from '../atomic-file.js';
import { renderHtml } from '../map/html.js';
import { renderSvg } from '../map/svg.js';
import { printJson, type CliContext } from './context.js';
import type { MapFlags } from './schemas.js';
import { liveEntry } from './status.js';

export async function runMap(ctx: CliContext, target: string, flags: MapFlags): Promise<number> {
  const sock = liveEntry(ctx, target).socket;
  const model = await request(sock, 'scan_map', {});
  if (flags.out === undefined) {
    printJson(ctx, model);
    return 0;
  }
  const { path, format } = flags.out;
  writeFileAtomic(path, format === 'svg' ? renderSvg(model) : renderHtml(model), { mode: 0o644, errorCode: 'E_OUTPUT' });
  if (flags.json) printJson(ctx, { out: path, format, regions: model.regions.length });
  else ctx.stdout.write(`${path}: ${format} surface map of ${model.device}, ${model.regions.length} regions\n`);
  return 0;
}

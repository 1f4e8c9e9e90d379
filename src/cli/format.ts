// Human-readable output: sizes, durations, the list table and the status block. Paths, names and error
// texts in them come from outside: table cells and status lines have their control characters escaped.
import type { DeviceStatus } from '../control/protocol.js';
import { escapeControls } from '../terminal-text.js';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

export function formatDuration(seconds: number): string {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (d > 0) return `${d}d${h}h${m}m`;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/** Columns padded to their widest cell, two spaces apart; control characters in a cell are escaped. */
export function table(cells: string[][]): string {
  const rows = cells.map((r) => r.map(escapeControls));
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n') + '\n';
}

export function formatStatus(s: DeviceStatus): string {
  const lines: string[] = [];
  const title = s.name === null ? s.blockPath : `${s.blockPath} (${s.name})`;
  lines.push(`${title}: ${s.state}, device id ${s.devId}, daemon pid ${s.pid}, up ${formatDuration(s.uptimeSeconds)}`);
  for (const [role, b] of [['main', s.main], ['spare', s.spare]] as const) {
    const kind = b.isBlockDevice ? `block size ${b.logicalBlockSize}` : 'file';
    lines.push(`  ${role.padEnd(6)} ${b.path}  ${formatBytes(b.sizeBytes)}, ${kind}${b.rotational ? ', rotational' : ''}`);
  }
  lines.push(
    `  size   ${s.sizeBytes} bytes (${formatBytes(s.sizeBytes)}), block size ${s.blockSize}, ` +
      `${s.queues} queue(s) x depth ${s.depth}, max I/O ${s.maxIoBytes / 1024} KiB, discard ${s.discard ? 'on' : 'off'}`,
  );
  const io = s.io;
  const lat = io.latencyP50Us === null ? 'no latency samples' : `latency p50 <${io.latencyP50Us}us p99 <${io.latencyP99Us}us`;
  lines.push(
    `  io     reads ${io.reads} (${formatBytes(io.readBytes)}), writes ${io.writes} (${formatBytes(io.writeBytes)}), ` +
      `flushes ${io.flushes}, discards ${io.discards}, errors ${io.errors}, in flight ${io.inflight}; ${lat}`,
  );
  const e = s.ioErrors;
  if (e.total === 0) {
    lines.push('  errors none reported by the backing devices');
  } else {
    const byErrno = Object.entries(e.byErrno)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    lines.push(`  errors ${e.total} (main ${e.main}, spare ${e.spare}; ${byErrno})`);
    if (e.last) {
      const l = e.last;
      lines.push(`         last: ${l.op} on ${l.device} sector ${l.sector} +${l.sectors}: ${l.errno} at ${l.at}`);
    }
  }
  const h = s.health;
  const why = h.reasons[0]?.sentence ?? 'no new bad block and no error in the watch window';
  lines.push(`  health ${h.state}, score ${h.score}: ${why} (dmremap-ublk health ${s.name ?? s.blockPath})`);
  if (h.recordError !== null) lines.push(`         the saved health history cannot be used: ${h.recordError}`);
  const k = s.kernel;
  const feats = k.featuresKnown ? k.featureNames.join(' ') || 'none' : 'unknown (no GET_FEATURES)';
  lines.push(`  kernel features ${k.features}: ${feats}; ${k.opcodeEncoding} opcodes`);
  lines.push(
    `  device flags ${k.deviceFlags}: ${k.deviceFlagNames.join(' ') || 'none'}; ` +
      (k.zeroCopy ? 'zero copy' : `copy into ${k.fixedBuffers ? 'registered' : 'plain'} buffers`),
  );
  if (s.logFile !== null) lines.push(`  log    ${s.logFile}`);
  return lines.map(escapeControls).join('\n') + '\n';
}

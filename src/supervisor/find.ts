// Which supervisor runs a daemon: its parent process, if that is `dmremap-ublk supervise ...`.
import fs from 'node:fs';

/** The pid of the supervisor whose child `pid` is, or null (no such process, or a parent that is not one). */
export function supervisorOf(pid: number): number | null {
  try {
    const ppid = Number(/^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    if (!(ppid > 1)) return null;
    const argv = fs.readFileSync(`/proc/${ppid}/cmdline`, 'utf8').split('\0');
    return argv.includes('supervise') && argv.some((a) => a.endsWith('dmremap-ublk.js') || a.endsWith('dmremap-ublk')) ? ppid : null;
  } catch {
    return null;
  }
}

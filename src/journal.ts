// Whether output goes to the systemd journal (a daemon run by a service logs there instead of to a file).
import fs from 'node:fs';

/**
 * Whether this process's stderr is the systemd journal: JOURNAL_STREAM ("<dev>:<inode>", set by systemd for
 * a service whose output goes to the journal) names the very file stderr is. A child of such a service
 * inherits the variable with its stderr elsewhere (a pipe, a file), hence the comparison.
 */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (m === null) return false;
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1] as string) && st.ino === BigInt(m[2] as string);
  } catch {
    return false;
  }
}

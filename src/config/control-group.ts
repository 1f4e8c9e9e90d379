// The config file's `controlGroup`: the group whose members may use the read-only commands of every device's
// control socket (src/control/access.ts). A group name or a numeric gid; a name is resolved to its gid when a
// daemon starts (and checked by `config set`), and an unknown name is E_CONFIG there.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import * as z from 'zod';
import { DmrError, errorCodeOf } from '../errors.js';

/** The largest gid (2^32 - 2: (gid_t)-1 means "no change" to chown). */
export const MAX_GID = 0xffff_fffe;
/** A group name as shadow-utils accepts one (letters, digits, _ . -; not starting with - or a digit). */
export const GROUP_NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;

const CONTROL_GROUP_ERROR = `must be a group name or a gid (a whole number from 0 to ${MAX_GID})`;
export const controlGroupSchema = z.union(
  [
    z.number({ error: CONTROL_GROUP_ERROR }).int(CONTROL_GROUP_ERROR).min(0, CONTROL_GROUP_ERROR).max(MAX_GID, CONTROL_GROUP_ERROR),
    z.string({ error: CONTROL_GROUP_ERROR }).regex(GROUP_NAME_RE, CONTROL_GROUP_ERROR),
  ],
  { error: CONTROL_GROUP_ERROR },
);
export type ControlGroup = z.output<typeof controlGroupSchema>;

/** The value of `config set control_group X`: a gid when X is all digits, else a group name. */
export function parseControlGroup(s: string): ControlGroup {
  const value: unknown = /^\d+$/.test(s) ? Number(s) : s;
  const r = controlGroupSchema.safeParse(value);
  if (!r.success) throw new DmrError('E_USAGE', `control_group must be a group name or a gid (0 to ${MAX_GID}), got ${JSON.stringify(s)}`);
  return r.data;
}

/** Looks a group name up: its gid, or null when there is no such group. */
export type GroupLookup = (name: string) => number | null;

/** The system's group database through `getent group` (NSS: /etc/group, LDAP, ...); /etc/group without getent. */
export function systemGroupLookup(name: string): number | null {
  let line: string;
  try {
    line = execFileSync('getent', ['group', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 });
  } catch (e) {
    if (errorCodeOf(e) === 'ENOENT') return etcGroupLookup(fs.readFileSync('/etc/group', 'utf8'), name);
    // getent exits 2 for "no such key".
    if ((e as { status?: unknown }).status === 2) return null;
    throw new DmrError('E_CONFIG', `cannot look up group ${JSON.stringify(name)}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return gidOfGroupLine(line.split('\n')[0] ?? '', name);
}

/** The gid of `name` in the text of an /etc/group file, or null. */
export function etcGroupLookup(text: string, name: string): number | null {
  for (const line of text.split('\n')) {
    const gid = gidOfGroupLine(line, name);
    if (gid !== null) return gid;
  }
  return null;
}

function gidOfGroupLine(line: string, name: string): number | null {
  const f = line.split(':');
  if (f.length < 3 || f[0] !== name || !/^\d+$/.test(f[2] ?? '')) return null;
  const gid = Number(f[2]);
  return gid <= MAX_GID ? gid : null;
}

/**
 * The control group's gid: the number as it is, a name looked up (E_CONFIG naming the file when there is no
 * such group); null when none is configured.
 */
export function resolveControlGroup(group: ControlGroup | undefined, file: string, lookup: GroupLookup = systemGroupLookup): number | null {
  if (group === undefined) return null;
  if (typeof group === 'number') return group;
  const gid = lookup(group);
  if (gid === null) throw new DmrError('E_CONFIG', `${file}: controlGroup: no group named ${JSON.stringify(group)} (give its gid instead if it is not in the group database)`);
  return gid;
}

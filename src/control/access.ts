// Who may use the control socket, decided on the peer's credentials as the kernel recorded them at connect
// (SO_PEERCRED and SO_PEERGROUPS, through the addon): root and the daemon's own user may do everything; a
// member of the configured control group (its primary group or a supplementary one) only the read-only
// commands (COMMAND_ACCESS in protocol.ts); anyone else is refused at connect.
import type net from 'node:net';
import { DmrError } from '../errors.js';
import { isNativeError, type PeerCred } from '../native.js';
import { COMMAND_ACCESS, READ_ONLY_COMMANDS, type Command } from './protocol.js';

/** What a connected peer may do: everything, or the read-only commands. */
export type PeerAccess = 'admin' | 'read';

export interface AccessPolicy {
  /** The addon's peerCred (the fake's in unit tests). */
  peerCred: (fd: number) => PeerCred;
  /** The daemon's effective uid: treated like root (tests run the daemon as an ordinary user). */
  ownUid: number;
  /** The control group's gid, or null when none is configured (then only root and ownUid get in). */
  controlGid: number | null;
}

/**
 * The file descriptor of a connected unix socket, from libuv's handle (Node has no public accessor).
 * Throws E_PERMISSION when there is none to be had: the peer is then not let in (fail closed).
 */
export function socketFd(sock: net.Socket): number {
  const handle = (sock as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new DmrError('E_PERMISSION', 'cannot tell who is connected (the socket has no file descriptor): refused');
  }
  return fd;
}

/** The access of a peer with `cred` under `policy`, or null when it may not connect. */
export function accessOf(cred: PeerCred, policy: Pick<AccessPolicy, 'ownUid' | 'controlGid'>): PeerAccess | null {
  if (cred.uid === 0 || cred.uid === policy.ownUid) return 'admin';
  const gid = policy.controlGid;
  if (gid !== null && (cred.gid === gid || cred.groups.includes(gid))) return 'read';
  return null;
}

/**
 * Checks the peer of a freshly accepted connection: its access, or E_PERMISSION with the one line the peer is
 * told (the connection is then closed). Any failure to read the credentials refuses the peer.
 */
export function checkPeer(sock: net.Socket, policy: AccessPolicy): { access: PeerAccess; cred: PeerCred } {
  const fd = socketFd(sock);
  let cred: PeerCred;
  try {
    cred = policy.peerCred(fd);
  } catch (e) {
    const why = isNativeError(e) ? e.code : e instanceof Error ? e.message : String(e);
    throw new DmrError('E_PERMISSION', `cannot read the peer's credentials (${why}): refused`, { cause: e });
  }
  const access = accessOf(cred, policy);
  if (access === null) {
    const group = policy.controlGid === null ? 'no control group is configured' : `nor in the control group (gid ${policy.controlGid})`;
    throw new DmrError('E_PERMISSION', `uid ${cred.uid} may not use this control socket: not root${policy.controlGid === null ? ` (${group})` : `, ${group}`}`);
  }
  return { access, cred };
}

/** E_PERMISSION for a command a read-only peer may not send; null when it may. */
export function commandRefusal(access: PeerAccess, cmd: Command): DmrError | null {
  if (access === 'admin' || COMMAND_ACCESS[cmd] === 'read') return null;
  return new DmrError('E_PERMISSION', `${cmd} needs root: the control group may use only ${READ_ONLY_COMMANDS.join(', ')}`);
}

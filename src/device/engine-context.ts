// What the parts of the remap engine share (remap-engine.ts holds them together): the store, the mirror the
// data path sees, the attached device, and a few helpers. Each part runs on the JS thread, inside the
// engine's one-at-a-time chain.
import { DmrError, errorCodeOf } from '../errors.js';
import type { NativeDevice } from '../native.js';
import { isNativeError } from '../native.js';
import type { Logger } from '../log.js';
import type { RemapStore } from '../remap/index.js';
import type { RemapMirror } from './remap-mirror.js';

export type { FaultItem, RecheckResult, RemapResult, SlotWrite, TableEntryOut, VerifyResult } from './remap-engine.js';

export interface EngineContext {
  readonly store: RemapStore;
  readonly blockSize: 512 | 4096;
  readonly log: Logger;
  /** The table as published to the data path, with the blocks being moved and the writes being redirected. */
  readonly mirror: RemapMirror;
  /** The attached native device; E_INTERNAL before attach. */
  dev(): NativeDevice;
  /** A commit just persisted the error counters too. */
  countersPersisted(): void;
  /** The first 512-byte sector of `block`. */
  sectorOf(block: number): number;
  /** Whether main is in an outage now, a write outage included (the auto-remapper's detectors say so). */
  outageActive(): boolean;
  /** Whether main does not answer reads now (a device outage, not a write outage): manual remaps are refused. */
  readOutageActive(): boolean;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A backing read failed (not the write half of a copy). */
export function isReadFailure(e: unknown): boolean {
  return isNativeError(e) && e.command.startsWith('read');
}

/** `e` as a DmrError E_IO saying what was being done. */
export function ioFailure(e: unknown, doing: string): DmrError {
  if (e instanceof DmrError) return e;
  const code = errorCodeOf(e);
  const msg = e instanceof Error ? e.message : String(e);
  return new DmrError('E_IO', `${doing}: ${msg}${code !== undefined && !msg.includes(code) ? ` (${code})` : ''}`, { cause: e });
}

/** The refusal of an operation that would read main to decide, while main is in an outage. */
export function outageRefusal(what: 'remap' | 'recheck' | 'verify'): DmrError {
  return new DmrError('E_OUTAGE', `${what} refused: main is in an outage (it does not answer); try again once it ends`);
}

/** Reserves a slot for `block`; on failure (E_SPARE_FULL, ...) records the error in `out` and gives null. */
export async function reserveFor(c: EngineContext, block: number, out: Map<number, DmrError | null>): Promise<number | null> {
  try {
    return await c.store.reserveSlot();
  } catch (err) {
    out.set(block, err instanceof DmrError ? err : ioFailure(err, 'reserving a spare slot failed'));
    return null;
  }
}

// The remap engine's public surface: the table and allocator the daemon reads, the store that persists
// them on the spare, the durability-order helpers, and the block I/O the store runs on.
export { RemapTable, MAX_ERROR_COUNT, type RemapEntry, type EntryState, type EntryOrigin, type TableCounts, type SortedTable } from './table.js';
export { SlotAllocator } from './allocator.js';
export { computeGeometry, slotOffset, type Geometry, DEFAULT_JOURNAL_RECORDS } from './geometry.js';
export { type RemapOp, type ResolvedOp, type PersistentCounters, COUNTER_NAMES } from './state.js';
export {
  RemapStore,
  mainFingerprint,
  type CommittedOp,
  type MainIdentity,
  type OpenOptions,
  type OpenResult,
  type LoadReport,
} from './store.js';
export { remapBlock, writeLostBlock, unremapBlock, type CopyToSlot, type WriteToSlot, type CopyToMain } from './durability.js';
export { FileSpareIo, type SpareIo } from './io.js';
export { MAX_OPS_PER_RECORD, FORMAT_VERSION } from './format.js';
export { crc32c } from './crc32c.js';

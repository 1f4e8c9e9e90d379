// The control socket's protocol: newline-delimited JSON, one request per line, one response per request.
//
//   → {"id":1,"cmd":"ping"}              ← {"id":1,"ok":true,"result":"pong"}
//   → {"id":2,"cmd":"status"}            ← {"id":2,"ok":true,"result":{...DeviceStatus}}
//   → {"id":3,"cmd":"shutdown"}          ← {"id":3,"ok":true,"result":{"stopping":true}}
//   → {"id":4,"cmd":"remap","sector":1234}     ← {"id":4,"ok":true,"result":{"sector":1234,"block":154,"slot":0,"state":"mapped",...}}
//   → {"id":5,"cmd":"unremap","sector":1234}   ← {"id":5,"ok":true,"result":{"sector":1234,"block":154,"slot":0}}
//   → {"id":6,"cmd":"verify","sector":1234}    ← {"id":6,"ok":true,"result":{"state":"mapped","device":"spare","readable":true,...}}
//   → {"id":7,"cmd":"table","offset":0,"limit":1000}  ← {"id":7,"ok":true,"result":{"total":1,"offset":0,"entries":[...]}}
//   → {"id":8,"cmd":"message","words":["remap","1234"]} ← {"id":8,"ok":true,"result":{"reply":"..."}}
//   → {"id":9,"cmd":"stats"}             ← {"id":9,"ok":true,"result":{...Stats}}
//   → {"id":10,"cmd":"set_auto_remap","enabled":false}  ← {"id":10,"ok":true,"result":{"autoRemap":false}}
//   → {"id":11,"cmd":"clear_stats"}      ← {"id":11,"ok":true,"result":{"cleared":true}}
//   → {"id":12,"cmd":"recheck","sectors":[1234]}  ← {"id":12,"ok":true,"result":{"checked":1,"recovered":1,...}}
//   → {"id":13,"cmd":"restart"}         ← {"id":13,"ok":true,"result":{"restarting":true,"supervised":true}}
//   → {"id":14,"cmd":"scan_read","offset":0,"bytes":1048576}  ← {"id":14,"ok":true,"result":{"offset":0,"bytes":1048576,"segments":[...]}}
//   → {"id":15,"cmd":"scan"}            ← {"id":15,"ok":true,"result":{"state":"running","progress":42,...ScanStatus}}
//   → {"id":16,"cmd":"scan_start","rateMib":32}  ← {"id":16,"ok":true,"result":{...ScanStatus}} (also scan_pause, scan_resume, scan_stop)
//   → {"id":17,"cmd":"scan_map"}        ← {"id":17,"ok":true,"result":{...SurfaceModel: the regions and their block counts}}
//   → {"id":18,"cmd":"health","history":true}  ← {"id":18,"ok":true,"result":{"state":"watch","score":84,"reasons":[...],"history":[...]}}
//   → {"id":19,"cmd":"health_reset"}    ← {"id":19,"ok":true,"result":{...the new series' health}}
//   → {"id":20,"cmd":"watch"}          ← {"id":20,"ok":true,"result":{"watching":true}}, then one device event per line
//                                          ({"type":"remap",...}, src/device/device-events.ts) until either side closes;
//                                          the connection takes no more requests (each gets one E_PROTOCOL error line)
//   → anything else                      ← {"id":<n|null>,"ok":false,"error":{"code":"E_PROTOCOL","message":"..."}}
//
// Adding a command is one request schema in `requestSchema`, one result schema in `resultSchemas`, and one
// handler (the Handlers type makes the compiler ask for it).
import * as z from 'zod';
import type { HealthState, HealthSignal } from '../health/assess.js';
import type { CountField } from '../health/series.js';

export const MAX_REQUEST_LINE_BYTES = 64 * 1024;

const requestId = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const pingRequest = z.strictObject({ id: requestId, cmd: z.literal('ping') });
export const statusRequest = z.strictObject({ id: requestId, cmd: z.literal('status') });
export const shutdownRequest = z.strictObject({ id: requestId, cmd: z.literal('shutdown') });
/** Detach (the device stays quiesced) and exit RESTART_EXIT_CODE, for a successor to recover the device. */
export const restartRequest = z.strictObject({ id: requestId, cmd: z.literal('restart') });

/** A 512-byte sector of the device (the remap unit is the block holding it). */
const sector = z.number({ error: 'sector must be a number' }).int('sector must be a whole number').nonnegative('sector must not be negative').max(Number.MAX_SAFE_INTEGER);
export const DEFAULT_TABLE_LIMIT = 1000;
export const MAX_TABLE_LIMIT = 100_000;

export const remapRequest = z.strictObject({ id: requestId, cmd: z.literal('remap'), sector });
export const unremapRequest = z.strictObject({ id: requestId, cmd: z.literal('unremap'), sector });
export const verifyRequest = z.strictObject({ id: requestId, cmd: z.literal('verify'), sector });
export const tableRequest = z.strictObject({
  id: requestId,
  cmd: z.literal('table'),
  offset: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
  limit: z.number().int().min(1).max(MAX_TABLE_LIMIT).optional(),
});
export const statsRequest = z.strictObject({ id: requestId, cmd: z.literal('stats') });
export const clearStatsRequest = z.strictObject({ id: requestId, cmd: z.literal('clear_stats') });
export const setAutoRemapRequest = z.strictObject({ id: requestId, cmd: z.literal('set_auto_remap'), enabled: z.boolean() });
/** Re-read lost blocks on main: those holding `sectors`, or every lost block when absent. */
export const MAX_RECHECK_SECTORS = 4096;
export const recheckRequest = z.strictObject({
  id: requestId,
  cmd: z.literal('recheck'),
  sectors: z.array(sector).min(1, 'sectors must not be empty (leave it out to recheck every lost block)').max(MAX_RECHECK_SECTORS).optional(),
});
/** dmsetup-message style: "remap 1234", "unremap 1234", "verify 1234", "table [offset [limit]]", "status", "ping". */
export const messageRequest = z.strictObject({
  id: requestId,
  cmd: z.literal('message'),
  words: z.array(z.string().max(256)).min(1, 'message must not be empty').max(16),
});

/** Most bytes one scan_read reads (native's limit of one scanRead). */
export const MAX_SCAN_READ_BYTES = 16 << 20;
/**
 * Debug (the e2e tests use it): one scanner read of [offset, offset + bytes) through native's scanRead (whole
 * blocks inside the device); `narrow`: one read per block. Changes nothing, decides nothing, is not
 * rate-limited; while it runs the background scan's reads are refused (one scan read per device) and retried.
 */
export const scanReadRequest = z.strictObject({
  id: requestId,
  cmd: z.literal('scan_read'),
  offset: z.number({ error: 'offset must be a number' }).int('offset must be a whole number').nonnegative('offset must not be negative').max(Number.MAX_SAFE_INTEGER),
  bytes: z.number({ error: 'bytes must be a number' }).int('bytes must be a whole number').min(1, 'bytes must be at least 1').max(MAX_SCAN_READ_BYTES, `bytes must be at most ${MAX_SCAN_READ_BYTES}`),
  narrow: z.boolean().optional(),
});

/** The background scan's status (issue 13). */
export const scanRequest = z.strictObject({ id: requestId, cmd: z.literal('scan') });
/**
 * A new pass from byte 0 (refused, E_SCAN_STATE, while one runs or is paused). `rateMib`: this pass's
 * ceiling in MiB/s instead of scan_rate_mib; a number outside 0.01..1048576 (MIN_SCAN_RATE_MIB, MAX_SCAN_RATE_MIB
 * of src/scan/settings.ts) is E_USAGE (checked by the handler,
 * so the refusal names the rate), anything but a number E_PROTOCOL.
 */
export const scanStartRequest = z.strictObject({
  id: requestId,
  cmd: z.literal('scan_start'),
  rateMib: z.number({ error: 'rateMib must be a number' }).optional(),
});
export const scanPauseRequest = z.strictObject({ id: requestId, cmd: z.literal('scan_pause') });
export const scanResumeRequest = z.strictObject({ id: requestId, cmd: z.literal('scan_resume') });
export const scanStopRequest = z.strictObject({ id: requestId, cmd: z.literal('scan_stop') });
/** The surface map's data (src/map/): the scan's region record, with block counts taken from the remap table now. */
export const scanMapRequest = z.strictObject({ id: requestId, cmd: z.literal('scan_map') });

/** The health model's assessment (issue 14); `history`: the series day by day as well. */
export const healthRequest = z.strictObject({ id: requestId, cmd: z.literal('health'), history: z.boolean().optional() });
/** Starts a new health series (the old one, or a file that could not be used, is replaced). */
export const healthResetRequest = z.strictObject({ id: requestId, cmd: z.literal('health_reset') });

/**
 * Turns the connection into a stream of the device's events (DeviceEvent, one JSON line each) after the
 * reply; it takes no more requests, has no idle timeout, and ends when the client closes it or the daemon
 * stops. A watcher that reads too slowly loses events and is told how many ({"type":"missed","count":N}).
 */
export const watchRequest = z.strictObject({ id: requestId, cmd: z.literal('watch') });

export const requestSchema = z.discriminatedUnion('cmd', [
  pingRequest,
  statusRequest,
  shutdownRequest,
  restartRequest,
  remapRequest,
  unremapRequest,
  verifyRequest,
  tableRequest,
  messageRequest,
  statsRequest,
  clearStatsRequest,
  setAutoRemapRequest,
  recheckRequest,
  scanReadRequest,
  scanRequest,
  scanStartRequest,
  scanPauseRequest,
  scanResumeRequest,
  scanStopRequest,
  scanMapRequest,
  healthRequest,
  healthResetRequest,
  watchRequest,
]);
export type Request = z.infer<typeof requestSchema>;
export type Command = Request['cmd'];
export type RequestOf<C extends Command> = Extract<Request, { cmd: C }>;
export const COMMANDS: readonly Command[] = requestSchema.options.map((o) => o.shape.cmd.value);

/**
 * Who may send each command (src/control/access.ts): `read` commands change nothing and are open to the
 * configured controlGroup as well as to root; `admin` ones only to root (and the daemon's own user). Every
 * command is classified here (the type makes the compiler ask for a new one). `verify` reads one block;
 * `scan_read` (a debug read of up to 16 MiB that holds off the background scan) and `message` (which can
 * carry a remap) are admin.
 */
export const COMMAND_ACCESS = {
  ping: 'read',
  status: 'read',
  stats: 'read',
  health: 'read',
  table: 'read',
  verify: 'read',
  scan: 'read',
  scan_map: 'read',
  watch: 'read',
  shutdown: 'admin',
  restart: 'admin',
  remap: 'admin',
  unremap: 'admin',
  message: 'admin',
  clear_stats: 'admin',
  set_auto_remap: 'admin',
  recheck: 'admin',
  scan_read: 'admin',
  scan_start: 'admin',
  scan_pause: 'admin',
  scan_resume: 'admin',
  scan_stop: 'admin',
  health_reset: 'admin',
} as const satisfies Record<Command, 'read' | 'admin'>;
export type CommandAccess = (typeof COMMAND_ACCESS)[Command];
/** The commands a controlGroup member may send. */
export const READ_ONLY_COMMANDS: readonly Command[] = COMMANDS.filter((c) => COMMAND_ACCESS[c] === 'read');

const backingStatus = z.strictObject({
  path: z.string(),
  sizeBytes: z.number(),
  logicalBlockSize: z.number(),
  isBlockDevice: z.boolean(),
  rotational: z.boolean(),
});

const ioTotals = z.strictObject({
  reads: z.number(),
  writes: z.number(),
  flushes: z.number(),
  discards: z.number(),
  readBytes: z.number(),
  writeBytes: z.number(),
  errors: z.number(),
  inflight: z.number(),
  /** Upper bounds (µs) of the log2 latency buckets holding the 50th and 99th percentile; null before any I/O. */
  latencyP50Us: z.number().nullable(),
  latencyP99Us: z.number().nullable(),
  /**
   * The latency histogram of every request since start, all queues and operations together: element i counts
   * requests that took [2^i, 2^(i+1)) µs, the last element also every slower one. Absent from daemons older
   * than the exporter (issue 15).
   */
  latencyLog2Us: z.array(z.number()).optional(),
});

const ioErrorRecord = z.strictObject({
  at: z.string(),
  queue: z.number(),
  op: z.string(),
  device: z.enum(['main', 'spare']),
  sector: z.string(),
  sectors: z.number(),
  errno: z.string(),
});

const HEALTH_STATE_NAMES = ['healthy', 'watch', 'degraded', 'critical', 'failed'] as const satisfies readonly HealthState[];
export const healthStateSchema = z.enum(HEALTH_STATE_NAMES);
const HEALTH_SIGNAL_NAMES = [
  'new_bad_blocks', 'pending_blocks', 'read_errors', 'write_errors', 'recovered_reads', 'slow_ios', 'spare_write_errors',
  'spare_read_errors', 'outages', 'outage_now', 'lost_blocks', 'spare_used', 'spare_forecast', 'acceleration', 'cluster_growth',
] as const satisfies readonly HealthSignal[];
const HEALTH_COUNT_NAMES = [
  'badAuto', 'badScan', 'badManual', 'pending', 'readErrors', 'writeErrors', 'recoveredReads', 'slowIos', 'spareReadErrors',
  'spareWriteErrors', 'outages', 'outageSeconds',
] as const satisfies readonly CountField[];

/** The health model's judgement (src/health/assess.ts HealthAssessment) and the state of its series (docs/HEALTH.md). */
export const healthViewSchema = z.strictObject({
  state: healthStateSchema,
  score: z.number(),
  /** Worst first: each signal with its value, the points it takes off the score, the state it implies, a sentence. */
  reasons: z.array(
    z.strictObject({ signal: z.enum(HEALTH_SIGNAL_NAMES), value: z.number(), weight: z.number(), state: healthStateSchema, sentence: z.string() }),
  ),
  action: z.string(),
  forecast: z.strictObject({
    /** Seconds until the spare runs out at the current rate; null without enough data. */
    spareExhaustionSeconds: z.number().nullable(),
    range: z.tuple([z.number(), z.number()]).nullable(),
    acceleration: z.boolean(),
    ratePerDay: z.number(),
  }),
  /** The health file could not be used (left as it was; `health <dev> reset` replaces it); null when it could. */
  recordError: z.string().nullable(),
  /** When the series began (the device first added, or its health reset), ms since the epoch. */
  since: z.number(),
});
export type HealthView = z.infer<typeof healthViewSchema>;

/** One UTC day of the series (health --history): its counts and the last spare sample of the day. */
export const healthDaySchema = z.strictObject({
  day: z.string(),
  counts: z.strictObject(Object.fromEntries(HEALTH_COUNT_NAMES.map((f) => [f, z.number()])) as Record<CountField, z.ZodNumber>),
  spare: z.strictObject({ used: z.number(), slots: z.number(), lost: z.number() }).nullable(),
});
export type HealthDay = z.infer<typeof healthDaySchema>;

export const healthResultSchema = healthViewSchema.extend({
  device: z.string(),
  name: z.string().nullable(),
  /** With `history`: the days with events, oldest first. */
  history: z.array(healthDaySchema).optional(),
});
export type HealthResult = z.infer<typeof healthResultSchema>;

export const deviceStatusSchema = z.strictObject({
  devId: z.number().int(),
  name: z.string().nullable(),
  pid: z.number().int(),
  blockPath: z.string(),
  charPath: z.string(),
  state: z.string(),
  main: backingStatus,
  spare: backingStatus,
  sizeBytes: z.number(),
  blockSize: z.number(),
  queues: z.number(),
  depth: z.number(),
  maxIoBytes: z.number(),
  discard: z.boolean(),
  startedAt: z.string(),
  uptimeSeconds: z.number(),
  io: ioTotals,
  perQueue: z.array(
    z.strictObject({ queue: z.number(), reads: z.number(), writes: z.number(), errors: z.number(), inflight: z.number() }),
  ),
  ioErrors: z.strictObject({
    total: z.number(),
    main: z.number(),
    spare: z.number(),
    byErrno: z.record(z.string(), z.number()),
    last: ioErrorRecord.nullable(),
    /** Discard pieces main refused or failed; their requests succeeded, so they are not counted above. */
    discardsRefused: z.number(),
  }),
  kernel: z.strictObject({
    features: z.string(),
    featureNames: z.array(z.string()),
    featuresKnown: z.boolean(),
    opcodeEncoding: z.enum(['ioctl', 'legacy']),
    deviceFlags: z.string(),
    deviceFlagNames: z.array(z.string()),
    fixedBuffers: z.boolean(),
    zeroCopy: z.boolean(),
  }),
  logFile: z.string().nullable(),
  /** The health model's assessment: the status line's `health=` is its state. */
  health: healthViewSchema,
  remap: z.strictObject({
    /** The dm-remap v2.0 status line (see README). */
    line: z.string(),
    sectors: z.number(),
    slots: z.number(),
    /** Table entries (mapped + lost), lost entries, slots not free (entries + retired + being filled). */
    remapped: z.number(),
    mapped: z.number(),
    lost: z.number(),
    used: z.number(),
    free: z.number(),
    retired: z.number(),
    /** The health model's state (`health` below has the whole assessment). */
    health: healthStateSchema,
    writeErrors: z.number(),
    readErrors: z.number(),
    autoRemaps: z.number(),
    manualRemaps: z.number(),
    /**
     * Of autoRemaps, those of origin scan (what the background scan found), ever; 0 on a spare of format
     * version 1 or 2, which stores scan remaps as auto. Absent from daemons older than this field (issue 15).
     */
    scanRemaps: z.number().optional(),
    unremaps: z.number(),
    scanPercent: z.number(),
    pairId: z.string(),
    spareOffset: z.number(),
    spareSize: z.number(),
    spareDataOffset: z.number(),
    journalUsed: z.number(),
    journalCapacity: z.number(),
    generation: z.number(),
  }),
});
export type DeviceStatus = z.infer<typeof deviceStatusSchema>;

/** The background scan (src/scan/scanner.ts ScanStatus); times are ms since the epoch. */
export const scanStatusSchema = z.strictObject({
  state: z.enum(['idle', 'running', 'paused', 'done']),
  /** Whole percent; 100 only when the pass is done, 0 when idle. */
  progress: z.number(),
  /** Bytes of the device the pass has read. */
  position: z.number(),
  deviceBytes: z.number(),
  /** The rate now, bytes/s (0 unless running). */
  rateBps: z.number(),
  startedAt: z.number().nullable(),
  /** The last finished pass's end. */
  finishedAt: z.number().nullable(),
  errorsFound: z.number(),
  slowFound: z.number(),
  /** Seconds left at the rate now; null unless running. */
  etaSeconds: z.number().nullable(),
  pass: z.number(),
});
export type ScanStatusResult = z.infer<typeof scanStatusSchema>;

const count = z.number().int().nonnegative();
/** One region of the surface (src/scan/regions.ts RegionView); the block counts are src/map/surface.ts's. */
export const surfaceRegionSchema = z.strictObject({
  index: count,
  /** First byte of the region and one past its last. */
  start: count,
  end: count,
  /** Reads of the current pass per latency bin: <5, <20, <50, <150, <500, >=500 ms, error. */
  bins: z.array(count).length(7),
  /** Blocks served from the spare with their data (state mapped, any origin). */
  remapped: count,
  /** Blocks whose data is lost: reads fail until written (state lost, any origin). */
  pending: count,
  /** Of the remapped ones, those the error policy or the scan moved (origin auto or scan). */
  relocated: count,
  /** The highest bin with a read (6: an error), null when nothing was read in this pass. */
  worstBin: z.number().int().min(0).max(6).nullable(),
});
/** What the surface map draws (src/map/): the device, the scan's status, and every region in order. */
export const surfaceModelSchema = z.strictObject({
  /** The exported device (/dev/ublkbN) and its name. */
  device: z.string(),
  name: z.string().nullable(),
  deviceBytes: count,
  blockSize: count,
  regionBytes: count,
  /** When the daemon answered, ms since the epoch. */
  generatedAt: count,
  scan: scanStatusSchema,
  regions: z.array(surfaceRegionSchema),
});
export type SurfaceModel = z.infer<typeof surfaceModelSchema>;
export type SurfaceRegion = z.infer<typeof surfaceRegionSchema>;

const n = z.number();
/** Error handling statistics (issue 6); README documents every field. */
export const statsSchema = z.strictObject({
  autoRemap: z.boolean(),
  policy: z.strictObject({ errorThreshold: n, readRetries: n, retryBackoffMs: n }),
  readErrors: n,
  writeErrors: n,
  retries: n,
  recoveredReads: n,
  unrecoveredReads: n,
  autoRemaps: n,
  manualRemaps: n,
  /** Of autoRemaps, those of origin scan, ever (see the status's remap.scanRemaps); absent from older daemons. */
  scanRemaps: n.optional(),
  relocations: n,
  relocationFailures: n,
  healedBlocks: n,
  redrivenWrites: n,
  recoveredBlocks: n,
  pendingBlocks: n,
  lostBlocks: n,
  spareIoErrors: n,
  retiredSlots: n,
  passedThrough: n,
  faultsParked: n,
  queue: z.strictObject({ queued: n, foreground: n, background: n, running: n, handled: n, batches: n, droppedBackground: n }),
  freeSlots: n,
  spareFull: z.boolean(),
  /** Device-wide outages of main (README, "Outages"). */
  outage: z.strictObject({ active: z.boolean(), since: n.nullable(), outages: n, held: n, heldTotal: n, failedAfterHold: n }),
  /**
   * Write outages of main (it refuses writes while it reads: README, "Outages"), and native's counts of
   * backing writes to main done whole and failed since the device started.
   */
  writeOutage: z.strictObject({
    active: z.boolean(), since: n.nullable(), outages: n, held: n, heldTotal: n, failedAfterHold: n, mainWritesOk: n, mainWritesFailed: n,
  }),
  health: healthStateSchema,
  /**
   * Reads slower than slow_io_ms: the background scan's and users' (userSlowReads of them), and blocks a
   * block-by-block re-read found slow (after either).
   */
  slowIos: n,
  slowBlocks: n,
  /** Chunks (or users' slow ranges) more than half of whose blocks read slowly, like the disk around or elsewhere: main slow as a whole there, no block counted. */
  slowChunks: n,
  /** Slow scan reads while users did I/O: not judged. */
  busySlowReads: n,
  /** Users' reads slower than slow_io_ms (counted in slowIos too); each is read again block by block once users are idle. */
  userSlowReads: n,
  /** Users' slow reads never read again (the queue of suspects was full, native's event limit, users never idle): not judged. */
  userSlowUnjudged: n,
});
export type Stats = z.infer<typeof statsSchema>;

export const resultSchemas = {
  ping: z.literal('pong'),
  status: deviceStatusSchema,
  shutdown: z.strictObject({ stopping: z.literal(true) }),
  /** supervised: a supervisor will start the successor; false: whoever asked must (`restart` runs `recover`). */
  restart: z.strictObject({ restarting: z.literal(true), supervised: z.boolean() }),
  remap: z.strictObject({
    sector: z.number(),
    block: z.number(),
    slot: z.number(),
    state: z.enum(['mapped', 'lost']),
    /** errno name of the main read that failed during the copy (the block is then lost), else null. */
    readErrno: z.string().nullable(),
  }),
  unremap: z.strictObject({ sector: z.number(), block: z.number(), slot: z.number() }),
  verify: z.strictObject({
    sector: z.number(),
    block: z.number(),
    state: z.enum(['unmapped', 'mapped', 'lost', 'moving']),
    device: z.enum(['main', 'spare']),
    slot: z.number().nullable(),
    offset: z.number(),
    readable: z.boolean(),
    errno: z.string().nullable(),
  }),
  table: z.strictObject({
    total: z.number(),
    offset: z.number(),
    entries: z.array(
      z.strictObject({
        block: z.number(),
        sector: z.number(),
        slot: z.number(),
        state: z.enum(['mapped', 'lost']),
        origin: z.enum(['manual', 'auto', 'scan']),
        time: z.number(),
        errorCount: z.number(),
      }),
    ),
  }),
  message: z.strictObject({ reply: z.string() }),
  stats: statsSchema,
  clear_stats: z.strictObject({ cleared: z.literal(true) }),
  set_auto_remap: z.strictObject({ autoRemap: z.boolean() }),
  recheck: z.strictObject({
    /** Lost blocks read on main. */
    checked: z.number(),
    /** Of those, blocks that read and are back on main (slot freed). */
    recovered: z.number(),
    /** Of those, blocks that still do not read (still lost). */
    unreadable: z.number(),
    /**
     * One per block (the first MAX_RECHECK_SECTORS): recovered, unreadable (errno), not-lost (given, but not
     * lost), main-stale (lost, but main's copy is not known to be its data: left lost).
     */
    blocks: z.array(
      z.strictObject({ sector: z.number(), block: z.number(), result: z.enum(['recovered', 'unreadable', 'not-lost', 'main-stale']), errno: z.string().nullable() }),
    ),
  }),
  scan_read: z.strictObject({
    offset: z.number(),
    bytes: z.number(),
    /** Bytes from offset the pieces cover: `bytes` unless native stopped early (`stopped`). */
    coveredBytes: z.number(),
    stopped: z.enum(['narrow_cap', 'failures']).nullable(),
    /** The remap table generation the oldest piece was planned against. */
    generation: z.number(),
    /** NativeDevice.scanRead's pieces, in block order, covering [offset, offset + coveredBytes) exactly. */
    segments: z.array(
      z.strictObject({
        device: z.enum(['main', 'spare']),
        block: z.number(),
        blocks: z.number(),
        skipped: z.enum(['moving', 'lost']).nullable(),
        latencyUs: z.number(),
        errno: z.number(),
      }),
    ),
  }),
  scan: scanStatusSchema,
  scan_start: scanStatusSchema,
  scan_pause: scanStatusSchema,
  scan_resume: scanStatusSchema,
  scan_stop: scanStatusSchema,
  scan_map: surfaceModelSchema,
  health: healthResultSchema,
  health_reset: healthResultSchema,
  watch: z.strictObject({ watching: z.literal(true) }),
} satisfies Record<Command, z.ZodType>;
export type ResultOf<C extends Command> = z.infer<(typeof resultSchemas)[C]>;

/** Commands answered by a handler; `watch` is the server's own (it needs the connection). */
export type HandledCommand = Exclude<Command, 'watch'>;
export type Handlers = { [C in HandledCommand]: (req: RequestOf<C>) => Promise<ResultOf<C>> | ResultOf<C> };

export const errorBody = z.strictObject({ code: z.string(), message: z.string() });
export const okResponse = z.strictObject({ id: requestId, ok: z.literal(true), result: z.unknown() });
export const errorResponse = z.strictObject({ id: requestId.nullable(), ok: z.literal(false), error: errorBody });
export const responseSchema = z.discriminatedUnion('ok', [okResponse, errorResponse]);
export type Response = z.infer<typeof responseSchema>;

/** One line describing why a zod parse failed ("cmd: Invalid input; id: expected number"). */
export function describeIssues(err: z.ZodError): string {
  return err.issues.map((i) => `${i.path.length ? i.path.join('.') : 'request'}: ${i.message}`).join('; ');
}

export type ParsedRequest = { ok: true; request: Request } | { ok: false; id: number | null; message: string };

/** Parses one request line. Never throws: every malformed line yields a message for an E_PROTOCOL reply. */
export function parseRequestLine(line: string): ParsedRequest {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { ok: false, id: null, message: 'request is not valid JSON' };
  }
  const id =
    typeof raw === 'object' && raw !== null && requestId.safeParse((raw as { id?: unknown }).id).success
      ? ((raw as { id: number }).id as number)
      : null;
  const cmd = typeof raw === 'object' && raw !== null ? (raw as { cmd?: unknown }).cmd : undefined;
  if (typeof cmd === 'string' && !(COMMANDS as readonly string[]).includes(cmd)) {
    return { ok: false, id, message: `unknown command ${JSON.stringify(cmd)} (known: ${COMMANDS.join(', ')})` };
  }
  const parsed = requestSchema.safeParse(raw);
  if (!parsed.success) return { ok: false, id, message: `invalid request: ${describeIssues(parsed.error)}` };
  return { ok: true, request: parsed.data };
}

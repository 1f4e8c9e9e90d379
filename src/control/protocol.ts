// The control socket's protocol: newline-delimited JSON, one request per line, one response per request.
//
//   → {"id":1,"cmd":"ping"}              ← {"id":1,"ok":true,"result":"pong"}
//   → {"id":2,"cmd":"status"}            ← {"id":2,"ok":true,"result":{...DeviceStatus}}
//   → {"id":3,"cmd":"shutdown"}          ← {"id":3,"ok":true,"result":{"stopping":true}}
//   → anything else                      ← {"id":<n|null>,"ok":false,"error":{"code":"E_PROTOCOL","message":"..."}}
//
// Adding a command is one request schema in `requestSchema`, one result schema in `resultSchemas`, and one
// handler (the Handlers type makes the compiler ask for it).
import { z } from 'zod';

export const MAX_REQUEST_LINE_BYTES = 64 * 1024;

const requestId = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const pingRequest = z.strictObject({ id: requestId, cmd: z.literal('ping') });
export const statusRequest = z.strictObject({ id: requestId, cmd: z.literal('status') });
export const shutdownRequest = z.strictObject({ id: requestId, cmd: z.literal('shutdown') });

export const requestSchema = z.discriminatedUnion('cmd', [pingRequest, statusRequest, shutdownRequest]);
export type Request = z.infer<typeof requestSchema>;
export type Command = Request['cmd'];
export type RequestOf<C extends Command> = Extract<Request, { cmd: C }>;
export const COMMANDS: readonly Command[] = requestSchema.options.map((o) => o.shape.cmd.value);

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
});
export type DeviceStatus = z.infer<typeof deviceStatusSchema>;

export const resultSchemas = {
  ping: z.literal('pong'),
  status: deviceStatusSchema,
  shutdown: z.strictObject({ stopping: z.literal(true) }),
} satisfies Record<Command, z.ZodType>;
export type ResultOf<C extends Command> = z.infer<(typeof resultSchemas)[C]>;

export type Handlers = { [C in Command]: (req: RequestOf<C>) => Promise<ResultOf<C>> | ResultOf<C> };

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

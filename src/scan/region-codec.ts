// The persisted form of the region record: a framed record (record-frame.ts), magic "DMRSREG1", version 1.
// Payload, little-endian:
//
//   offset  size  field
//   0       8     deviceBytes (u64)
//   8       8     regionBytes (u64): must be regionBytesFor(deviceBytes)
//   16      4     region count (u32): must be ceil(deviceBytes / regionBytes)
//   20      4     fields per region (u32): 10 (7 latency bins, remapped, pending, relocated)
//   24      ...   count x 10 values, each an unsigned LEB128 varint of at most 5 bytes (a u32)
//
// Varints keep it compact: a region's zero fields take a byte each, so a 1 TiB device after a clean pass of
// 1 MiB reads (256 reads per region) takes 11 bytes per region, 45 KiB; the bound is 5 bytes per field,
// 200 KiB for 4096 regions. The payload must be consumed exactly.
import { frameRecord, FRAME_HEADER_BYTES, FRAME_TRAILER_BYTES, ScanRecordError, unframeRecord } from './record-frame.js';
import { FIELDS_PER_REGION, MAX_REGIONS, RegionRecord, regionBytesFor } from './regions.js';

export const REGIONS_MAGIC = 'DMRSREG1';
export const REGIONS_VERSION = 1;
const HEADER_BYTES = 24;
const MAX_VARINT_BYTES = 5;

/** The largest encoded region record (any device): the frame, the header, 5 bytes per field. */
export const MAX_REGIONS_RECORD_BYTES = FRAME_HEADER_BYTES + HEADER_BYTES + MAX_REGIONS * FIELDS_PER_REGION * MAX_VARINT_BYTES + FRAME_TRAILER_BYTES;

const WHAT = 'scan region record';

export function encodeRegions(r: RegionRecord): Buffer {
  const out = Buffer.alloc(HEADER_BYTES + r.fields.length * MAX_VARINT_BYTES);
  out.writeBigUInt64LE(BigInt(r.deviceBytes), 0);
  out.writeBigUInt64LE(BigInt(r.regionBytes), 8);
  out.writeUInt32LE(r.count, 16);
  out.writeUInt32LE(FIELDS_PER_REGION, 20);
  let at = HEADER_BYTES;
  for (const value of r.fields) {
    let v = value;
    while (v >= 0x80) {
      out[at++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    out[at++] = v;
  }
  return frameRecord(REGIONS_MAGIC, REGIONS_VERSION, out.subarray(0, at));
}

const invalid = (what: string): ScanRecordError => new ScanRecordError('invalid', `${WHAT}: ${what}`);

/** The region record in `buf`; ScanRecordError (E_SCAN_RECORD) when it is short, corrupt, of another version or invalid. */
export function decodeRegions(buf: Uint8Array): RegionRecord {
  const p = unframeRecord(buf, REGIONS_MAGIC, REGIONS_VERSION, WHAT);
  if (p.length < HEADER_BYTES) throw invalid(`payload is ${p.length} bytes, shorter than its header`);
  const device = p.readBigUInt64LE(0);
  if (device === 0n || device > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`device size ${device} is out of range`);
  const deviceBytes = Number(device);
  const regionBytes = p.readBigUInt64LE(8);
  const expected = regionBytesFor(deviceBytes);
  if (regionBytes !== BigInt(expected)) throw invalid(`region size ${regionBytes} is not ${expected} (the rule for ${deviceBytes} bytes)`);
  const count = p.readUInt32LE(16);
  if (count !== Math.ceil(deviceBytes / expected)) throw invalid(`${count} regions do not cover ${deviceBytes} bytes in regions of ${expected}`);
  const perRegion = p.readUInt32LE(20);
  if (perRegion !== FIELDS_PER_REGION) throw invalid(`${perRegion} fields per region, not ${FIELDS_PER_REGION}`);
  const fields = new Uint32Array(count * FIELDS_PER_REGION);
  let at = HEADER_BYTES;
  for (let i = 0; i < fields.length; i++) {
    let v = 0;
    let scale = 1;
    for (let n = 0; ; n++) {
      if (at >= p.length) throw invalid(`payload ends inside value ${i} of ${fields.length}`);
      if (n === MAX_VARINT_BYTES) throw invalid(`value ${i} is longer than ${MAX_VARINT_BYTES} bytes`);
      const byte = p[at++] as number;
      v += (byte & 0x7f) * scale;
      scale *= 128;
      if ((byte & 0x80) === 0) break;
    }
    if (v > 0xffffffff) throw invalid(`value ${i} (${v}) does not fit 32 bits`);
    fields[i] = v;
  }
  if (at !== p.length) throw invalid(`${p.length - at} bytes after the last region`);
  return RegionRecord.fromFields(deviceBytes, fields);
}

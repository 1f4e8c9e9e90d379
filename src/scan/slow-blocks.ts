// The slow-block rule, shared by the background scan (scanner.ts) and the judge of users' slow reads
// (user-slow-reads.ts): a block found slow by a block-by-block read is counted; one counted slow_threshold
// times, whatever found it each time, is handed to the policy for relocation with its data. A main slow as
// a whole (load, a slow link, a drive busy with itself) must not have its blocks counted: else every block
// of a slow disk would be relocated and the spare filled with good blocks. Each caller brings its evidence
// of "slow as a whole": the scan its window of chunks read before, a user read's judge a reference read
// elsewhere on the disk.
import type { Logger } from 'pino';
import type { BackingRole } from '../native.js';

/** Blocks whose slow reads are remembered (for slow_threshold) at most; the oldest are forgotten. */
export const MAX_SLOW_SUSPECTS = 100_000;
/** A range whose block-by-block re-read finds more than this fraction of its blocks slow is slow as a whole. */
export const UNIFORM_SLOW_FRACTION = 0.5;
/**
 * The chunks remembered to tell a bad zone from a slow disk: a chunk slow as a whole among mostly fast chunks
 * is a bad zone (its blocks count); among mostly whole-slow ones (or with none read before it) main is slow
 * as a whole there (nothing counted).
 */
export const SLOW_WINDOW_CHUNKS = 32;

export interface SlowBlock {
  block: number;
  device: BackingRole;
}

/** Who found the slow blocks: the background scan's reads, or the re-read of a user's slow read. */
export type SlowSource = 'scan' | 'user';

export interface SlowBlockCounters {
  /** Blocks counted slow (each time). */
  slowBlocks: number;
  /** Blocks relocated for being slow slow_threshold times (handed to the policy). */
  slowRelocations: number;
  /** Ranges most of whose blocks were slow, like the disk around or elsewhere: main slow as a whole, no block counted. */
  uniformSlowChunks: number;
}

export interface SlowBlockRuleOptions {
  slowThreshold: number;
  log: Logger;
  /** The policy: a block slow slow_threshold times is relocated with its data. Null: nothing relocated. */
  relocate: ((block: number, device: BackingRole) => void) | null;
}

/** Whether `slow` blocks of `readBlocks` read make the range slow as a whole (more than UNIFORM_SLOW_FRACTION). */
export function slowAsWhole(slow: number, readBlocks: number): boolean {
  return readBlocks > 0 && slow > readBlocks * UNIFORM_SLOW_FRACTION;
}

export class SlowBlockRule {
  private readonly suspects = new Map<number, number>();
  /** The last SLOW_WINDOW_CHUNKS chunks the scan judged: true for one slow as a whole. */
  private window: boolean[] = [];
  private readonly c: SlowBlockCounters = { slowBlocks: 0, slowRelocations: 0, uniformSlowChunks: 0 };

  constructor(private readonly o: SlowBlockRuleOptions) {}

  counters(): SlowBlockCounters {
    return { ...this.c };
  }

  /** Times `block` was counted slow and not yet relocated (tests, status). */
  timesSlow(block: number): number {
    return this.suspects.get(block) ?? 0;
  }

  /**
   * The scan's chunk of which `readBlocks` read, `slow` of them slow. When the chunk is slow as a whole
   * and most of the chunks before it (SLOW_WINDOW_CHUNKS) were too, or none was judged before it, main is
   * slow as a whole: none is counted. A whole-slow chunk among fast ones is a bad zone: its blocks count.
   * Returns the slow blocks counted.
   */
  noteScanChunk(slow: readonly SlowBlock[], readBlocks: number, chunkOffset: number): number {
    const whole = slowAsWhole(slow.length, readBlocks);
    const before = this.window;
    this.window = [...before.slice(-(SLOW_WINDOW_CHUNKS - 1)), whole];
    if (slow.length === 0) return 0;
    if (whole && (before.length === 0 || before.filter((x) => x).length * 2 >= before.length)) {
      this.noteUniform('scan', chunkOffset, slow.length, readBlocks);
      return 0;
    }
    this.count(slow, 'scan');
    return slow.length;
  }

  /** A range read slowly as a whole, like the disk around it or elsewhere: main is slow there, nothing counted. */
  noteUniform(source: SlowSource, offset: number, slowBlocks: number, readBlocks: number): void {
    this.c.uniformSlowChunks++;
    this.o.log.info({ source, offset, slowBlocks, readBlocks }, `${source}: the range read slowly as a whole, like the disk ${source === 'scan' ? 'before it' : 'elsewhere'}: main is slow there, no block counted slow`);
  }

  /** Counts each block slow once more; one slow slow_threshold times is handed to the policy. */
  count(slow: readonly SlowBlock[], source: SlowSource): void {
    for (const { block: b, device } of slow) {
      this.c.slowBlocks++;
      const n = (this.suspects.get(b) ?? 0) + 1;
      this.suspects.delete(b);
      if (n >= this.o.slowThreshold) {
        this.c.slowRelocations++;
        this.o.log.info({ block: b, device, times: n, source }, `${source}: block slow too often: relocating it with its data`);
        this.o.relocate?.(b, device);
        continue;
      }
      this.suspects.set(b, n);
      if (this.suspects.size > MAX_SLOW_SUSPECTS) this.suspects.delete(this.suspects.keys().next().value as number);
    }
  }
}

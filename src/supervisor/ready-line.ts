// Reads the one readiness line a daemon writes on its fd 3 pipe (see cli/readiness.ts). Resolves with the
// parsed message, or null when the pipe closes without a valid line (the daemon died first, or sent junk).
import { readyMessageSchema, type ReadyMessage } from '../cli/readiness.js';

export function readReadyLine(pipe: NodeJS.ReadableStream): Promise<ReadyMessage | null> {
  return new Promise((resolve) => {
    let buf = '';
    let done = false;
    const finish = (msg: ReadyMessage | null): void => {
      if (done) return;
      done = true;
      pipe.removeAllListeners('data');
      resolve(msg);
    };
    pipe.setEncoding('utf8');
    pipe.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let raw: unknown;
      try {
        raw = JSON.parse(buf.slice(0, nl));
      } catch {
        raw = undefined;
      }
      const parsed = readyMessageSchema.safeParse(raw);
      finish(parsed.success ? parsed.data : null);
    });
    pipe.on('end', () => finish(null));
    pipe.on('close', () => finish(null));
    pipe.on('error', () => finish(null));
  });
}

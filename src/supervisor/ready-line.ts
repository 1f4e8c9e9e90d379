// Reads the one readiness line a daemon writes on its fd 3 pipe (see cli/readiness.ts). Resolves with the
// parsed message, or null when the pipe closes without a valid line (the daemon died first, or sent junk).
import { onFirstReadyLine, type ReadyMessage } from '../cli/readiness.js';

export function readReadyLine(pipe: NodeJS.ReadableStream): Promise<ReadyMessage | null> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (msg: ReadyMessage | null): void => {
      if (done) return;
      done = true;
      pipe.removeAllListeners('data');
      resolve(msg);
    };
    onFirstReadyLine(pipe, finish);
    pipe.on('end', () => finish(null));
    pipe.on('close', () => finish(null));
    pipe.on('error', () => finish(null));
  });
}

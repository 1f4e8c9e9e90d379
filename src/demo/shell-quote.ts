// A command line as a user would type it into a POSIX shell: words with characters the shell treats
// specially are single-quoted (a single quote inside becomes '\'').

const PLAIN = /^[A-Za-z0-9_./=:,+@%-]+$/;

export function shellQuote(argv: readonly string[]): string {
  return argv.map((a) => (PLAIN.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

// Numbers and durations as the health model's sentences say them.

/** `n` and the noun, plural unless n is 1: plural(3, 'bad block') → "3 bad blocks". */
export function plural(n: number, noun: string, many = `${noun}s`): string {
  return `${formatCount(n)} ${n === 1 ? noun : many}`;
}

/** A count: whole numbers as they are, fractions (seconds of outage) to one decimal. */
export function formatCount(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

/** A duration in seconds, in the unit that reads best: "45 s", "12 min", "5.5 h", "9.3 days", "41 days". */
export function formatDuration(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 2 * 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 2 * 86400) return `${(seconds / 3600).toFixed(1)} h`;
  const days = seconds / 86400;
  return days < 10 ? `${days.toFixed(1)} days` : `${Math.round(days)} days`;
}

/** "the day before" for a 24-hour window, else "the N h before". */
export function windowBefore(hours: number): string {
  return hours === 24 ? 'the day before' : `the ${hours} h before`;
}

// Confidence bounds on the mean of a Poisson count: n events seen, which means are plausible? Byar's
// approximation of the exact (Garwood) interval; within about 1% of it from n = 10, the fewest events the
// forecast works with (Breslow and Day, "Statistical Methods in Cancer Research", vol. II, 1987, p. 69).

/** z of a two-sided 95% interval. */
export const Z_95 = 1.959963984540054;

/** Lower bound of the mean of a Poisson count `n` (0 for n = 0). */
export function poissonLower(n: number, z = Z_95): number {
  if (n <= 0) return 0;
  const v = n * (1 - 1 / (9 * n) - z / (3 * Math.sqrt(n))) ** 3;
  return Math.max(0, v);
}

/** Upper bound of the mean of a Poisson count `n`. */
export function poissonUpper(n: number, z = Z_95): number {
  const m = n + 1;
  return m * (1 - 1 / (9 * m) + z / (3 * Math.sqrt(m))) ** 3;
}

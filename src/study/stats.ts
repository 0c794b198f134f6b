// The statistics of a study: mean and sample standard deviation over seeds, and the paired
// difference of two arms with a two-sided Student-t interval. Pure functions, no I/O.

export function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** Sample standard deviation (n - 1 in the denominator); NaN below two values. */
export function sampleStd(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

/**
 * P(|T| < t) for Student's t with integer df >= 1, in closed form (Abramowitz & Stegun 26.7.3-4):
 * with theta = atan(t / sqrt(df)), a finite sum of powers of cos(theta).
 */
export function tCentralProbability(t: number, df: number): number {
  if (!Number.isInteger(df) || df < 1) throw new RangeError(`Expected an integer >= 1 for df but received ${df}`);
  if (t === Infinity) return 1;
  const theta = Math.atan(Math.abs(t) / Math.sqrt(df));
  const c2 = Math.cos(theta) ** 2,
    s = Math.sin(theta);
  if (df % 2 === 0) {
    // sin(theta) * (1 + 1/2 c^2 + (1*3)/(2*4) c^4 + ... up to c^(df-2))
    let term = 1,
      sum = 1;
    for (let k = 1; k <= (df - 2) / 2; ++k) sum += term *= ((2 * k - 1) / (2 * k)) * c2;
    return s * sum;
  }
  if (df === 1) return (2 / Math.PI) * theta;
  // (2/pi) (theta + sin(theta) cos(theta) (1 + 2/3 c^2 + (2*4)/(3*5) c^4 + ... up to c^(df-3)))
  let term = 1,
    sum = 1;
  for (let k = 1; k <= (df - 3) / 2; ++k) sum += term *= ((2 * k) / (2 * k + 1)) * c2;
  return (2 / Math.PI) * (theta + s * Math.cos(theta) * sum);
}

/** The two-sided critical value t with P(|T| < t) = level (e.g. 0.95 -> t_{0.975, df}). */
export function tCritical(df: number, level = 0.95): number {
  if (!(level > 0 && level < 1)) throw new RangeError(`Expected a level in (0, 1) but received ${level}`);
  let lo = 0,
    hi = 1;
  while (tCentralProbability(hi, df) < level) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; ++i) {
    const mid = (lo + hi) / 2;
    if (tCentralProbability(mid, df) < level) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

export interface PairedDifference {
  /** Seeds present in both arms, ascending. */
  seeds: number[];
  /** arm - reference, per seed (same order as seeds). */
  differences: number[];
  n: number;
  mean: number;
  std: number;
  /** Two-sided t-interval of the mean difference; null below two pairs. */
  interval: { level: number; low: number; high: number; t: number } | null;
}

/** Paired difference (arm - reference) over the seeds both have, with a t-interval over seeds. */
export function pairedDifference(
  arm: ReadonlyMap<number, number>,
  reference: ReadonlyMap<number, number>,
  level = 0.95,
): PairedDifference {
  const seeds = [...arm.keys()].filter((s) => reference.has(s)).sort((a, b) => a - b);
  const differences = seeds.map((s) => arm.get(s)! - reference.get(s)!);
  const n = differences.length,
    m = mean(differences),
    sd = sampleStd(differences);
  let interval: PairedDifference['interval'] = null;
  if (n >= 2) {
    const t = tCritical(n - 1, level);
    const half = (t * sd) / Math.sqrt(n);
    interval = { level, low: m - half, high: m + half, t };
  }
  return { seeds, differences, n, mean: m, std: sd, interval };
}

/** Where an interval lies relative to zero: the study's verdict on a paired difference. */
export function verdict(d: PairedDifference): 'gain' | 'loss' | 'no clear difference' | 'too few seeds' {
  if (!d.interval) return 'too few seeds';
  if (d.interval.low > 0) return 'gain';
  if (d.interval.high < 0) return 'loss';
  return 'no clear difference';
}

// The teacher bank as pure functions: which snapshot enters, which leaves, how teachers are weighted.
// The trainer owns the native models; these functions only decide.
import type { TeacherSource, TeacherWeighting } from '../config.js';
import type { BankEntry } from '../records.js';

export interface BankDecision {
  bank: BankEntry[];
  added: number | null;
  replaced: number | null;
}

/** What teacherSource diverse decides with: top-1 predictions on the validation split by teacher id (the candidate's too), and the score floor. */
export interface Diversity {
  predictions: ReadonlyMap<number, ArrayLike<number>>;
  floor: number;
}

/**
 * Offers the candidate (this epoch's snapshot, score higher = better) to the bank of capacity k.
 *  meaningful: add while the bank has room; then replace the lowest-scoring teacher if the
 *              candidate scores strictly higher (ties keep the older teacher).
 *  previous:   keep the last k epochs' snapshots (first in, first out).
 *  cycle-end:  the same as previous; the trainer offers only the snapshots at cycle ends.
 *  diverse:    add while the bank has room; then see offerDiverse (needs `diversity`).
 *  random:     the bank is fixed at the start; never changes.
 */
export function offerToBank(
  bank: readonly BankEntry[],
  candidate: BankEntry,
  k: number,
  source: TeacherSource,
  diversity?: Diversity,
): BankDecision {
  const current = bank.map((b) => ({ ...b }));
  if (source === 'random') return { bank: current, added: null, replaced: null };
  if (current.length < k) return { bank: [...current, { ...candidate }], added: candidate.id, replaced: null };
  if (source === 'diverse') {
    if (!diversity) throw new Error('offerToBank: teacherSource diverse needs the validation predictions (diversity)');
    return offerDiverse(current, candidate, diversity);
  }
  if (source === 'previous' || source === 'cycle-end') {
    const oldest = current.reduce((a, b) => (b.epoch < a.epoch ? b : a));
    return {
      bank: [...current.filter((b) => b !== oldest), { ...candidate }],
      added: candidate.id,
      replaced: oldest.id,
    };
  }
  let lowest = current[0];
  for (const b of current) if (b.score < lowest.score) lowest = b;
  if (candidate.score > lowest.score) {
    return {
      bank: current.map((b) => (b === lowest ? { ...candidate } : b)),
      added: candidate.id,
      replaced: lowest.id,
    };
  }
  return { bank: current, added: null, replaced: null };
}

/** Share of positions where two top-1 prediction lists differ. */
export function disagreementOf(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length || a.length === 0)
    throw new RangeError(
      `Expected two prediction lists of one non-zero length but received ${a.length} and ${b.length}`,
    );
  let differ = 0;
  for (let i = 0; i < a.length; ++i) differ += a[i] !== b[i] ? 1 : 0;
  return differ / a.length;
}

/**
 * A full bank (diverse) and a candidate: one of the k + 1 leaves. If any scores more than `floor`
 * below the best of them, the lowest-scoring leaves (ties: the older); otherwise the one whose
 * mean disagreement with the other k is lowest, i.e. the most redundant (ties: the lower score,
 * then the older). The candidate leaving means the bank stays as it was.
 */
export function offerDiverse(bank: readonly BankEntry[], candidate: BankEntry, d: Diversity): BankDecision {
  const pool = [...bank.map((b) => ({ ...b })), { ...candidate }];
  const best = Math.max(...pool.map((b) => b.score));
  const older = (a: BankEntry, b: BankEntry) => a.epoch < b.epoch || (a.epoch === b.epoch && a.id < b.id);
  let leave: BankEntry;
  if (pool.some((b) => b.score < best - d.floor)) {
    leave = pool.reduce((a, b) => (b.score < a.score || (b.score === a.score && older(b, a)) ? b : a));
  } else {
    const pred = (b: BankEntry) => {
      const p = d.predictions.get(b.id);
      if (!p) throw new Error(`offerDiverse: no validation predictions for teacher ${b.id}`);
      return p;
    };
    const spread = new Map(
      pool.map((m) => [
        m,
        pool.filter((o) => o !== m).reduce((s, o) => s + disagreementOf(pred(m), pred(o)), 0) / (pool.length - 1),
      ]),
    );
    leave = pool.reduce((a, b) => {
      const da = spread.get(a)!,
        db = spread.get(b)!;
      return db < da || (db === da && (b.score < a.score || (b.score === a.score && older(b, a)))) ? b : a;
    });
  }
  if (leave.id === candidate.id) return { bank: pool.slice(0, -1), added: null, replaced: null };
  return {
    bank: pool.slice(0, -1).map((b) => (b.id === leave.id ? { ...candidate } : b)),
    added: candidate.id,
    replaced: leave.id,
  };
}

/** Whether a teacher of `score` teaches this epoch (see teachingEntries). */
export function teaches(score: number, skipWorse: boolean, studentScore: number | null, afterReset: boolean): boolean {
  return !skipWorse || afterReset || studentScore === null || score > studentScore;
}

/**
 * The bank entries that teach this epoch. With skipWorse, only teachers scoring higher than the
 * student's last validation score (null: no score yet) teach -- the snapshot of the previous epoch,
 * which is the student itself, never does -- except right after a reset, when the student's fresh
 * head is worse than every snapshot and all teach.
 */
export function teachingEntries<T extends { score: number }>(
  bank: readonly T[],
  skipWorse: boolean,
  studentScore: number | null,
  afterReset: boolean,
): T[] {
  return bank.filter((b) => teaches(b.score, skipWorse, studentScore, afterReset));
}

/** Temperature of the score softmax: scores are accuracies in [0, 1] (or negative losses). */
export const SCORE_SOFTMAX_TEMPERATURE = 0.05;

/**
 * Per-teacher weights for the weighting modes that do not depend on the sample.
 * uniform: null (the native loss averages); score: softmax(score / 0.05) over the bank.
 * confidence is per sample: w[k,b] = max_c softmax(teacher_k(x_b) / T), computed natively inside the
 * training step (TrainStepOptions.confidenceWeights); null here.
 */
export function teacherWeights(bank: readonly { score: number }[], weighting: TeacherWeighting): number[] | null {
  if (weighting !== 'score' || bank.length === 0) return null;
  const m = Math.max(...bank.map((b) => b.score));
  const e = bank.map((b) => Math.exp((b.score - m) / SCORE_SOFTMAX_TEMPERATURE));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

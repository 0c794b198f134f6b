// The teacher bank as pure functions: which snapshot enters, which leaves, how teachers are weighted.
// The trainer owns the native models; these functions only decide.
import type { TeacherSource, TeacherWeighting } from '../config.js';
import type { BankEntry } from '../records.js';

export interface BankDecision {
  bank: BankEntry[];
  added: number | null;
  replaced: number | null;
}

/**
 * Offers the candidate (this epoch's snapshot, score higher = better) to the bank of capacity k.
 *  meaningful: add while the bank has room; then replace the lowest-scoring teacher if the
 *              candidate scores strictly higher (ties keep the older teacher).
 *  previous:   keep the last k epochs' snapshots (first in, first out).
 *  random:     the bank is fixed at the start; never changes.
 */
export function offerToBank(bank: readonly BankEntry[], candidate: BankEntry, k: number, source: TeacherSource): BankDecision {
  const current = bank.map((b) => ({ ...b }));
  if (source === 'random') return { bank: current, added: null, replaced: null };
  if (current.length < k) return { bank: [...current, { ...candidate }], added: candidate.id, replaced: null };
  if (source === 'previous') {
    const oldest = current.reduce((a, b) => (b.epoch < a.epoch ? b : a));
    return { bank: [...current.filter((b) => b !== oldest), { ...candidate }], added: candidate.id, replaced: oldest.id };
  }
  let lowest = current[0];
  for (const b of current) if (b.score < lowest.score) lowest = b;
  if (candidate.score > lowest.score) {
    return { bank: current.map((b) => (b === lowest ? { ...candidate } : b)), added: candidate.id, replaced: lowest.id };
  }
  return { bank: current, added: null, replaced: null };
}

/**
 * The bank entries that teach this epoch. With skipWorse, only teachers scoring higher than the
 * student's last validation score (null: no score yet) teach -- the snapshot of the previous epoch,
 * which is the student itself, never does -- except right after a reset, when the student's fresh
 * head is worse than every snapshot and all teach.
 */
export function teachingEntries(bank: readonly BankEntry[], skipWorse: boolean, studentScore: number | null, afterReset: boolean): BankEntry[] {
  if (!skipWorse || afterReset || studentScore === null) return [...bank];
  return bank.filter((b) => b.score > studentScore);
}

/** Temperature of the score softmax: scores are accuracies in [0, 1] (or negative losses). */
export const SCORE_SOFTMAX_TEMPERATURE = 0.05;

/**
 * Per-teacher weights for the weighting modes that do not depend on the sample.
 * uniform: null (the native loss averages); score: softmax(score / 0.05) over the bank.
 * confidence is per sample: w[k,b] = max_c softmax(teacher_k(x_b) / T), computed natively inside the
 * training step (TrainStepOptions.confidenceWeights); null here.
 */
export function teacherWeights(bank: readonly BankEntry[], weighting: TeacherWeighting): number[] | null {
  if (weighting !== 'score' || bank.length === 0) return null;
  const m = Math.max(...bank.map((b) => b.score));
  const e = bank.map((b) => Math.exp((b.score - m) / SCORE_SOFTMAX_TEMPERATURE));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

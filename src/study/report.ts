// The study report, rebuilt from whatever runs a study folder holds: study.md (tables), study.svg
// (each run's test accuracy per arm; the validation curves) and runs.csv (one line per run). Reads only files the
// trainer and the study runner write, so a folder merged from many machines reports the same.
import fs from 'node:fs';
import path from 'node:path';

import { methodUses, resolveSavedConfig, type TrainConfig } from '../config.js';
import type { EpochRecord, TrainSummary } from '../records.js';
import { writeFileAtomic } from '../util/atomic.js';
import type { StudyGrid } from './grid.js';
import { mean, pairedDifference, sampleStd, verdict, type PairedDifference } from './stats.js';

/** What the study runner records beside each run (wall time survives resumes: it accumulates). */
export interface RunLog {
  wall_seconds: number;
  started: string;
  finished: string | null;
  host: string;
  cpu: string;
  threads: number;
  version: string;
}

export interface FinishedRun {
  arm: string;
  seed: number;
  dir: string;
  summary: TrainSummary;
  metrics: EpochRecord[];
  log: RunLog | null;
}

export interface StudyRecord {
  grid: StudyGrid;
  /** Options given for the whole study on the command line. */
  common: Partial<TrainConfig>;
  /**
   * The option defaults the arms are layered on, as the build that started the study had them: a
   * grid continued after a default changed keeps its meaning. Absent in records older than this
   * field, which ran with FORMER_DEFAULTS.
   */
  defaults?: Partial<TrainConfig>;
}

export interface StudyRuns {
  record: StudyRecord | null;
  finished: FinishedRun[];
  /** Run folders with a checkpoint but no finished summary (running, or interrupted). */
  unfinished: { arm: string; seed: number; dir: string }[];
}

export const STUDY_FILE = 'study.json';
export const RUN_LOG_FILE = 'study-run.json';

function readJson<T>(file: string): T | null {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return null;
  }
}

/** Every <dir>/<arm>/seed<k>/ run: finished ones with their records, the rest by name. */
export function collectRuns(dir: string): StudyRuns {
  const record = readJson<StudyRecord>(path.join(dir, STUDY_FILE));
  const finished: FinishedRun[] = [];
  const unfinished: StudyRuns['unfinished'] = [];
  const entries = fs.existsSync(dir) ? fs.readdirSync(dir, { withFileTypes: true }) : [];
  for (const a of entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort()) {
    for (const s of fs.readdirSync(path.join(dir, a)).sort()) {
      const m = /^seed(\d+)$/.exec(s);
      if (!m) continue;
      const runDir = path.join(dir, a, s);
      const seed = Number(m[1]);
      const summary = readJson<TrainSummary>(path.join(runDir, 'summary.json'));
      if (summary && !summary.interrupted) {
        // an older build's summary lacks newer options: read them as that build ran them
        try {
          summary.config = resolveSavedConfig(summary.config as unknown as Record<string, unknown>);
        } catch {
          // a newer build's option this one does not know: compare the config as written
        }
        const text = fs.existsSync(path.join(runDir, 'metrics.jsonl'))
          ? fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8')
          : '';
        const metrics = text
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as EpochRecord);
        finished.push({
          arm: a,
          seed,
          dir: runDir,
          summary,
          metrics,
          log: readJson<RunLog>(path.join(runDir, RUN_LOG_FILE)),
        });
      } else if (summary || fs.existsSync(path.join(runDir, 'checkpoint', 'state.json'))) {
        unfinished.push({ arm: a, seed, dir: runDir });
      }
    }
  }
  return { record, finished, unfinished };
}

export interface ArmStats {
  arm: string;
  n: number;
  seeds: number[];
  testAcc: { mean: number; std: number };
  anytimeAcc: { mean: number; std: number };
  /** The last epoch's validation accuracy: what a control tuned on validation is picked by. */
  finalValAcc: { mean: number; std: number };
  /** The last epoch's training accuracy (on the training labels as trained, noisy ones included): does the arm fit its training set? */
  trainAcc: { mean: number; std: number };
  ece: { mean: number; std: number };
  /** Test accuracy of the run's ensemble (final model + its teachers; see ensembleAccuracy), over the runs that have it. */
  ensembleAcc: { mean: number; std: number; n: number };
  wallSeconds: number;
  /** Options where this arm's runs differ from the reference arm's. */
  differs: Record<string, unknown>;
}

/** A comparison every arm gets: the reference, or a control of the grid (a control given as a list is the member with the best mean final validation accuracy). */
export interface Comparator {
  /** The arm compared with (null: none of a control's arms has a finished run yet). */
  arm: string | null;
  /** For a control tuned on validation: the arms it was picked from. */
  pickedFrom: string[] | null;
}

/** Paired differences (arm - comparator, fractions) in the figures the report compares. */
export interface PairedFigures {
  test: PairedDifference;
  anytime: PairedDifference;
  ece: PairedDifference;
  ensemble: PairedDifference;
}

export interface StudyStats {
  reference: string;
  arms: ArmStats[];
  /** arm -> paired differences to the reference (fractions). */
  paired: Record<string, PairedFigures>;
  /** The grid's controls, resolved, and every arm's paired differences to each (by control arm). */
  controls: Comparator[];
  pairedControls: Record<string, Record<string, PairedFigures>>;
}

/** Mean validation accuracy over the epochs: how good the model was along the way, not only at the end. */
export const anytimeAccuracy = (metrics: readonly EpochRecord[]): number => mean(metrics.map((m) => m.val_acc));

/**
 * The run's ensemble test accuracy: as its summary records it, or, for a summary written before that
 * field, its test accuracy when it trained without teachers (an ensemble of one); else NaN (unknown).
 */
export function ensembleAccuracy(r: FinishedRun): number {
  if (r.summary.test_ensemble_acc !== undefined && r.summary.test_ensemble_acc !== null)
    return r.summary.test_ensemble_acc;
  return methodUses(r.summary.config.method).teachers ? NaN : r.summary.test_acc;
}

/** The last epoch's training accuracy. */
const finalTrainAccuracy = (r: FinishedRun): number => r.metrics.at(-1)?.train_acc ?? NaN;

const RUN_SPECIFIC: (keyof TrainConfig)[] = ['seed', 'out', 'threads', 'cacheDir', 'device'];

/** Options in which `a` differs from the reference run (both as collectRuns resolved them). */
function configDiff(a: TrainConfig, ref: TrainConfig | undefined): Record<string, unknown> {
  if (!ref) return {};
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(a) as (keyof TrainConfig)[])
    if (!RUN_SPECIFIC.includes(k) && JSON.stringify(a[k]) !== JSON.stringify(ref[k])) out[k] = a[k];
  return out;
}

/** Arm order: the grid's when known, else the reference first and the rest by name. */
function armOrder(runs: StudyRuns, reference: string): string[] {
  const seen = [...new Set([...runs.finished.map((r) => r.arm), ...runs.unfinished.map((r) => r.arm)])];
  const declared = runs.record ? Object.keys(runs.record.grid.arms) : [];
  const rest = seen
    .filter((a) => !declared.includes(a))
    .sort((a, b) => (a === reference ? -1 : b === reference ? 1 : a.localeCompare(b)));
  return [...declared.filter((a) => seen.includes(a)), ...rest];
}

/** mean and std over the finite values (n: how many). */
function summarise(xs: number[]): { mean: number; std: number; n: number } {
  const v = xs.filter(Number.isFinite);
  return { mean: mean(v), std: sampleStd(v), n: v.length };
}

export function studyStats(runs: StudyRuns): StudyStats {
  const reference = runs.record?.grid.reference ?? 'base';
  const byArm = new Map<string, FinishedRun[]>();
  for (const r of runs.finished)
    byArm.set(
      r.arm,
      [...(byArm.get(r.arm) ?? []), r].sort((x, y) => x.seed - y.seed),
    );
  const refConfig = byArm.get(reference)?.[0]?.summary.config;
  const arms: ArmStats[] = [];
  const paired: StudyStats['paired'] = {};
  // a figure a run does not have (an older summary's ensemble accuracy) leaves that seed out
  const bySeed = (rs: FinishedRun[], f: (r: FinishedRun) => number) =>
    new Map(rs.map((r): [number, number] => [r.seed, f(r)]).filter(([, v]) => Number.isFinite(v)));
  const refRuns = byArm.get(reference) ?? [];
  const figures = (rs: FinishedRun[], to: FinishedRun[]): PairedFigures => {
    const pair = (f: (r: FinishedRun) => number) => pairedDifference(bySeed(rs, f), bySeed(to, f));
    return {
      test: pair((r) => r.summary.test_acc),
      anytime: pair((r) => anytimeAccuracy(r.metrics)),
      ece: pair((r) => r.summary.test_ece),
      ensemble: pair(ensembleAccuracy),
    };
  };
  for (const arm of armOrder(runs, reference)) {
    const rs = byArm.get(arm) ?? [];
    const acc = rs.map((r) => r.summary.test_acc),
      any = rs.map((r) => anytimeAccuracy(r.metrics)),
      ece = rs.map((r) => r.summary.test_ece);
    arms.push({
      arm,
      n: rs.length,
      seeds: rs.map((r) => r.seed),
      testAcc: { mean: mean(acc), std: sampleStd(acc) },
      anytimeAcc: { mean: mean(any), std: sampleStd(any) },
      finalValAcc: {
        mean: mean(rs.map((r) => r.summary.final_val_acc)),
        std: sampleStd(rs.map((r) => r.summary.final_val_acc)),
      },
      trainAcc: { mean: mean(rs.map(finalTrainAccuracy)), std: sampleStd(rs.map(finalTrainAccuracy)) },
      ece: { mean: mean(ece), std: sampleStd(ece) },
      ensembleAcc: summarise(rs.map(ensembleAccuracy)),
      wallSeconds: mean(rs.map((r) => r.log?.wall_seconds ?? r.summary.seconds)),
      differs: rs.length ? configDiff(rs[0].summary.config, refConfig) : {},
    });
    if (arm !== reference && rs.length) paired[arm] = figures(rs, refRuns);
  }
  const controls = (runs.record?.grid.controls ?? []).map((c): Comparator => {
    if (typeof c === 'string') return { arm: byArm.has(c) ? c : null, pickedFrom: null };
    const tried = arms.filter((a) => c.includes(a.arm) && a.n > 0);
    const best = tried.reduce<ArmStats | null>(
      (b, a) => (b === null || a.finalValAcc.mean > b.finalValAcc.mean ? a : b),
      null,
    );
    return { arm: best?.arm ?? null, pickedFrom: [...c] };
  });
  const pairedControls: StudyStats['pairedControls'] = {};
  for (const c of controls) {
    if (c.arm === null || c.arm === reference) continue;
    const to = byArm.get(c.arm)!;
    pairedControls[c.arm] = Object.fromEntries(
      arms.filter((a) => a.arm !== c.arm && a.n > 0).map((a) => [a.arm, figures(byArm.get(a.arm)!, to)]),
    );
  }
  return { reference, arms, paired, controls, pairedControls };
}

// --- study.md --------------------------------------------------------------------------------------

const pp = (v: number, digits = 2) => (Number.isFinite(v) ? (v * 100).toFixed(digits) : '-');
const signed = (v: number, digits = 2) =>
  Number.isFinite(v) ? `${v >= 0 ? '+' : ''}${(v * 100).toFixed(digits)}` : '-';
const pm = (m: number, s: number, digits = 2) =>
  Number.isFinite(s) ? `${pp(m, digits)} ± ${pp(s, digits)}` : pp(m, digits);

function minutes(seconds: number): string {
  if (!Number.isFinite(seconds)) return '-';
  const m = Math.floor(seconds / 60),
    s = Math.round(seconds % 60);
  return `${m} min ${String(s).padStart(2, '0')} s`;
}

function describeOptions(o: Record<string, unknown>): string {
  const parts = Object.entries(o).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(',') : String(v)}`);
  return parts.length ? parts.join(', ') : '(reference)';
}

function intervalText(d: PairedDifference): string {
  return d.interval ? `[${signed(d.interval.low)}, ${signed(d.interval.high)}]` : '-';
}

/** The recipe shared by every run (the reference arm's config without what makes an arm). */
function recipeLine(runs: StudyRuns, reference: string): string {
  const c = runs.finished.find((r) => r.arm === reference)?.summary.config ?? runs.finished[0]?.summary.config;
  if (!c) return 'No finished runs yet.';
  return (
    `data \`${c.data ?? 'bundled sample'}\`, model ${c.model} x${c.width}, ${c.epochs} epochs, batch ${c.batchSize}, lr ${c.lr} ${c.schedule}, ` +
    `momentum ${c.momentum}${c.nesterov ? ' (Nesterov)' : ''}, weight decay ${c.weightDecay}, validation split ${c.valSize}; ` +
    `teachers: K ${c.teachers}, T ${c.temperature}, alpha ${c.distillWeight}; reset every ${c.resetCycle} epochs, depth ${c.resetDepth}.`
  );
}

export function renderStudyMarkdown(runs: StudyRuns, stats = studyStats(runs)): string {
  const ref = stats.reference;
  const seeds = [...new Set(runs.finished.map((r) => r.seed))].sort((a, b) => a - b);
  const planned = runs.record ? runs.record.grid.seeds.length * Object.keys(runs.record.grid.arms).length : null;
  const hosts = [
    ...new Set(
      runs.finished
        .map((r) => (r.log ? `${r.log.cpu}, ${r.log.threads} threads (${r.log.host})` : null))
        .filter(Boolean),
    ),
  ];
  const dates = runs.finished
    .map((r) => r.log?.finished)
    .filter((d): d is string => Boolean(d))
    .sort();
  const lines: string[] = [];
  lines.push(`# Study${runs.record ? `: ${runs.record.grid.name}` : ''}`, '');
  if (runs.record?.grid.description) lines.push(runs.record.grid.description, '');
  lines.push(`Recipe: ${recipeLine(runs, ref)}`, '');
  lines.push(
    `Runs: ${runs.finished.length} finished${planned !== null ? ` of ${planned} planned` : ''}` +
      `${runs.unfinished.length ? `, ${runs.unfinished.length} unfinished (${runs.unfinished.map((u) => `${u.arm}/seed${u.seed}`).join(', ')})` : ''}.` +
      `${dates.length ? ` Finished ${dates[0].slice(0, 10)} to ${dates.at(-1)!.slice(0, 10)}.` : ''}${hosts.length ? ` Machine: ${hosts.join('; ')}.` : ''}`,
    '',
  );

  lines.push('## Per arm', '');
  lines.push(
    "Accuracies in %, mean ± sample std over seeds. Anytime = mean validation accuracy over the epochs. Train = the last epoch's training accuracy (augmented batches, the labels as trained): whether the arm fits its training set. " +
      'ECE: 15 bins, on the test split. Ensemble = test accuracy of the mean softmax of the final model and the teachers it ends with (without teachers: the model alone; `-` where an older summary does not record it). Wall time: mean per run.',
    '',
  );
  lines.push(
    '| arm | n | test acc | anytime val acc | train acc | ECE | ensemble acc | wall time / run | options (vs ' +
      ref +
      ') |',
  );
  lines.push('|---|--:|--:|--:|--:|--:|--:|--:|---|');
  for (const a of stats.arms)
    lines.push(
      `| ${a.arm} | ${a.n} | ${pm(a.testAcc.mean, a.testAcc.std)} | ${pm(a.anytimeAcc.mean, a.anytimeAcc.std)} | ${pm(a.trainAcc.mean, a.trainAcc.std)} | ${pm(a.ece.mean, a.ece.std)} | ` +
        `${a.ensembleAcc.n < a.n && a.ensembleAcc.n > 0 ? `${pm(a.ensembleAcc.mean, a.ensembleAcc.std)} (n ${a.ensembleAcc.n})` : pm(a.ensembleAcc.mean, a.ensembleAcc.std)} | ${minutes(a.wallSeconds)} | ` +
        `${a.arm === ref ? '(reference)' : a.n === 0 ? '(no finished run yet)' : describeOptions(a.differs)} |`,
    );
  lines.push('');

  for (const [what, key] of [
    ['test accuracy', 'test'],
    ['anytime validation accuracy', 'anytime'],
  ] as const) {
    lines.push(`## Paired difference to ${ref}: ${what}`, '');
    lines.push(
      `Percentage points, arm - ${ref}, seed by seed; mean and 95% t-interval over the n seeds both have (t quantile with n - 1 degrees of freedom). A gain counts only when the whole interval lies above zero.`,
      '',
    );
    lines.push(`| arm | n | ${seeds.map((s) => `seed ${s}`).join(' | ')} | mean | 95% interval | verdict |`);
    lines.push(`|---|--:|${seeds.map(() => '--:|').join('')}--:|--:|---|`);
    for (const a of stats.arms) {
      const p = stats.paired[a.arm];
      if (!p) continue;
      const d = p[key];
      const cells = seeds.map((s) => {
        const i = d.seeds.indexOf(s);
        return i >= 0 ? signed(d.differences[i]) : '';
      });
      lines.push(
        `| ${a.arm} | ${d.n} | ${cells.join(' | ')} | ${signed(d.mean)} | ${intervalText(d)} | ${verdict(d)} |`,
      );
    }
    lines.push('');
  }
  const comparators: { arm: string; label: string; rows: Record<string, PairedFigures> }[] = [
    { arm: ref, label: `${ref} (the reference)`, rows: stats.paired },
  ];
  for (const c of stats.controls) {
    const label = c.pickedFrom
      ? `${c.arm ?? '(none yet)'}, the best of ${c.pickedFrom.join(', ')} by mean final validation accuracy`
      : `${c.arm ?? '(none yet)'}`;
    if (c.arm === null) lines.push(`Control ${c.pickedFrom ? c.pickedFrom.join(' / ') : ''}: no finished run yet.`, '');
    else if (c.arm !== ref) comparators.push({ arm: c.arm, label, rows: stats.pairedControls[c.arm] ?? {} });
  }
  for (const c of comparators) {
    lines.push(`## Paired differences to ${c.label}: test accuracy, ECE, ensemble accuracy`, '');
    lines.push(
      `Percentage points, arm - ${c.arm}, mean and 95% t-interval over the seeds both have (n). Accuracy: \`gain\` only when the whole interval lies above zero. ECE: lower is better (\`lower\` when the whole interval lies below zero).`,
      '',
    );
    lines.push(
      '| arm | n | test acc | 95% interval | verdict | ECE | 95% interval | verdict | n | ensemble acc | 95% interval | verdict |',
    );
    lines.push('|---|--:|--:|--:|---|--:|--:|---|--:|--:|--:|---|');
    for (const a of stats.arms) {
      const p = c.rows[a.arm];
      if (!p || a.arm === c.arm) continue;
      const eceVerdict = verdict(p.ece) === 'gain' ? 'higher' : verdict(p.ece) === 'loss' ? 'lower' : verdict(p.ece);
      lines.push(
        `| ${a.arm} | ${p.test.n} | ${signed(p.test.mean)} | ${intervalText(p.test)} | ${verdict(p.test)} | ${signed(p.ece.mean)} | ${intervalText(p.ece)} | ${eceVerdict} | ` +
          `${p.ensemble.n} | ${signed(p.ensemble.mean)} | ${intervalText(p.ensemble)} | ${verdict(p.ensemble)} |`,
      );
    }
    lines.push('');
  }
  lines.push('![study](study.svg)', '');
  return lines.join('\n');
}

// --- study.svg -------------------------------------------------------------------------------------

const PALETTE = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
];
const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const r2 = (v: number): string => (Math.round(v * 100) / 100).toString();

function niceRange(values: number[], pad: number): [number, number, number] {
  let lo = Math.min(...values),
    hi = Math.max(...values);
  if (!(hi > lo)) [lo, hi] = [lo - 0.5, hi + 0.5];
  const span = hi - lo;
  const step = [0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20].find((s) => span / s <= 8) ?? 20;
  return [Math.floor((lo - span * pad) / step) * step, Math.ceil((hi + span * pad) / step) * step, step];
}

function yAxis(
  parts: string[],
  x0: number,
  x1: number,
  y0: number,
  y1: number,
  lo: number,
  hi: number,
  step: number,
  label: string,
): (v: number) => number {
  const yv = (v: number) => y1 - ((v - lo) / (hi - lo)) * (y1 - y0);
  for (let v = lo; v <= hi + step * 1e-6; v += step) {
    const y = r2(yv(v));
    parts.push(`<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="#e5e5e5"/>`);
    parts.push(
      `<text x="${x0 - 6}" y="${y}" font-size="11" text-anchor="end" dominant-baseline="middle">${r2(v)}</text>`,
    );
  }
  parts.push(`<rect x="${x0}" y="${y0}" width="${x1 - x0}" height="${y1 - y0}" fill="none" stroke="#333"/>`);
  parts.push(
    `<text transform="translate(${x0 - 44},${(y0 + y1) / 2}) rotate(-90)" font-size="12" text-anchor="middle">${esc(label)}</text>`,
  );
  return yv;
}

export function renderStudySvg(runs: StudyRuns, stats = studyStats(runs)): string {
  const W = 1100,
    H = 470,
    top = 60,
    bottom = 390;
  const arms = stats.arms.filter((a) => a.n > 0);
  const color = new Map(arms.map((a, i) => [a.arm, PALETTE[i % PALETTE.length]]));
  const parts: string[] = [];
  parts.push(
    `<text x="20" y="28" font-size="16" font-weight="bold">${esc(runs.record?.grid.name ? `Study ${runs.record.grid.name}` : 'Study')}: ${runs.finished.length} finished runs</text>`,
  );
  if (arms.length === 0) parts.push('<text x="20" y="60" font-size="13">no finished runs yet</text>');
  else {
    // left: final test accuracy, one dot per run (offset by seed), the arm mean as a bar
    const x0 = 70,
      x1 = 520;
    const accs = runs.finished.map((r) => r.summary.test_acc * 100);
    const [lo, hi, step] = niceRange(accs, 0.1);
    parts.push(
      `<text x="${x0}" y="${top - 12}" font-size="14" font-weight="bold">final test accuracy (%), each run a dot, mean as a bar</text>`,
    );
    const yv = yAxis(parts, x0, x1, top, bottom, lo, hi, step, 'test accuracy (%)');
    const slot = (x1 - x0) / arms.length;
    arms.forEach((a, i) => {
      const cx = x0 + slot * (i + 0.5),
        c = color.get(a.arm)!;
      const rs = runs.finished.filter((r) => r.arm === a.arm).sort((p, q) => p.seed - q.seed);
      rs.forEach((r, j) => {
        const dx = rs.length > 1 ? (j / (rs.length - 1) - 0.5) * Math.min(slot * 0.5, 30) : 0;
        parts.push(
          `<circle cx="${r2(cx + dx)}" cy="${r2(yv(r.summary.test_acc * 100))}" r="3.5" fill="${c}" fill-opacity="0.75"><title>${esc(a.arm)} seed ${r.seed}: ${(r.summary.test_acc * 100).toFixed(2)}%</title></circle>`,
        );
      });
      const my = r2(yv(a.testAcc.mean * 100));
      parts.push(
        `<line x1="${r2(cx - slot * 0.35)}" y1="${my}" x2="${r2(cx + slot * 0.35)}" y2="${my}" stroke="${c}" stroke-width="2.5"><title>${esc(a.arm)} mean ${(a.testAcc.mean * 100).toFixed(2)}%</title></line>`,
      );
      parts.push(
        `<text transform="translate(${r2(cx)},${bottom + 12}) rotate(35)" font-size="11">${esc(a.arm)}</text>`,
      );
    });
    // right: validation accuracy per epoch, thin line per run, thick line for the arm mean
    const v0 = 600,
      v1 = 900;
    const vals = runs.finished.flatMap((r) => r.metrics.map((m) => m.val_acc * 100));
    const epochs = Math.max(...runs.finished.map((r) => r.metrics.length), 1);
    const [vlo, vhi, vstep] = niceRange(vals.length ? vals : [0, 100], 0.02);
    parts.push(
      `<text x="${v0}" y="${top - 12}" font-size="14" font-weight="bold">validation accuracy (%) per epoch</text>`,
    );
    const vy = yAxis(parts, v0, v1, top, bottom, vlo, vhi, vstep, 'validation accuracy (%)');
    const vx = (e: number) => v0 + ((e - 1) / Math.max(epochs - 1, 1)) * (v1 - v0);
    for (let e = 1; e <= epochs; e += Math.max(1, Math.round(epochs / 10)))
      parts.push(`<text x="${r2(vx(e))}" y="${bottom + 16}" font-size="11" text-anchor="middle">${e}</text>`);
    parts.push(`<text x="${(v0 + v1) / 2}" y="${bottom + 34}" font-size="12" text-anchor="middle">epoch</text>`);
    const line = (pts: [number, number][]) =>
      pts.map(([e, v], k) => `${k ? 'L' : 'M'}${r2(vx(e))},${r2(vy(v))}`).join(' ');
    for (const r of runs.finished)
      parts.push(
        `<path d="${line(r.metrics.map((m) => [m.epoch, m.val_acc * 100]))}" fill="none" stroke="${color.get(r.arm)}" stroke-opacity="0.3" stroke-width="1"/>`,
      );
    arms.forEach((a, i) => {
      const rs = runs.finished.filter((r) => r.arm === a.arm);
      const meanCurve: [number, number][] = [];
      for (let e = 1; e <= epochs; ++e) {
        const v = rs
          .map((r) => r.metrics.find((m) => m.epoch === e)?.val_acc)
          .filter((x): x is number => x !== undefined);
        if (v.length) meanCurve.push([e, mean(v) * 100]);
      }
      parts.push(
        `<path d="${line(meanCurve)}" fill="none" stroke="${color.get(a.arm)}" stroke-width="2.2"><title>${esc(a.arm)} mean</title></path>`,
      );
      const ly = top + 10 + i * 20;
      parts.push(
        `<line x1="${v1 + 20}" y1="${ly}" x2="${v1 + 44}" y2="${ly}" stroke="${color.get(a.arm)}" stroke-width="2.5"/>`,
      );
      parts.push(
        `<text x="${v1 + 50}" y="${ly}" font-size="12" dominant-baseline="middle">${esc(a.arm)} (n ${a.n})</text>`,
      );
    });
  }
  return `<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" fill="#222">\n<rect width="${W}" height="${H}" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}

/** One line per finished run: the figures the tables are made of, for other tools. */
export function renderRunsCsv(runs: StudyRuns): string {
  const header =
    'arm,seed,test_acc,anytime_val_acc,final_val_acc,final_train_acc,test_ece,test_ensemble_acc,test_loss,epochs,wall_seconds,finished';
  const rows = runs.finished
    .map((r) =>
      [
        r.arm,
        r.seed,
        r.summary.test_acc,
        anytimeAccuracy(r.metrics),
        r.summary.final_val_acc,
        finalTrainAccuracy(r),
        r.summary.test_ece,
        Number.isFinite(ensembleAccuracy(r)) ? ensembleAccuracy(r) : '',
        r.summary.test_loss,
        r.summary.epochs,
        r.log?.wall_seconds ?? r.summary.seconds,
        r.log?.finished ?? '',
      ].join(','),
    )
    .sort();
  return [header, ...rows].join('\n') + '\n';
}

/** Rebuilds study.md, study.svg and runs.csv in `dir` from the runs found there. */
export function writeStudyReport(dir: string): { markdown: string; svg: string; runs: StudyRuns; stats: StudyStats } {
  const runs = collectRuns(dir);
  const stats = studyStats(runs);
  const markdown = renderStudyMarkdown(runs, stats);
  const svg = renderStudySvg(runs, stats);
  writeFileAtomic(path.join(dir, 'study.md'), markdown);
  writeFileAtomic(path.join(dir, 'study.svg'), svg);
  writeFileAtomic(path.join(dir, 'runs.csv'), renderRunsCsv(runs));
  return { markdown, svg, runs, stats };
}

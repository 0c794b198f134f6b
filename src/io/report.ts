// curves.svg: one self-contained SVG per run, readable in any browser or image viewer.
//   top panel     accuracy (%): train, val, teacher-ensemble val; the bank's teacher scores as dots
//   bottom panel  loss: train, val, distillation term
//   both          dashed vertical markers where the head was reset (before that epoch)
// Written atomically (temp file + rename), so a viewer never sees half a file.
import path from 'node:path';

import type { EpochRecord, TrainSummary } from '../records.js';
import { writeFileAtomic } from '../util/atomic.js';

const W = 960;
const PANEL_H = 270;
const M = { left: 70, right: 215, top: 78, gap: 70, bottom: 70 };
const COLORS = {
  train: '#1f77b4',
  val: '#ff7f0e',
  ensemble: '#2ca02c',
  distill: '#9467bd',
  teacher: '#8c564b',
  reset: '#d62728',
  grid: '#e5e5e5',
  axis: '#333333',
  text: '#222222',
};

const esc = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const num = (v: number): string => (Math.round(v * 100) / 100).toString();

/** About `count` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function fmtTick(v: number): string {
  return String(Math.round(v * 1e6) / 1e6);
}

interface Series {
  label: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
}

interface Dots {
  label: string;
  color: string;
  points: [number, number][];
}

interface PanelSpec {
  title: string;
  yLabel: string;
  series: Series[];
  dots?: Dots;
  /** Fixed y range (accuracy), else from the data with 0 as the floor. */
  yRange?: [number, number];
}

function panel(p: PanelSpec, top: number, xMax: number, resets: number[]): string {
  const x0 = M.left,
    x1 = W - M.right,
    y0 = top,
    y1 = top + PANEL_H;
  const ys = [...p.series.flatMap((s) => s.points.map((q) => q[1])), ...(p.dots?.points.map((q) => q[1]) ?? [])].filter(
    Number.isFinite,
  );
  let [lo, hi] = p.yRange ?? [Math.min(0, ...ys), ys.length ? Math.max(...ys) : 1];
  if (!p.yRange) {
    const t = niceTicks(lo, hi === lo ? lo + 1 : hi);
    const step = t.length > 1 ? t[1] - t[0] : 1;
    lo = Math.floor(lo / step + 1e-9) * step;
    hi = Math.ceil(hi / step - 1e-9) * step;
  }
  if (!(hi > lo)) hi = lo + 1;
  const xs = (x: number) => x0 + ((x - 0.5) / xMax) * (x1 - x0);
  const yv = (y: number) => y1 - ((y - lo) / (hi - lo)) * (y1 - y0);
  const parts: string[] = [];
  parts.push(
    `<text x="${x0}" y="${y0 - 12}" font-size="15" font-weight="bold" fill="${COLORS.text}">${esc(p.title)}</text>`,
  );
  // grid and y ticks
  for (const t of niceTicks(lo, hi)) {
    if (t < lo - 1e-9 || t > hi + 1e-9) continue;
    const y = num(yv(t));
    parts.push(`<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="${COLORS.grid}"/>`);
    parts.push(
      `<text x="${x0 - 8}" y="${y}" font-size="12" text-anchor="end" dominant-baseline="middle" fill="${COLORS.text}">${fmtTick(t)}</text>`,
    );
  }
  // x ticks (epochs)
  const stepX = Math.max(1, niceTicks(0, xMax, 10)[1] ?? 1);
  for (let e = 1; e <= xMax; e += Math.max(1, Math.round(stepX))) {
    const x = num(xs(e));
    parts.push(`<line x1="${x}" y1="${y1}" x2="${x}" y2="${y1 + 5}" stroke="${COLORS.axis}"/>`);
    parts.push(`<text x="${x}" y="${y1 + 19}" font-size="12" text-anchor="middle" fill="${COLORS.text}">${e}</text>`);
  }
  // axes
  parts.push(`<rect x="${x0}" y="${y0}" width="${x1 - x0}" height="${PANEL_H}" fill="none" stroke="${COLORS.axis}"/>`);
  parts.push(
    `<text x="${(x0 + x1) / 2}" y="${y1 + 38}" font-size="13" text-anchor="middle" fill="${COLORS.text}">epoch</text>`,
  );
  parts.push(
    `<text transform="translate(${x0 - 50},${(y0 + y1) / 2}) rotate(-90)" font-size="13" text-anchor="middle" fill="${COLORS.text}">${esc(p.yLabel)}</text>`,
  );
  // reset markers: the reset happens before epoch e, between the points e-1 and e
  for (const e of resets) {
    const x = num(xs(e - 0.5));
    parts.push(
      `<line x1="${x}" y1="${y0}" x2="${x}" y2="${y1}" stroke="${COLORS.reset}" stroke-width="1.5" stroke-dasharray="6 4"><title>head reset before epoch ${e}</title></line>`,
    );
    parts.push(`<text x="${x}" y="${y0 + 13}" font-size="11" text-anchor="middle" fill="${COLORS.reset}">reset</text>`);
  }
  // series
  for (const s of p.series) {
    const pts = s.points.filter(([, y]) => Number.isFinite(y));
    if (!pts.length) continue;
    const d = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${num(xs(x))},${num(yv(y))}`).join(' ');
    parts.push(
      `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`,
    );
    for (const [x, y] of pts)
      parts.push(
        `<circle cx="${num(xs(x))}" cy="${num(yv(y))}" r="2.5" fill="${s.color}"><title>${esc(s.label)} epoch ${x}: ${fmtTick(y)}</title></circle>`,
      );
  }
  // teacher dots, on top of the lines (a fresh teacher's score equals that epoch's val accuracy)
  if (p.dots) {
    for (const [x, y] of p.dots.points)
      if (Number.isFinite(y))
        parts.push(
          `<circle cx="${num(xs(x) + 7)}" cy="${num(yv(y))}" r="3.5" fill="${p.dots.color}" fill-opacity="0.55"/>`,
        );
  }
  // legend (right of the plot)
  const items: { label: string; color: string; kind: 'line' | 'dash' | 'dot' }[] = p.series
    .filter((s) => s.points.some(([, y]) => Number.isFinite(y)))
    .map((s) => ({ label: s.label, color: s.color, kind: s.dashed ? 'dash' : 'line' }));
  if (p.dots && p.dots.points.length) items.push({ label: p.dots.label, color: p.dots.color, kind: 'dot' });
  if (resets.length) items.push({ label: 'head reset', color: COLORS.reset, kind: 'dash' });
  items.forEach((it, i) => {
    const lx = x1 + 16,
      ly = y0 + 14 + i * 22;
    if (it.kind === 'dot')
      parts.push(`<circle cx="${lx + 12}" cy="${ly}" r="3.5" fill="${it.color}" fill-opacity="0.6"/>`);
    else
      parts.push(
        `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${it.color}" stroke-width="2"${it.kind === 'dash' ? ' stroke-dasharray="5 3"' : ''}/>`,
      );
    parts.push(
      `<text x="${lx + 32}" y="${ly}" font-size="12" dominant-baseline="middle" fill="${COLORS.text}">${esc(it.label)}</text>`,
    );
  });
  return parts.join('\n');
}

const pctText = (v: number | null | undefined) =>
  v === null || v === undefined || !Number.isFinite(v) ? '-' : `${(v * 100).toFixed(2)}%`;

/** The SVG text for a run's epoch records (and its summary, when finished). */
export function renderCurves(records: EpochRecord[], summary?: TrainSummary): string {
  const H = M.top + 2 * PANEL_H + M.gap + M.bottom;
  const cfg = summary?.config;
  const title = cfg
    ? `${cfg.model}${/\.json$/.test(cfg.model) ? '' : ` x${cfg.width}`}, method ${cfg.method}: ${records.length} epoch${records.length === 1 ? '' : 's'}`
    : `Training curves: ${records.length} epoch${records.length === 1 ? '' : 's'}`;
  const sub = cfg
    ? `lr ${cfg.lr} ${cfg.schedule}, batch ${cfg.batchSize}, seed ${cfg.seed}` +
      (cfg.method === 'sd' || cfg.method === 'dfl'
        ? `, ${cfg.teachers} teachers (${cfg.teacherSource}, ${cfg.teacherWeighting}${cfg.skipWorseTeachers ? ', only better than the student' : ''}), T ${cfg.temperature}, alpha ${cfg.distillWeight}`
        : '') +
      (cfg.method === 'reset' || cfg.method === 'dfl'
        ? `, reset last ${cfg.resetDepth} layer(s) every ${cfg.resetCycle} epochs (${cfg.resetMode}${cfg.resetUntil < 1 ? `, until ${Math.round(cfg.resetUntil * 100)}% of the epochs` : ''})`
        : '')
    : '';
  const head = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    `<title>${esc(title)}</title>`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${W / 2}" y="26" font-size="18" font-weight="bold" text-anchor="middle" fill="${COLORS.text}">${esc(title)}</text>`,
    sub ? `<text x="${W / 2}" y="46" font-size="12" text-anchor="middle" fill="#555555">${esc(sub)}</text>` : '',
  ];
  if (records.length === 0) {
    return [
      ...head,
      `<text x="${W / 2}" y="${H / 2}" font-size="16" text-anchor="middle" fill="${COLORS.text}">No epoch has finished yet.</text>`,
      '</svg>',
      '',
    ].join('\n');
  }
  const xMax = Math.max(...records.map((r) => r.epoch));
  const resets = records.filter((r) => r.reset).map((r) => r.epoch);
  const at = (f: (r: EpochRecord) => number | null): [number, number][] => records.map((r) => [r.epoch, f(r) ?? NaN]);
  const lossScores =
    (cfg?.scoreMetric ?? (records.some((r) => r.bank.some((b) => b.score < 0)) ? 'loss' : 'accuracy')) === 'loss';
  const teacherPoints = (scale: (s: number) => number): [number, number][] =>
    records.flatMap((r) => r.bank.map((b): [number, number] => [r.epoch, scale(b.score)]));
  const hasBank = records.some((r) => r.bank.length > 0);
  const accPanel = panel(
    {
      title: 'Accuracy',
      yLabel: 'accuracy (%)',
      yRange: [0, 100],
      series: [
        { label: 'train', color: COLORS.train, points: at((r) => r.train_acc * 100) },
        { label: 'val (student)', color: COLORS.val, points: at((r) => r.val_acc * 100) },
        {
          label: 'val (teacher ensemble)',
          color: COLORS.ensemble,
          points: at((r) => (r.ensemble_val_acc === null ? null : r.ensemble_val_acc * 100)),
          dashed: true,
        },
      ],
      dots:
        hasBank && !lossScores
          ? { label: 'teacher scores (bank)', color: COLORS.teacher, points: teacherPoints((s) => s * 100) }
          : undefined,
    },
    M.top,
    xMax,
    resets,
  );
  const lossPanel = panel(
    {
      title: 'Loss',
      yLabel: 'loss',
      series: [
        { label: 'train (total)', color: COLORS.train, points: at((r) => r.train_loss) },
        { label: 'val (cross-entropy)', color: COLORS.val, points: at((r) => r.val_loss) },
        {
          label: 'distillation (T²·KL)',
          color: COLORS.distill,
          points: at((r) => (r.distill_loss > 0 ? r.distill_loss : null)),
          dashed: true,
        },
      ],
      dots:
        hasBank && lossScores
          ? { label: 'teacher val loss (bank)', color: COLORS.teacher, points: teacherPoints((s) => -s) }
          : undefined,
    },
    M.top + PANEL_H + M.gap,
    xMax,
    resets,
  );
  const foot = summary
    ? `test acc ${pctText(summary.test_acc)}, top-5 ${pctText(summary.test_top5)}, loss ${Number.isFinite(summary.test_loss) ? summary.test_loss.toFixed(4) : '-'}; ` +
      `val best ${pctText(summary.best_val_acc)}, final ${pctText(summary.final_val_acc)}; ${Math.round(summary.seconds)} s, ${Math.round(summary.images_per_sec)} img/s${summary.interrupted ? ' (interrupted)' : ''}`
    : `val best ${pctText(Math.max(...records.map((r) => r.val_acc)))}, last ${pctText(records[records.length - 1].val_acc)}`;
  return [
    ...head,
    accPanel,
    lossPanel,
    `<text x="${W / 2}" y="${H - 14}" font-size="13" text-anchor="middle" fill="${COLORS.text}">${esc(foot)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

/** Writes `outDir/curves.svg` atomically; returns its path. */
export function writeCurves(outDir: string, records: EpochRecord[], summary?: TrainSummary): string {
  const file = path.join(outDir, 'curves.svg');
  writeFileAtomic(file, renderCurves(records, summary));
  return file;
}

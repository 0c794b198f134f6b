// The arithmetic and the tables of scripts/bench/bench-vs-torch.mjs, kept free of I/O so the unit
// test (test/unit/bench-report.test.ts) can check them on made-up rows.
//
// A model's row holds, per round, the median milliseconds of each engine and phase:
//   { model, gflop_per_img, rounds: { [engine]: { train: [ms per round], infer: [...], dfl: [...] } },
//     compile_s: { [engine]: { train, infer, dfl } }, errors: { [engine]: { [phase]: why } }, mem: {...} }
// Engines: 'dfl-native', 'torch <version> eager', 'torch <version> compile', 'onnxruntime <version>'.
export const OURS = 'dfl-native';
export const PHASES = ['train', 'infer', 'dfl'];
export const PHASE_TITLES = { train: 'training step', infer: 'eval forward', dfl: 'DFL step' };

// Issue 24's bars: the training and DFL steps against the fastest PyTorch (eager or compiled), the
// eval forward (what a teacher costs) against ONNX Runtime.
export const TARGETS = [
  { phase: 'train', against: 'torch', min: 1.2 },
  { phase: 'dfl', against: 'torch', min: 1.5 },
  { phase: 'infer', against: 'onnxruntime', min: 1.0 },
];

export const isTorch = (engine) => engine.startsWith('torch ');
export const isOrt = (engine) => engine.startsWith('onnxruntime');

export function median(v) {
  const s = v.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Forward FLOPs per image times the forwards a phase counts (src/bench.ts: a step is 3, DFL adds K). */
export function phaseGflop(gflopPerImg, phase, K) {
  return gflopPerImg * { train: 3, infer: 1, dfl: 3 + K }[phase];
}

/** Median ms over rounds, the fastest rival per target, the ratios and whether each target holds. */
export function summarise(row, { batch, K, peak }) {
  const ms = {};
  for (const [engine, r] of Object.entries(row.rounds))
    ms[engine] = Object.fromEntries(PHASES.map((p) => [p, median(r[p] ?? [])]));
  const ours = ms[OURS];
  const fastest = (phase, pick) => {
    let best = { engine: null, ms: NaN };
    for (const [engine, m] of Object.entries(ms))
      if (pick(engine) && Number.isFinite(m[phase]) && !(m[phase] >= best.ms)) best = { engine, ms: m[phase] };
    return best;
  };
  const targets = TARGETS.map((t) => {
    const rival = fastest(t.phase, t.against === 'torch' ? isTorch : isOrt);
    const ratio = rival.ms / ours[t.phase];
    return {
      ...t,
      rival: rival.engine,
      rival_ms: rival.ms,
      ours_ms: ours[t.phase],
      ratio,
      met: Number.isFinite(ratio) ? ratio >= t.min : null,
    };
  });
  // Achieved GFLOP/s of every engine and phase, and as a share of the measured SGEMM peak.
  const gflop_s = {};
  for (const [engine, m] of Object.entries(ms))
    gflop_s[engine] = Object.fromEntries(
      PHASES.map((p) => [p, (batch * phaseGflop(row.gflop_per_img, p, K)) / (m[p] / 1000)]),
    );
  const peak_share = Object.fromEntries(
    Object.entries(gflop_s).map(([e, g]) => [e, Object.fromEntries(PHASES.map((p) => [p, g[p] / peak]))]),
  );
  const torchInfer = fastest('infer', isTorch);
  return {
    ms,
    targets,
    gflop_s,
    peak_share,
    infer_vs_torch: { rival: torchInfer.engine, ratio: torchInfer.ms / ours.infer },
  };
}

const f = (v, d = 1) => (v === undefined || v === null || !Number.isFinite(v) ? '-' : v.toFixed(d));
const pct = (v) => (Number.isFinite(v) ? `${(100 * v).toFixed(0)}%` : '-');
const mark = (t) => (t.met === null ? 'no rival' : t.met ? `${f(t.ratio, 2)}x` : `**${f(t.ratio, 2)}x miss**`);
const short = (engine) => (engine ?? '-').replace(/^torch /, '').replace(/^onnxruntime /, 'ort ');

/** The Markdown of one run: header, targets table, engines table, roofline table, misses. */
export function markdown(run) {
  const { meta, rows } = run;
  const out = [];
  out.push(`# dfl-native vs PyTorch (eager, torch.compile) and ONNX Runtime, ${meta.date.slice(0, 10)}`);
  out.push('');
  out.push(
    `- commit ${meta.commit}, ${meta.cpu} (${meta.hardware_threads} hardware threads), CPU features: ${meta.cpu_features.join(' ')}`,
  );
  out.push(`- SIMD paths: ${meta.simd}`);
  out.push(
    `- batch ${meta.batch}x${meta.input.join('x')}, threads ${meta.threads}, K = ${meta.K}, ${meta.reps} reps after ${meta.warmup} warm-up, ${meta.rounds} rounds (medians of the rounds' medians)`,
  );
  out.push(`- engines: ${meta.engines.join('; ')}`);
  out.push(
    `- SGEMM peak ${f(meta.peak.gflop_s)} GFLOP/s (${meta.peak.gemm} kernel, best of ${meta.peak.runs.map((r) => f(r.peak_gflop_s)).join(' / ')} before / after), load average ${meta.load.start.map((l) => l.toFixed(2)).join(' ')} at the start, ${meta.load.end.map((l) => l.toFixed(2)).join(' ')} at the end`,
  );
  out.push(`- ${meta.started} to ${meta.finished}: \`${meta.command}\``);
  out.push('');
  out.push(
    'Speed = rival time / dfl-native time. Targets: training step >= 1.2x and DFL step >= 1.5x the fastest PyTorch (eager or torch.compile), eval forward >= 1.0x ONNX Runtime.',
  );
  out.push('');
  out.push(
    '| model | train ms | fastest torch | train speed | DFL ms | fastest torch | DFL speed | fwd ms | ORT ms | fwd speed vs ORT | fwd speed vs torch | DFL MB ours / torch |',
  );
  out.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const r of rows) {
    const [tr, dfl, inf] = ['train', 'dfl', 'infer'].map((p) => r.summary.targets.find((t) => t.phase === p));
    out.push(
      `| ${r.model} | ${f(tr.ours_ms)} | ${f(tr.rival_ms)} (${short(tr.rival)}) | ${mark(tr)} | ${f(dfl.ours_ms)} | ${f(dfl.rival_ms)} (${short(dfl.rival)}) | ${mark(dfl)} | ${f(inf.ours_ms)} | ${f(inf.rival_ms)} | ${mark(inf)} | ${f(r.summary.infer_vs_torch.ratio, 2)}x | ${f(r.mem.ours, 0)} / ${f(r.mem.torch, 0)} |`,
    );
  }
  out.push('');
  out.push(
    "Every engine (median ms; compile s = the compiled phase's first calls less as many steady steps, cold cache in round 1):",
  );
  out.push('');
  out.push('| model | engine | train ms | fwd ms | DFL ms | compile s (train / fwd / DFL) | not measured |');
  out.push('|---|---|--:|--:|--:|--:|---|');
  for (const r of rows)
    for (const engine of [...new Set([...Object.keys(r.rounds), ...Object.keys(r.errors)])]) {
      const m = r.summary.ms[engine] ?? {},
        c = r.compile_s[engine];
      const why = Object.entries(r.errors[engine] ?? {});
      const errs =
        why.length === PHASES.length && new Set(why.map(([, w]) => w)).size === 1
          ? why[0][1]
          : why.map(([p, w]) => `${p}: ${w}`).join('; ');
      out.push(
        `| ${r.model} | ${engine} | ${f(m.train)} | ${f(m.infer)} | ${f(m.dfl)} | ${c ? PHASES.map((p) => f(c[p], 0)).join(' / ') : ''} | ${errs} |`,
      );
    }
  out.push('');
  out.push(
    `Roofline: achieved GFLOP/s (a direct convolution's FLOPs: 2 x MACs per forward, a step 3 forwards, a DFL step 3 + K) and share of the ${f(meta.peak.gflop_s)} GFLOP/s SGEMM peak. Winograd layers do fewer multiplications than counted, so a share can pass 100%.`,
  );
  out.push('');
  out.push('| model | GFLOP/img | train GF/s | DFL GF/s | fwd GF/s | fastest torch train | ORT fwd |');
  out.push('|---|--:|--:|--:|--:|--:|--:|');
  for (const r of rows) {
    const s = r.summary,
      g = s.gflop_s[OURS],
      sh = s.peak_share[OURS];
    const tr = s.targets.find((t) => t.phase === 'train'),
      inf = s.targets.find((t) => t.phase === 'infer');
    const cell = (engine, p) => (engine ? `${f(s.gflop_s[engine][p])} (${pct(s.peak_share[engine][p])})` : '-');
    out.push(
      `| ${r.model} | ${Number.isFinite(r.gflop_per_img) ? r.gflop_per_img.toPrecision(3) : '-'} | ${f(g.train)} (${pct(sh.train)}) | ${f(g.dfl)} (${pct(sh.dfl)}) | ${f(g.infer)} (${pct(sh.infer)}) | ${cell(tr.rival, 'train')} | ${cell(inf.rival, 'infer')} |`,
    );
  }
  const misses = rows.flatMap((r) =>
    r.summary.targets
      .filter((t) => t.met === false)
      .map(
        (t) =>
          `${r.model} ${PHASE_TITLES[t.phase]}: ${f(t.ratio, 2)}x ${short(t.rival)} (target ${t.min}x, short by ${f(100 * (1 - t.ratio / t.min), 0)}%)`,
      ),
  );
  out.push('');
  out.push(misses.length ? `Targets missed: ${misses.join('; ')}.` : 'Every target met.');
  return out.join('\n') + '\n';
}

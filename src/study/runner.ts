// Runs a study grid (or one shard of it): each run an ordinary train() run in <dir>/<arm>/seed<k>/.
// Finished runs are skipped and interrupted ones resumed, so the same command continues a grid;
// the report is rebuilt after every finished run.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { DEFAULT_CONFIG, FORMER_DEFAULTS, resolveConfig, type TrainConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { packageVersion } from '../io/onnx.js';
import type { EpochRecord, TrainSummary } from '../records.js';
import { train } from '../train/trainer.js';
import { writeFileAtomic } from '../util/atomic.js';
import { planRuns, shardRuns, validateGrid, type PlannedRun, type StudyGrid } from './grid.js';
import { RUN_LOG_FILE, STUDY_FILE, writeStudyReport, type RunLog, type StudyRecord } from './report.js';

export interface StudyOptions {
  grid: StudyGrid;
  dir: string;
  /** Options for every run (the command line's train flags); may not touch what an arm sets. */
  common?: Partial<TrainConfig>;
  shard?: { index: number; count: number };
  signal?: AbortSignal;
}

export type RunState = 'finished' | 'partial' | 'new';

export type StudyEvent =
  | { event: 'plan'; total: number; shard: string; todo: number; finished: number; partial: number }
  | { event: 'skip'; arm: string; seed: number; dir: string; index: number; total: number }
  | { event: 'run'; arm: string; seed: number; dir: string; index: number; total: number; resume: boolean }
  | { event: 'epoch'; arm: string; seed: number; record: EpochRecord; epochs: number }
  | { event: 'log'; arm: string; seed: number; message: string }
  | { event: 'done'; arm: string; seed: number; dir: string; test_acc: number; wall_seconds: number }
  | { event: 'report'; file: string };

export interface StudyResult {
  ran: number;
  skipped: number;
  interrupted: boolean;
  reportFile: string;
}

/** finished: summary.json of a complete run; partial: a checkpoint to resume; new: nothing yet. */
export function runState(dir: string): RunState {
  const summaryFile = path.join(dir, 'summary.json');
  if (fs.existsSync(summaryFile)) {
    try {
      if (!(JSON.parse(fs.readFileSync(summaryFile, 'utf8')) as TrainSummary).interrupted) return 'finished';
    } catch {
      // a torn or foreign summary: the checkpoint decides
    }
  }
  return fs.existsSync(path.join(dir, 'checkpoint', 'state.json')) ? 'partial' : 'new';
}

// Options that may differ between the machines of one study (a shard on a bigger node).
const PER_MACHINE: (keyof TrainConfig)[] = ['threads', 'cacheDir', 'device'];

/** What a run of `arm` trains, as the study `r` lays it on `defaults`, without what may differ per machine. */
function effectiveOptions(r: StudyRecord, defaults: Partial<TrainConfig>, arm?: string): string {
  const c = resolveConfig(
    defaults as Record<string, unknown>,
    r.grid.options as Record<string, unknown>,
    r.common as Record<string, unknown>,
    arm === undefined ? {} : (r.grid.arms[arm] as Record<string, unknown>),
  );
  return JSON.stringify(
    Object.fromEntries(Object.entries(c).filter(([k]) => !PER_MACHINE.includes(k as keyof TrainConfig))),
  );
}

/** How the invocation `next` differs from the study `old` in what its runs train, or null. */
function studyClash(old: StudyRecord, next: StudyRecord, defaults: Partial<TrainConfig>): string | null {
  if (
    old.grid.reference !== next.grid.reference ||
    effectiveOptions(old, defaults) !== effectiveOptions(next, defaults)
  )
    return 'other shared options or reference arm';
  const changed = Object.keys(next.grid.arms).filter(
    (a) => a in old.grid.arms && effectiveOptions(old, defaults, a) !== effectiveOptions(next, defaults, a),
  );
  return changed.length ? `arm ${changed.join(', ')} has other options` : null;
}

/**
 * The study.json to write: this invocation's record, or it merged into the study the folder already holds: the
 * shared options must come out the same, an arm already there must train the same; new arms,
 * seeds and report controls are added (so a grid can grow from 3 seeds to 10, or gain an arm, in the same folder).
 * Options are compared as they resolve over the defaults the study was started with, which stay
 * its defaults: the merged record is returned, and its `defaults` are the ones to plan runs on.
 */
function mergeStudyRecord(dir: string, record: StudyRecord): StudyRecord & { defaults: Partial<TrainConfig> } {
  const file = path.join(dir, STUDY_FILE);
  let merged = { ...record, defaults: record.defaults ?? {} };
  if (fs.existsSync(file)) {
    let old: StudyRecord;
    try {
      old = JSON.parse(fs.readFileSync(file, 'utf8')) as StudyRecord;
    } catch {
      throw new ConfigError(`${file} is not a study record; choose another --out`);
    }
    const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
    if (
      !isObject(old) ||
      !isObject(old.grid) ||
      !(old.common === undefined || isObject(old.common)) ||
      !(old.defaults === undefined || isObject(old.defaults))
    )
      throw new ConfigError(`${file} is not a study record; choose another --out`);
    // A record predating `defaults` ran with FORMER_DEFAULTS; one predating a later option with a
    // changed default lacks that key and ran with its former value too.
    const defaults = { ...FORMER_DEFAULTS, ...old.defaults };
    let clash: string | null;
    try {
      old = { grid: validateGrid(old.grid, file, true), common: old.common ?? {}, defaults };
      clash = studyClash(old, record, defaults);
    } catch (err) {
      const message = (err as Error).message;
      const newer = /Unknown option/.test(message)
        ? '; was it written by a newer dfl-native? Continue it with that version'
        : '';
      throw new ConfigError(`${file}: cannot read the study it records (${message})${newer}; or choose another --out`);
    }
    if (clash)
      throw new ConfigError(
        `${dir} holds another study (${clash}; see ${file}); continue it with the same grid and options, or choose another --out`,
      );
    merged = {
      grid: {
        ...old.grid,
        arms: { ...old.grid.arms, ...record.grid.arms },
        seeds: [...new Set([...old.grid.seeds, ...record.grid.seeds])].sort((a, b) => a - b),
        // controls change only the report: a later invocation may add some
        controls: [
          ...new Map(
            [...old.grid.controls, ...(record.grid.controls ?? [])].map((c) => [JSON.stringify(c), c]),
          ).values(),
        ],
      },
      common: record.common,
      defaults: { ...defaults },
    };
  }
  return merged;
}

function readRunLog(dir: string): RunLog | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, RUN_LOG_FILE), 'utf8')) as RunLog;
  } catch {
    return null;
  }
}

async function runOne(
  run: PlannedRun,
  resume: boolean,
  signal: AbortSignal | undefined,
  emit: (e: StudyEvent) => void,
): Promise<TrainSummary> {
  const before = readRunLog(run.dir);
  const started = Date.now();
  const log: RunLog = {
    wall_seconds: before?.wall_seconds ?? 0,
    started: before?.started ?? new Date(started).toISOString(),
    finished: null,
    host: os.hostname(),
    cpu: os.cpus()[0]?.model?.trim() ?? 'unknown',
    threads: run.config.threads,
    version: packageVersion(),
  };
  // after a failed write the study, not `train --resume`, continues the run
  const continueWith = (folder: string) =>
    `run the same \`dfl-native study\` command again (same --out): it continues ${folder} from that checkpoint`;
  const training = train(
    resume
      ? { resume: run.dir, threads: run.config.threads, signal, continueWith }
      : { ...run.config, signal, continueWith },
  );
  training.on('log', (message: string) => emit({ event: 'log', arm: run.arm, seed: run.seed, message }));
  training.on('epoch', (record: EpochRecord) => {
    log.wall_seconds = (before?.wall_seconds ?? 0) + (Date.now() - started) / 1000;
    writeFileAtomic(path.join(run.dir, RUN_LOG_FILE), JSON.stringify(log, null, 2) + '\n');
    emit({ event: 'epoch', arm: run.arm, seed: run.seed, record, epochs: run.config.epochs });
  });
  const summary = await training.summary;
  log.wall_seconds = (before?.wall_seconds ?? 0) + (Date.now() - started) / 1000;
  if (!summary.interrupted) log.finished = new Date().toISOString();
  writeFileAtomic(path.join(run.dir, RUN_LOG_FILE), JSON.stringify(log, null, 2) + '\n');
  return summary;
}

export async function runStudy(
  options: StudyOptions,
  emit: (e: StudyEvent) => void = () => undefined,
): Promise<StudyResult> {
  const { grid, dir, common = {}, shard = { index: 1, count: 1 }, signal } = options;
  // the default options go into the record so that the study keeps them when a later build changes one
  const record = mergeStudyRecord(dir, {
    grid,
    common,
    defaults: Object.fromEntries(Object.entries(DEFAULT_CONFIG).filter(([, v]) => v !== undefined)),
  });
  const all = planRuns(grid, dir, common, record.defaults); // a bad grid fails here, before anything is written
  const mine = shardRuns(all, shard);
  fs.mkdirSync(dir, { recursive: true });
  writeFileAtomic(path.join(dir, STUDY_FILE), JSON.stringify(record, null, 2) + '\n');
  const states = mine.map((r) => runState(r.dir));
  emit({
    event: 'plan',
    total: all.length,
    shard: `${shard.index}/${shard.count}`,
    todo: mine.length,
    finished: states.filter((s) => s === 'finished').length,
    partial: states.filter((s) => s === 'partial').length,
  });
  let ran = 0,
    skipped = 0,
    interrupted = false;
  const reportFile = path.join(dir, 'study.md');
  for (let i = 0; i < mine.length && !interrupted; ++i) {
    const run = mine[i];
    // Another shard may have finished it meanwhile: look again right before starting.
    const state = runState(run.dir);
    if (state === 'finished') {
      skipped += 1;
      emit({ event: 'skip', arm: run.arm, seed: run.seed, dir: run.dir, index: i + 1, total: mine.length });
      continue;
    }
    emit({
      event: 'run',
      arm: run.arm,
      seed: run.seed,
      dir: run.dir,
      index: i + 1,
      total: mine.length,
      resume: state === 'partial',
    });
    const summary = await runOne(run, state === 'partial', signal, emit);
    if (summary.interrupted) {
      interrupted = true;
      break;
    }
    ran += 1;
    emit({
      event: 'done',
      arm: run.arm,
      seed: run.seed,
      dir: run.dir,
      test_acc: summary.test_acc,
      wall_seconds: readRunLog(run.dir)?.wall_seconds ?? summary.seconds,
    });
    writeStudyReport(dir);
    emit({ event: 'report', file: reportFile });
  }
  writeStudyReport(dir);
  return { ran, skipped, interrupted, reportFile };
}

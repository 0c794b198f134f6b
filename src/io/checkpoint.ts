// Checkpoints: a folder with safetensors weights and one JSON state that names them.
//
//   checkpoint/state.json                 format, epoch, config, model spec, class names,
//                                         normalisation, teacher bank, metrics so far, the data's
//                                         fingerprint, and the sha256 of every file it names
//   checkpoint/model-e0003.safetensors    the student: parameters + BN buffers, PyTorch names
//   checkpoint/optim-e0003.safetensors    SGD momentum, "momentum.<param name>"
//   checkpoint/teachers-e0003.safetensors bank teachers, "teacher<id>.<name>", in their folded
//                                         (inference) layout: each BN folded into its conv/linear
//                                         (version 1 stored whole training models; still read)
//   checkpoint/aux-e0003.safetensors      only for the options that keep more state: the weight
//                                         averages ("ema.params", "swa.params", ...), PS-KD's
//                                         predictions, DLB's carried logits, and after a final SWA
//                                         model the trajectory's own weights ("trajectory.<name>")
//   A run whose final model replaces its last weights (SWA) ends with files tagged e0020f.
//
// Writes are crash-safe: the epoch's weight files are written (atomically) under names the current
// state.json does not use (a second save of one epoch adds -2, -3, ...), then state.json is replaced
// atomically, then older files are deleted. At every instant state.json names complete files, and a
// flipped byte in any of them is caught by its checksum. A save that fails (a full disk) deletes
// what it wrote and leaves the previous checkpoint as it was.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { loadBinding, type DeviceName, type NativeModel, type NativeTeacher, type TensorHolder } from '../binding.js';
import { DEFAULT_CONFIG, resolveSavedConfig, type TrainConfig } from '../config.js';
import type { DataFingerprint } from '../data/fingerprint.js';
import { CheckpointError } from '../errors.js';
import type { ModelSpec } from '../models/spec.js';
import type { BankEntry, EpochRecord } from '../records.js';
import { writeFileAtomic } from '../util/atomic.js';
import { decodeSafetensors, encodeSafetensors, type SafeTensor } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'dfl-native-checkpoint';
export const CHECKPOINT_VERSION = 2;
/** Versions this code reads: 1 stored teachers unfolded (as whole models), 2 folded. */
const READABLE_VERSIONS = [1, 2];

export interface CheckpointState {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  /** Epochs completed. */
  epoch: number;
  config: TrainConfig;
  spec: ModelSpec;
  class_names: string[];
  mean: number[];
  std: number[];
  bank: BankEntry[];
  metrics: EpochRecord[];
  best_val_acc: number;
  /** Seconds of training so far (for throughput across resumes). */
  seconds: number;
  files: { model: string; optim: string; teachers: string | null; aux?: string | null };
  sha256: Record<string, string>;
  /** Set when the run stopped inside an epoch: where to continue and the epoch's running sums. */
  partial?: EpochPosition;
  /** What the run was trained on (absent in checkpoints of dfl-native 0.1.0): a resume compares it. */
  data?: DataFingerprint;
  /** The weight averages' counters and last validation scores (with emaDecay, swaStart < 1). */
  averages?: AverageState;
  /** 'swa': the model file holds the final SWA average; the trajectory's weights are in aux. */
  final?: 'swa';
}

export interface AverageState {
  ema_steps?: number;
  ema_score?: number | null;
  swa_count?: number;
  swa_score?: number | null;
}

/** A position inside an epoch (`batch` batches of epoch `epoch` done) and that epoch's running sums. */
export interface EpochPosition {
  epoch: number;
  batch: number;
  loss_sum: number;
  distill_sum: number;
  /** With softTargets: the epoch's running sum of the soft-target term. */
  target_sum?: number;
  correct: number;
  count: number;
  seconds: number;
  /** Whether the head was reset before this epoch (already applied to the saved weights). */
  reset: boolean;
}

export interface LoadedCheckpoint {
  dir: string;
  config: TrainConfig;
  spec: ModelSpec;
  classNames: string[];
  mean: number[];
  std: number[];
  inputShape: [number, number, number];
  epoch: number;
  state: CheckpointState;
  /** The student, with its weights and BN statistics loaded. */
  model: NativeModel;
}

/** A model's (or teacher's) parameters and buffers under their PyTorch state_dict names. */
export function modelTensors(model: TensorHolder, prefix = ''): Map<string, SafeTensor> {
  const params = model.getParams();
  const buffers = model.getBuffers();
  const out = new Map<string, SafeTensor>();
  for (const t of model.tensors()) {
    const src = t.kind === 'buffer' ? buffers : params;
    const slice = src.slice(t.offset, t.offset + t.size);
    if (t.name.endsWith('.num_batches_tracked')) {
      out.set(prefix + t.name, { dtype: 'I64', shape: [], data: BigInt64Array.from([BigInt(Math.round(slice[0]))]) });
    } else {
      out.set(prefix + t.name, { dtype: 'F32', shape: t.shape, data: slice });
    }
  }
  return out;
}

/** Loads named tensors into the model; every tensor the model has must be present with its shape. */
export function loadModelTensors(
  model: TensorHolder,
  tensors: Map<string, SafeTensor>,
  file: string,
  prefix = '',
): void {
  const params = model.getParams();
  const buffers = model.getBuffers();
  for (const t of model.tensors()) {
    const got = tensors.get(prefix + t.name);
    if (!got)
      throw new CheckpointError(
        `${file}: tensor ${prefix + t.name} is missing; the checkpoint does not match this model`,
      );
    const want = t.name.endsWith('.num_batches_tracked') ? [] : t.shape;
    if (got.shape.length !== want.length || got.shape.some((d, i) => d !== want[i]))
      throw new CheckpointError(
        `${file}: tensor ${prefix + t.name} has shape [${got.shape}] but the model needs [${want}]`,
      );
    const wantDtype = t.name.endsWith('.num_batches_tracked') ? 'I64' : 'F32';
    if (got.dtype !== wantDtype)
      throw new CheckpointError(
        `${file}: tensor ${prefix + t.name} has dtype ${got.dtype} but the model needs ${wantDtype}; the checkpoint does not match this model`,
      );
    if (got.dtype === 'F32' && !(got.data as Float32Array).every(Number.isFinite))
      throw new CheckpointError(
        `${file}: tensor ${prefix + t.name} holds NaN or Inf values (a diverged or corrupt checkpoint); use an earlier checkpoint`,
      );
    const dst = t.kind === 'buffer' ? buffers : params;
    if (got.dtype === 'I64') dst[t.offset] = Number((got.data as BigInt64Array)[0]);
    else dst.set(got.data as Float32Array, t.offset);
  }
  model.setParams(params);
  model.setBuffers(buffers);
}

function momentumTensors(model: NativeModel): Map<string, SafeTensor> {
  const m = model.getMomentum();
  const out = new Map<string, SafeTensor>();
  for (const t of model.tensors())
    if (t.kind !== 'buffer')
      out.set(`momentum.${t.name}`, { dtype: 'F32', shape: t.shape, data: m.slice(t.offset, t.offset + t.size) });
  return out;
}

function loadMomentum(model: NativeModel, tensors: Map<string, SafeTensor>, file: string): void {
  const m = model.getMomentum();
  for (const t of model.tensors()) {
    if (t.kind === 'buffer') continue;
    const got = tensors.get(`momentum.${t.name}`);
    if (!got || got.dtype !== 'F32' || got.data.length !== t.size)
      throw new CheckpointError(`${file}: momentum for ${t.name} is missing or has the wrong size or dtype`);
    if (!(got.data as Float32Array).every(Number.isFinite))
      throw new CheckpointError(`${file}: momentum for ${t.name} holds NaN or Inf values; use an earlier checkpoint`);
    m.set(got.data as Float32Array, t.offset);
  }
  model.setMomentum(m);
}

const sha256 = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

export interface SaveInput {
  student: NativeModel;
  teachers: Map<number, NativeTeacher>;
  state: Omit<CheckpointState, 'format' | 'version' | 'files' | 'sha256' | 'final'>;
  /** More state in named tensors (the aux file; none: no file). */
  aux?: Map<string, SafeTensor>;
  /** A final model to store as the model instead of the student (SWA), whose weights then go to aux as "trajectory.<name>". */
  final?: TensorHolder;
}

/** The aux tensors of a checkpoint (empty without an aux file). */
export function readAux(dir: string, state: CheckpointState): Map<string, SafeTensor> {
  return state.files.aux ? readVerified(dir, state, state.files.aux) : new Map();
}

/** A float tensor of the aux file, checked for its length; throws naming the file when absent or malformed. */
export function auxFloats(aux: Map<string, SafeTensor>, name: string, length: number, dir: string): Float32Array {
  const t = aux.get(name);
  if (!t || t.dtype !== 'F32' || t.data.length !== length || !(t.data as Float32Array).every(Number.isFinite))
    throw new CheckpointError(
      `${dir}: the checkpoint's aux tensor ${name} is missing, not ${length} finite floats, or corrupt; use another checkpoint`,
    );
  return t.data as Float32Array;
}

/**
 * Test hook (scripts/ci/crash-safety.mjs): DFL_TEST_SLOW_CHECKPOINT_MS=N sleeps N ms before each file of
 * a checkpoint is written, so a kill can land inside a save. Ignored unless set.
 */
function slowForTests(): void {
  const ms = Number(process.env.DFL_TEST_SLOW_CHECKPOINT_MS);
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The files the folder's state.json names now (none when there is no readable one). */
function namedFiles(dir: string): Set<string> {
  try {
    const files =
      (JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as { files?: Record<string, unknown> })
        .files ?? {};
    return new Set(Object.values(files).filter((f): f is string => typeof f === 'string'));
  } catch {
    return new Set();
  }
}

export function saveCheckpoint(dir: string, input: SaveInput): void {
  fs.mkdirSync(dir, { recursive: true });
  const aux = new Map(input.aux ?? []);
  if (input.final) for (const [k, v] of modelTensors(input.student, 'trajectory.')) aux.set(k, v);
  const filesFor = (tag: string) => ({
    model: `model-${tag}.safetensors`,
    optim: `optim-${tag}.safetensors`,
    teachers: input.teachers.size ? `teachers-${tag}.safetensors` : null,
    ...(aux.size ? { aux: `aux-${tag}.safetensors` } : {}),
  });
  // Never overwrite a file the current state.json names (an interrupted epoch saves under the tag
  // of the last finished one): until the new state.json is in place, the old checkpoint stays whole.
  const base = `e${String(input.state.epoch).padStart(4, '0')}${input.final ? 'f' : ''}`;
  const taken = namedFiles(dir);
  let files = filesFor(base);
  for (let k = 2; Object.values(files).some((f) => f && taken.has(f)); ++k) files = filesFor(`${base}-${k}`);
  const blobs: [string, Buffer][] = [
    [files.model, encodeSafetensors(modelTensors(input.final ?? input.student), { format: 'pt' })],
    [files.optim, encodeSafetensors(momentumTensors(input.student))],
  ];
  if (files.aux) blobs.push([files.aux, encodeSafetensors(aux)]);
  if (files.teachers) {
    const all = new Map<string, SafeTensor>();
    // by id, not in the map's insertion order: a resumed run rebuilds the map in bank order, and
    // the same bank must give the same bytes (exact resume is checked byte for byte)
    const byId = [...input.teachers].sort(([a], [b]) => a - b);
    for (const [id, t] of byId) for (const [k, v] of modelTensors(t, `teacher${id}.`)) all.set(k, v);
    blobs.push([files.teachers, encodeSafetensors(all)]);
  }
  const hashes: Record<string, string> = {};
  const written: string[] = [];
  try {
    for (const [name, blob] of blobs) {
      slowForTests();
      writeFileAtomic(path.join(dir, name), blob);
      written.push(name);
      hashes[name] = sha256(blob);
    }
    slowForTests();
    const state: CheckpointState = {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      ...input.state,
      ...(input.final ? { final: 'swa' as const } : {}),
      files,
      sha256: hashes,
    };
    writeFileAtomic(path.join(dir, 'state.json'), stateText(state));
  } catch (err) {
    // A save that failed (a full disk) takes its files with it: they are named by no state.json,
    // and the space they hold may be what the user needs.
    for (const name of written) fs.rmSync(path.join(dir, name), { force: true });
    throw err;
  }
  // Only now may older weight files go.
  const keep = new Set(['state.json', ...blobs.map(([n]) => n)]);
  for (const f of fs.readdirSync(dir))
    if (!keep.has(f) && /^(model|optim|teachers|aux)-e\d+f?(-\d+)?\.safetensors$|^\..*\.tmp$/.test(f))
      fs.rmSync(path.join(dir, f), { force: true });
}

/** The checkpoint folder for a run folder or a checkpoint folder. */
export function checkpointDir(dir: string): string {
  if (fs.existsSync(path.join(dir, 'state.json'))) return dir;
  if (fs.existsSync(path.join(dir, 'checkpoint', 'state.json'))) return path.join(dir, 'checkpoint');
  throw new CheckpointError(
    `${dir}: no checkpoint found (expected ${path.join(dir, 'checkpoint', 'state.json')} or ${path.join(dir, 'state.json')})`,
  );
}

/** state.json's text: the state plus state_sha256, a checksum of the state itself (stateChecksum). */
export function stateText(state: CheckpointState): string {
  return JSON.stringify({ ...state, state_sha256: stateChecksum(state) }, null, 1) + '\n';
}

/** SHA-256 of the compact JSON of the state without its state_sha256 field. */
export function stateChecksum(state: object): string {
  const rest: Record<string, unknown> = { ...state };
  delete rest.state_sha256;
  return sha256(Buffer.from(JSON.stringify(rest), 'utf8'));
}

export function readState(dir: string): CheckpointState {
  const file = path.join(dir, 'state.json');
  let state: CheckpointState;
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointState;
  } catch (err) {
    // one line: JSON.parse quotes the bytes around the error, which may hold newlines
    throw new CheckpointError(
      `${file}: cannot read the checkpoint state (${(err as Error).message.replace(/\s+/g, ' ')}); the file is corrupt or not a checkpoint`,
    );
  }
  if (state?.format !== CHECKPOINT_FORMAT)
    throw new CheckpointError(
      `${file}: not a dfl-native checkpoint (format field is ${JSON.stringify(state?.format)})`,
    );
  if (!READABLE_VERSIONS.includes(state.version))
    throw new CheckpointError(
      `${file}: checkpoint version ${state.version} is not supported (this dfl-native reads ${READABLE_VERSIONS.join(' and ')})`,
    );
  const stored = (state as { state_sha256?: unknown }).state_sha256;
  if (typeof stored !== 'string' || stored !== stateChecksum(state))
    throw new CheckpointError(
      `${file}: checksum mismatch (state_sha256); the file is corrupt (flipped bytes) or was edited`,
    );
  delete (state as { state_sha256?: unknown }).state_sha256;
  const bad = (what: string): never => {
    throw new CheckpointError(`${file}: ${what}; the checkpoint is corrupt or was edited (use another checkpoint)`);
  };
  const isStr = (v: unknown) => typeof v === 'string';
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const f = state.files as unknown;
  if (
    !isObj(f) ||
    !isStr(f.model) ||
    !isStr(f.optim) ||
    !(f.teachers === null || isStr(f.teachers)) ||
    !(f.aux === undefined || f.aux === null || isStr(f.aux))
  )
    bad('the files field is missing or malformed');
  if (!isObj(state.sha256) || !Object.values(state.sha256).every(isStr))
    bad('the sha256 field is missing or malformed');
  if (!Number.isSafeInteger(state.epoch) || state.epoch < 0)
    bad(`epoch ${JSON.stringify(state.epoch)} is not a count of epochs`);
  if (!isObj(state.spec)) bad('the spec field (the model graph) is missing');
  if (!Array.isArray(state.class_names) || state.class_names.length === 0 || !state.class_names.every(isStr))
    bad('class_names is not a list of names');
  for (const k of ['mean', 'std'] as const)
    if (
      !Array.isArray(state[k]) ||
      !state[k].every((v) => Number.isFinite(v)) ||
      (k === 'std' && !state[k].every((v) => v > 0))
    )
      bad(`${k} is not a list of finite channel statistics`);
  if (
    !Array.isArray(state.bank) ||
    !state.bank.every(
      (b) => isObj(b) && Number.isSafeInteger(b.id) && typeof b.epoch === 'number' && typeof b.score === 'number',
    )
  )
    bad('the teacher bank is malformed');
  if (!Array.isArray(state.metrics) || !state.metrics.every(isObj)) bad('metrics is not a list of epoch records');
  if (typeof state.seconds !== 'number' || typeof state.best_val_acc !== 'number')
    bad('seconds/best_val_acc are missing');
  const partial = (state as { partial?: unknown }).partial;
  if (
    partial !== undefined &&
    (!isObj(partial) ||
      !['epoch', 'batch', 'count', 'correct'].every(
        (k) => Number.isSafeInteger(partial[k]) && (partial[k] as number) >= 0,
      ))
  )
    bad('the partial-epoch record is malformed');
  const final = (state as { final?: unknown }).final;
  if (final !== undefined && final !== 'swa') bad(`final ${JSON.stringify(final)} is not 'swa'`);
  if (final !== undefined && !state.files.aux)
    bad("a final SWA model needs the aux file with the trajectory's weights");
  const averages = (state as { averages?: unknown }).averages;
  if (
    averages !== undefined &&
    (!isObj(averages) || !Object.values(averages).every((v) => v === null || Number.isFinite(v)))
  )
    bad('the averages record is malformed');
  const data = (state as { data?: unknown }).data;
  const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  const isSplit = (s: unknown) =>
    isObj(s) &&
    isCount(s.n) &&
    Array.isArray(s.shape) &&
    s.shape.length === 3 &&
    s.shape.every(isCount) &&
    Array.isArray(s.class_names) &&
    s.class_names.every(isStr) &&
    Array.isArray(s.class_counts) &&
    s.class_counts.length === s.class_names.length &&
    s.class_counts.every(isCount) &&
    isStr(s.labels_sha256) &&
    isStr(s.images_sha256);
  if (data !== undefined && (!isObj(data) || !isSplit(data.train) || !(data.test === null || isSplit(data.test))))
    bad('the data fingerprint is malformed');
  try {
    state.config = resolveSavedConfig(state.config as unknown as Record<string, unknown>);
  } catch (err) {
    bad(`its config is invalid (${(err as Error).message})`);
  }
  return state;
}

/** Reads a file the state names and checks its checksum. */
export function readVerified(dir: string, state: CheckpointState, name: string): Map<string, SafeTensor> {
  if (path.basename(name) !== name)
    throw new CheckpointError(`${path.join(dir, 'state.json')}: file name ${name} must not contain a path`);
  const file = path.join(dir, name);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    throw new CheckpointError(
      `${file}: missing (${path.join(dir, 'state.json')} names it); the checkpoint is incomplete`,
    );
  }
  const want = Object.hasOwn(state.sha256, name) ? state.sha256[name] : undefined;
  if (!want || sha256(buf) !== want)
    throw new CheckpointError(
      `${file}: checksum mismatch (its sha256 differs from the one ${path.join(dir, 'state.json')} records); the file is corrupt (flipped or truncated bytes); use another checkpoint`,
    );
  return decodeSafetensors(buf, file).tensors;
}

/** A model built from the state's spec; a bad or oversized spec is reported against state.json. */
export function modelFromState(dir: string, state: CheckpointState, seed = 0): NativeModel {
  const file = path.join(dir, 'state.json');
  const { Model } = loadBinding();
  let model: NativeModel;
  try {
    // on the CPU (eval, predict, export); the init is overwritten by the checkpoint's weights
    model = new Model(state.spec, seed, 'cpu', DEFAULT_CONFIG.convInit);
  } catch (err) {
    throw new CheckpointError(`${file}: its model spec cannot be built (${(err as Error).message})`);
  }
  const info = model.info();
  const problem =
    info.numClasses !== state.class_names.length
      ? `the model has ${info.numClasses} outputs but class_names lists ${state.class_names.length}`
      : state.mean.length !== state.spec.in_channels || state.std.length !== state.spec.in_channels
        ? `mean/std have ${state.mean.length}/${state.std.length} values for ${state.spec.in_channels} input channels`
        : null;
  if (problem) {
    model.dispose();
    throw new CheckpointError(`${file}: ${problem}; the checkpoint is corrupt or was edited (use another checkpoint)`);
  }
  return model;
}

/**
 * Restores student weights + momentum and the teachers from a checkpoint folder. Teachers are made
 * on the student's device: from their folded weights (version 2), or (version 1, whole models) by
 * loading each into a model of the spec and snapshotting it.
 */
export function restoreModels(
  dir: string,
  state: CheckpointState,
  student: NativeModel,
  device: DeviceName,
): Map<number, NativeTeacher> {
  loadModelTensors(student, readVerified(dir, state, state.files.model), path.join(dir, state.files.model));
  loadMomentum(student, readVerified(dir, state, state.files.optim), path.join(dir, state.files.optim));
  const teachers = new Map<number, NativeTeacher>();
  if (!state.files.teachers) return teachers;
  const { Model, Teacher } = loadBinding();
  const file = path.join(dir, state.files.teachers);
  const all = readVerified(dir, state, state.files.teachers);
  try {
    for (const b of state.bank) {
      if (state.version >= 2) {
        const t = new Teacher(state.spec, device);
        teachers.set(b.id, t);
        loadModelTensors(t, all, file, `teacher${b.id}.`);
      } else {
        const whole = new Model(state.spec, 0, device);
        try {
          loadModelTensors(whole, all, file, `teacher${b.id}.`);
          teachers.set(b.id, whole.snapshot());
        } finally {
          whole.dispose();
        }
      }
    }
  } catch (err) {
    for (const t of teachers.values()) t.dispose();
    throw err;
  }
  return teachers;
}

/** Loads a checkpoint for evaluation, prediction or export. */
export async function loadCheckpoint(dirOrRun: string): Promise<LoadedCheckpoint> {
  const dir = checkpointDir(dirOrRun);
  const state = readState(dir);
  const model = modelFromState(dir, state);
  try {
    loadModelTensors(model, readVerified(dir, state, state.files.model), path.join(dir, state.files.model));
  } catch (err) {
    model.dispose();
    throw err;
  }
  return {
    dir,
    state,
    model,
    config: state.config,
    spec: state.spec,
    classNames: state.class_names,
    mean: state.mean,
    std: state.std,
    inputShape: [state.spec.in_channels, state.spec.height, state.spec.width],
    epoch: state.epoch,
  };
}

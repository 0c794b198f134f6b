// Checkpoints: a folder with safetensors weights and one JSON state that names them.
//
//   checkpoint/state.json                 format, epoch, config, model spec, class names,
//                                         normalisation, teacher bank, metrics so far, and the
//                                         sha256 of every file it names
//   checkpoint/model-e0003.safetensors    the student: parameters + BN buffers, PyTorch names
//   checkpoint/optim-e0003.safetensors    SGD momentum, "momentum.<param name>"
//   checkpoint/teachers-e0003.safetensors bank teachers, "teacher<id>.<name>"
//
// Writes are crash-safe: the epoch's weight files are written (atomically) under new names, then
// state.json is replaced atomically, then older files are deleted. At every instant state.json
// names complete files, and a flipped byte in any of them is caught by its checksum.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { loadBinding, type NativeModel } from '../binding.js';
import { resolveConfig, type TrainConfig } from '../config.js';
import type { ModelSpec } from '../models/spec.js';
import type { BankEntry, EpochRecord } from '../train/types.js';
import { writeFileAtomic } from '../util/atomic.js';
import { decodeSafetensors, encodeSafetensors, type SafeTensor } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'dfl-native-checkpoint';
export const CHECKPOINT_VERSION = 1;

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
  /** Seeds of the fixed random teachers (teacher source 'random'). */
  metrics: EpochRecord[];
  best_val_acc: number;
  /** Seconds of training so far (for throughput across resumes). */
  seconds: number;
  files: { model: string; optim: string; teachers: string | null };
  sha256: Record<string, string>;
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

/** The student's parameters and buffers under their PyTorch state_dict names. */
export function modelTensors(model: NativeModel, prefix = ''): Map<string, SafeTensor> {
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
export function loadModelTensors(model: NativeModel, tensors: Map<string, SafeTensor>, file: string, prefix = ''): void {
  const params = model.getParams();
  const buffers = model.getBuffers();
  for (const t of model.tensors()) {
    const got = tensors.get(prefix + t.name);
    if (!got) throw new Error(`${file}: tensor ${prefix + t.name} is missing; the checkpoint does not match this model`);
    const want = t.name.endsWith('.num_batches_tracked') ? [] : t.shape;
    if (got.shape.length !== want.length || got.shape.some((d, i) => d !== want[i]))
      throw new Error(`${file}: tensor ${prefix + t.name} has shape [${got.shape}] but the model needs [${want}]`);
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
    if (t.kind !== 'buffer') out.set(`momentum.${t.name}`, { dtype: 'F32', shape: t.shape, data: m.slice(t.offset, t.offset + t.size) });
  return out;
}

function loadMomentum(model: NativeModel, tensors: Map<string, SafeTensor>, file: string): void {
  const m = model.getMomentum();
  for (const t of model.tensors()) {
    if (t.kind === 'buffer') continue;
    const got = tensors.get(`momentum.${t.name}`);
    if (!got || got.data.length !== t.size) throw new Error(`${file}: momentum for ${t.name} is missing or has the wrong size`);
    m.set(got.data as Float32Array, t.offset);
  }
  model.setMomentum(m);
}

const sha256 = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

export interface SaveInput {
  student: NativeModel;
  teachers: Map<number, NativeModel>;
  state: Omit<CheckpointState, 'format' | 'version' | 'files' | 'sha256'>;
}

export function saveCheckpoint(dir: string, input: SaveInput): void {
  fs.mkdirSync(dir, { recursive: true });
  const tag = `e${String(input.state.epoch).padStart(4, '0')}`;
  const files = { model: `model-${tag}.safetensors`, optim: `optim-${tag}.safetensors`, teachers: input.teachers.size ? `teachers-${tag}.safetensors` : null };
  const blobs: [string, Buffer][] = [
    [files.model, encodeSafetensors(modelTensors(input.student), { format: 'pt' })],
    [files.optim, encodeSafetensors(momentumTensors(input.student))],
  ];
  if (files.teachers) {
    const all = new Map<string, SafeTensor>();
    for (const [id, t] of input.teachers) for (const [k, v] of modelTensors(t, `teacher${id}.`)) all.set(k, v);
    blobs.push([files.teachers, encodeSafetensors(all)]);
  }
  const hashes: Record<string, string> = {};
  for (const [name, blob] of blobs) {
    writeFileAtomic(path.join(dir, name), blob);
    hashes[name] = sha256(blob);
  }
  const state: CheckpointState = { format: CHECKPOINT_FORMAT, version: CHECKPOINT_VERSION, ...input.state, files, sha256: hashes };
  writeFileAtomic(path.join(dir, 'state.json'), JSON.stringify(state, null, 1) + '\n');
  // Only now may older weight files go.
  const keep = new Set(['state.json', ...blobs.map(([n]) => n)]);
  for (const f of fs.readdirSync(dir))
    if (!keep.has(f) && /^(model|optim|teachers)-e\d+\.safetensors$|^\..*\.tmp$/.test(f)) fs.rmSync(path.join(dir, f), { force: true });
}

/** The checkpoint folder for a run folder or a checkpoint folder. */
export function checkpointDir(dir: string): string {
  if (fs.existsSync(path.join(dir, 'state.json'))) return dir;
  if (fs.existsSync(path.join(dir, 'checkpoint', 'state.json'))) return path.join(dir, 'checkpoint');
  throw new Error(`${dir}: no checkpoint found (expected ${path.join(dir, 'checkpoint', 'state.json')} or ${path.join(dir, 'state.json')})`);
}

export function readState(dir: string): CheckpointState {
  const file = path.join(dir, 'state.json');
  let state: CheckpointState;
  try {
    state = JSON.parse(fs.readFileSync(file, 'utf8')) as CheckpointState;
  } catch (err) {
    throw new Error(`${file}: cannot read the checkpoint state (${(err as Error).message})`);
  }
  if (state?.format !== CHECKPOINT_FORMAT) throw new Error(`${file}: not a dfl-native checkpoint (format field is ${JSON.stringify(state?.format)})`);
  if (state.version !== CHECKPOINT_VERSION) throw new Error(`${file}: checkpoint version ${state.version} is not supported (this dfl-native reads ${CHECKPOINT_VERSION})`);
  if (typeof state.files?.model !== 'string' || typeof state.sha256 !== 'object') throw new Error(`${file}: the files/sha256 fields are missing or malformed`);
  state.config = resolveConfig(state.config as unknown as Record<string, unknown>);
  return state;
}

/** Reads a file the state names and checks its checksum. */
export function readVerified(dir: string, state: CheckpointState, name: string): Map<string, SafeTensor> {
  if (path.basename(name) !== name) throw new Error(`${path.join(dir, 'state.json')}: file name ${name} must not contain a path`);
  const file = path.join(dir, name);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    throw new Error(`${file}: missing; the checkpoint is incomplete`);
  }
  const want = state.sha256[name];
  if (!want || sha256(buf) !== want) throw new Error(`${file}: checksum mismatch; the file is corrupt (flipped or truncated bytes)`);
  return decodeSafetensors(buf, file).tensors;
}

/** Restores student weights + momentum and the teachers' weights from a checkpoint folder. */
export function restoreModels(dir: string, state: CheckpointState, student: NativeModel, makeTeacher: () => NativeModel): Map<number, NativeModel> {
  loadModelTensors(student, readVerified(dir, state, state.files.model), path.join(dir, state.files.model));
  loadMomentum(student, readVerified(dir, state, state.files.optim), path.join(dir, state.files.optim));
  const teachers = new Map<number, NativeModel>();
  if (state.files.teachers) {
    const all = readVerified(dir, state, state.files.teachers);
    for (const b of state.bank) {
      const t = makeTeacher();
      loadModelTensors(t, all, path.join(dir, state.files.teachers), `teacher${b.id}.`);
      teachers.set(b.id, t);
    }
  }
  return teachers;
}

/** Loads a checkpoint for evaluation, prediction or export. */
export async function loadCheckpoint(dirOrRun: string): Promise<LoadedCheckpoint> {
  const dir = checkpointDir(dirOrRun);
  const state = readState(dir);
  const { Model } = loadBinding();
  const model = new Model(state.spec, 0);
  loadModelTensors(model, readVerified(dir, state, state.files.model), path.join(dir, state.files.model));
  return {
    dir, state, model, config: state.config, spec: state.spec, classNames: state.class_names, mean: state.mean, std: state.std,
    inputShape: [state.spec.in_channels, state.spec.height, state.spec.width], epoch: state.epoch,
  };
}

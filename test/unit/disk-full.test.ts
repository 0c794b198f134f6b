// A disk that fills up while a run writes (issue 26): the error names the file, says which
// checkpoint is intact and how to go on; a failed save leaves no partial or stray file behind, and
// the run resumes from the intact checkpoint to exactly the weights of an uninterrupted run.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';

import { exitCodeFor, WriteError } from '../../dist/errors.js';
import { loadCheckpoint, readState } from '../../dist/io/checkpoint.js';
import { train } from '../../dist/train/trainer.js';
import { diskWithFreeBytes, setWriteBytes, writeFileAtomic, type WriteBytes } from '../../dist/util/atomic.js';
import { syntheticSplits } from '../helpers/synthetic.js';

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `dfl-disk-${name}-`));
const base = {
  model: 'vgg8',
  width: 0.125,
  batchSize: 32,
  lr: 0.05,
  threads: 1,
  seed: 4,
  method: 'dfl',
  teachers: 2,
  resetCycle: 2,
} as const;
const data = syntheticSplits(128, 32, 4);
const ENOSPC = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

after(() => setWriteBytes(null));

/** Writes normally, except the `nth` write of a file whose name matches `name`: half of it lands, then ENOSPC. */
function failingWrite(name: RegExp, nth = 1): WriteBytes {
  let seen = 0;
  return (target, fd, bytes) => {
    if (name.test(path.basename(target)) && ++seen === nth) {
      fs.writeSync(fd, bytes, 0, bytes.length >> 1);
      throw ENOSPC();
    }
    fs.writeSync(fd, bytes);
  };
}

const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

test('writeFileAtomic on a full disk: a WriteError naming the file, the old file kept, no temp file left', () => {
  const dir = tmp('atomic');
  const file = path.join(dir, 'summary.json');
  fs.writeFileSync(file, 'old');
  setWriteBytes(diskWithFreeBytes(3));
  try {
    assert.throws(
      () => writeFileAtomic(file, 'a longer new text'),
      (e: Error) =>
        e instanceof WriteError &&
        exitCodeFor(e) === 1 &&
        e.code === 'ENOSPC' &&
        e.message ===
          `Cannot write ${file}: no space left on the device (ENOSPC). Free some disk space or write somewhere else`,
    );
  } finally {
    setWriteBytes(null);
  }
  assert.equal(fs.readFileSync(file, 'utf8'), 'old');
  assert.deepEqual(fs.readdirSync(dir), ['summary.json']);
});

test("the disk fills up in epoch 2's checkpoint: epoch 1's is intact and named, the run resumes to the uninterrupted result", async () => {
  const whole = tmp('whole');
  await train({ ...base, dataset: data, epochs: 2, out: whole }).summary;

  const out = tmp('full');
  const ckpt = path.join(out, 'checkpoint');
  setWriteBytes(failingWrite(/^optim-e0002/));
  try {
    await assert.rejects(train({ ...base, dataset: data, epochs: 2, out }).summary, (e: Error) => {
      assert.ok(e instanceof WriteError, `${e.name}: ${e.message}`);
      assert.equal(exitCodeFor(e), 1);
      assert.equal(
        e.message,
        `Cannot write ${path.join(ckpt, 'optim-e0002.safetensors')}: no space left on the device (ENOSPC). ` +
          `The checkpoint of epoch 1 in ${ckpt} is intact (its state.json names only complete files). ` +
          `Free some disk space and continue with \`dfl-native train --resume ${out}\`, or continue on a disk with room: \`dfl-native train --resume ${out} --out DIR\`.`,
      );
      return true;
    });
  } finally {
    setWriteBytes(null);
  }
  // epoch 2's model file (written before the failure) went with the failed save; no temp file stays
  assert.deepEqual(fs.readdirSync(ckpt).sort(), [
    'model-e0001.safetensors',
    'optim-e0001.safetensors',
    'state.json',
    'teachers-e0001.safetensors',
  ]);
  const loaded = await loadCheckpoint(out);
  assert.equal(loaded.epoch, 1);
  loaded.model.dispose();

  // resumed elsewhere (the --out the message offers), then in place: both end as the uninterrupted run
  const elsewhere = tmp('elsewhere');
  const moved = await train({ resume: out, dataset: data, out: elsewhere }).summary;
  assert.equal(moved.epochs, 2);
  await train({ resume: out, dataset: data }).summary;
  const want = path.join(whole, 'checkpoint', readState(path.join(whole, 'checkpoint')).files.model);
  for (const dir of [elsewhere, out])
    assert.equal(
      sha(path.join(dir, 'checkpoint', readState(path.join(dir, 'checkpoint')).files.model)),
      sha(want),
      dir,
    );
});

test('the disk is full before the first checkpoint: no checkpoint is claimed, none is left half-written', async () => {
  const out = tmp('first');
  setWriteBytes(failingWrite(/^state\.json$/));
  try {
    await assert.rejects(
      train({ ...base, dataset: data, epochs: 1, out }).summary,
      (e: Error) =>
        e instanceof WriteError &&
        e.message ===
          `Cannot write ${path.join(out, 'checkpoint', 'state.json')}: no space left on the device (ENOSPC). ` +
            'No checkpoint was saved yet. Free some disk space (or choose another --out) and start the run again.',
    );
  } finally {
    setWriteBytes(null);
  }
  assert.deepEqual(
    fs.readdirSync(path.join(out, 'checkpoint')),
    [],
    'the weight files of the failed save are gone with it',
  );
});

test("an interrupted epoch saves under new names: a failure in that save leaves the finished epoch's checkpoint whole", async () => {
  const out = tmp('partial');
  const ckpt = path.join(out, 'checkpoint');
  const ctl = new AbortController();
  const run = train({ ...base, dataset: data, epochs: 3, out, signal: ctl.signal });
  run.on('batch', (p: { epoch: number; batch: number }) => {
    if (p.epoch === 2 && p.batch === 2) {
      ctl.abort();
      // the partial save of epoch 2 has the tag of finished epoch 1: its second file fails
      setWriteBytes(failingWrite(/^optim-e0001/));
    }
  });
  try {
    await assert.rejects(
      run.summary,
      (e: Error) =>
        e instanceof WriteError &&
        e.file === path.join(ckpt, 'optim-e0001-2.safetensors') &&
        e.message.includes(`The checkpoint of epoch 1 in ${ckpt} is intact`),
    );
  } finally {
    setWriteBytes(null);
  }
  const loaded = await loadCheckpoint(out); // every checksum of epoch 1's files still holds
  assert.equal(loaded.epoch, 1);
  loaded.model.dispose();
  assert.deepEqual(fs.readdirSync(ckpt).sort(), [
    'model-e0001.safetensors',
    'optim-e0001.safetensors',
    'state.json',
    'teachers-e0001.safetensors',
  ]);
  // without a failure, the interrupted save takes the new names and the resume finishes
  const ctl2 = new AbortController();
  const again = train({ resume: out, dataset: data, signal: ctl2.signal });
  again.on('batch', (p: { epoch: number; batch: number }) => {
    if (p.epoch === 2 && p.batch === 2) ctl2.abort();
  });
  assert.equal((await again.summary).interrupted, true);
  const state = readState(ckpt);
  assert.equal(state.files.model, 'model-e0001-2.safetensors');
  assert.equal(state.partial?.batch, 2);
  assert.equal((await train({ resume: out, dataset: data }).summary).epochs, 3);
});

test('a caller that continues runs its own way (study) gives the advice: the message names it, not train --resume', async () => {
  const out = tmp('study');
  setWriteBytes(failingWrite(/^optim-e0002/));
  try {
    const continueWith = (folder: string) =>
      `run the same \`dfl-native study\` command again (same --out): it continues ${folder} from that checkpoint`;
    await assert.rejects(
      train({ ...base, dataset: data, epochs: 2, out, continueWith }).summary,
      (e: Error) =>
        e instanceof WriteError &&
        e.message.endsWith(
          `Free some disk space and run the same \`dfl-native study\` command again (same --out): it continues ${out} from that checkpoint.`,
        ) &&
        !e.message.includes('train --resume'),
    );
  } finally {
    setWriteBytes(null);
  }
});

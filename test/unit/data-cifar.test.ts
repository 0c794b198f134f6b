import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import { detectCifar, detectSource, loadCifar, loadData, loadDataset, DataError } from '../../dist/data/index.js';
import {
  cifar100File,
  cifar10File,
  coarseNames,
  fineNames,
  pixelAt,
  tempDir,
  warnings,
  writeCifar10,
  writeCifar100,
} from '../helpers/data.js';

const tmp = tempDir();
after(tmp.cleanup);
let n = 0;
const fresh = () => {
  const d = path.join(tmp.dir, `case${n++}`);
  fs.mkdirSync(d);
  return d;
};

/** Asserts a DataError whose message names `file` and matches `what`. */
async function rejectsNaming(p: Promise<unknown> | (() => unknown), file: string, what: RegExp) {
  const fn = typeof p === 'function' ? async () => p() : () => p;
  await assert.rejects(fn, (err: Error) => {
    assert.ok(err instanceof DataError, `expected a DataError, got ${err}`);
    assert.ok(err.message.includes(file), `message should name ${file}: ${err.message}`);
    assert.match(err.message, what);
    return true;
  });
}

describe('CIFAR-10 binary', () => {
  it('loads the official layout: labels and channel-planar pixels, batches in order', async () => {
    const root = fresh();
    const d = writeCifar10(root, 4, 5);
    const { train, test } = await loadData(d);
    assert.equal(train.n, 20);
    assert.equal(test!.n, 5);
    assert.deepEqual([train.channels, train.height, train.width], [3, 32, 32]);
    assert.deepEqual(train.classNames, [
      'airplane',
      'automobile',
      'bird',
      'cat',
      'deer',
      'dog',
      'frog',
      'horse',
      'ship',
      'truck',
    ]);
    assert.deepEqual(
      [...train.labels],
      Array.from({ length: 20 }, (_, k) => k % 10),
    );
    assert.deepEqual([...test!.labels], [0, 3, 6, 9, 2]);
    // record i, channel c, row y, column x lands at images[((i*3 + c)*32 + y)*32 + x]
    for (const [i, c, y, x] of [
      [0, 0, 0, 0],
      [5, 1, 3, 31],
      [19, 2, 31, 0],
      [7, 2, 16, 17],
    ]) {
      assert.equal(train.images[((i * 3 + c) * 32 + y) * 32 + x], pixelAt(i, c, y, x));
    }
    assert.equal(test!.images[((4 * 3 + 1) * 32 + 2) * 32 + 3], pixelAt(1004, 1, 2, 3));
  });

  it('detects the format from the folder or from its parent', () => {
    const root = fresh();
    const d = writeCifar10(root, 2, 2);
    assert.deepEqual(detectCifar(d), { kind: 'cifar10', dir: d });
    assert.deepEqual(detectCifar(root), { kind: 'cifar10', dir: d });
    assert.equal(detectSource(root), 'cifar10');
    assert.equal(detectCifar(fresh()), null);
  });

  it('rejects a truncated batch file, naming it', async () => {
    const d = writeCifar10(fresh(), 3, 2);
    const f = path.join(d, 'data_batch_3.bin');
    fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 3073 * 2 + 1000));
    await rejectsNaming(loadData(d), f, /truncated.*2 whole 3073-byte CIFAR-10 records plus 1000 stray bytes/);
  });

  it('rejects an oversized batch file (more records than the format holds)', async () => {
    const d = writeCifar10(fresh(), 2, 2);
    const f = path.join(d, 'test_batch.bin');
    const rec = cifar10File([1]);
    fs.writeFileSync(f, Buffer.concat(Array.from({ length: 10001 }, () => rec)));
    await rejectsNaming(loadData(d), f, /oversized: holds 10001 records .* at most 10000/);
  });

  it('rejects an empty file and a CIFAR-100 file in a CIFAR-10 folder', async () => {
    const d = writeCifar10(fresh(), 2, 2);
    fs.writeFileSync(path.join(d, 'data_batch_2.bin'), Buffer.alloc(0));
    await rejectsNaming(loadData(d), path.join(d, 'data_batch_2.bin'), /is empty/);
    const d2 = writeCifar10(fresh(), 2, 2);
    fs.writeFileSync(path.join(d2, 'data_batch_1.bin'), cifar100File([1, 2, 3], [4, 5, 6]));
    await rejectsNaming(loadData(d2), path.join(d2, 'data_batch_1.bin'), /multiple of 3074, the CIFAR-100 record size/);
  });

  it('rejects a label byte out of range, naming file and record', async () => {
    const d = writeCifar10(fresh(), 4, 2);
    const f = path.join(d, 'data_batch_2.bin');
    fs.writeFileSync(f, cifar10File([1, 2, 10, 3]));
    await rejectsNaming(loadData(d), f, /record 2 \(byte 6146\) has label 10, outside 0\.\.9/);
  });

  it('warns about missing batches and a missing test file, and still loads', async () => {
    const d = writeCifar10(fresh(), 2, 2);
    fs.rmSync(path.join(d, 'data_batch_4.bin'));
    fs.rmSync(path.join(d, 'test_batch.bin'));
    const w = warnings();
    const s = await loadData(d, { onWarning: w.onWarning });
    assert.equal(s.train.n, 8);
    assert.equal(s.test, null);
    assert.ok(
      w.list.some((m) => m.includes('data_batch_4.bin not found')),
      w.list.join('\n'),
    );
    assert.ok(
      w.list.some((m) => m.includes('test_batch.bin not found')),
      w.list.join('\n'),
    );
  });

  it('resizes with imageSize', async () => {
    const d = writeCifar10(fresh(), 1, 1);
    const s = await loadData(d, { imageSize: 16 });
    assert.deepEqual(
      [s.train.n, s.train.channels, s.train.height, s.train.width, s.train.images.length],
      [5, 3, 16, 16, 5 * 3 * 256],
    );
  });
});

describe('CIFAR-100 binary', () => {
  it('loads fine labels (default) with fine names', async () => {
    const root = fresh();
    const d = writeCifar100(root, 12, 6);
    const r = await loadDataset(root);
    assert.equal(r.kind, 'cifar100');
    const { train, test } = r.splits;
    assert.equal(train.n, 12);
    assert.equal(test!.n, 6);
    assert.deepEqual(train.classNames, fineNames);
    assert.deepEqual(
      [...train.labels],
      Array.from({ length: 12 }, (_, k) => (k * 7) % 100),
    );
    assert.deepEqual(
      [...test!.labels],
      Array.from({ length: 6 }, (_, k) => ((k + 50) * 7) % 100),
    );
    for (const [i, c, y, x] of [
      [0, 0, 0, 0],
      [11, 2, 31, 31],
      [6, 1, 9, 4],
    ])
      assert.equal(train.images[((i * 3 + c) * 32 + y) * 32 + x], pixelAt(i, c, y, x));
    assert.equal(test!.images[((5 * 3 + 2) * 32 + 1) * 32 + 1], pixelAt(505, 2, 1, 1));
    assert.deepEqual(detectCifar(d), { kind: 'cifar100', dir: d });
  });

  it('loads coarse labels with coarse names', async () => {
    const d = writeCifar100(fresh(), 12, 6);
    const { train } = await loadData(d, { labels: 'coarse' });
    assert.deepEqual(train.classNames, coarseNames);
    assert.deepEqual(
      [...train.labels],
      Array.from({ length: 12 }, (_, k) => ((k * 7) % 100) % 20),
    );
  });

  it('rejects a fine or coarse label out of range, and a truncated file', async () => {
    const d = writeCifar100(fresh(), 4, 2);
    const f = path.join(d, 'train.bin');
    fs.writeFileSync(f, cifar100File([0, 1, 2, 3], [0, 100, 2, 3]));
    await rejectsNaming(loadData(d), f, /record 1 \(byte 3075\) has fine label 100, outside 0\.\.99/);
    fs.writeFileSync(f, cifar100File([0, 1, 20, 3], [0, 1, 2, 3]));
    await rejectsNaming(loadData(d, { labels: 'fine' }), f, /record 2 .* has coarse label 20, outside 0\.\.19/);
    const t = path.join(d, 'test.bin');
    fs.writeFileSync(f, cifar100File([0], [0]));
    fs.writeFileSync(t, cifar100File([0, 1], [0, 1]).subarray(0, 5000));
    await rejectsNaming(loadData(d), t, /truncated/);
  });

  it('rejects a names file with the wrong number of names', async () => {
    const d = writeCifar100(fresh(), 2, 2);
    const f = path.join(d, 'coarse_label_names.txt');
    fs.writeFileSync(f, 'a\nb\n');
    await rejectsNaming(loadData(d, { labels: 'coarse' }), f, /lists 2 class names but the format has 20/);
  });

  it('loadCifar on a folder that is neither format names it', () => {
    const d = fresh();
    assert.throws(
      () => loadCifar(d),
      (e: Error) => e instanceof DataError && e.message.includes(d),
    );
  });
});

describe('loadData source errors', () => {
  it('a missing folder gives a clear error naming it', async () => {
    const missing = path.join(tmp.dir, 'no-such-folder');
    await rejectsNaming(loadData(missing), missing, /no such file or folder; give --data/);
  });

  it('a plain file gives a clear error', async () => {
    const f = path.join(fresh(), 'x.txt');
    fs.writeFileSync(f, 'hello');
    await rejectsNaming(loadData(f), f, /is a file/);
  });

  it('bad options give Expected/received errors', async () => {
    await assert.rejects(
      loadData(undefined, { imageSize: 0 }),
      /Expected an integer in \[1, 4096\] for imageSize but received 0/,
    );
    await assert.rejects(
      loadData(undefined, { labels: 'medium' as 'fine' }),
      /Expected 'fine' or 'coarse' for labels but received "medium"/,
    );
  });
});

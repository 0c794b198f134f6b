import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import {
  classCounts,
  loadData,
  loadDataset,
  readSampleContainer,
  SAMPLE_FILE,
  DataError,
} from '../../dist/data/index.js';
import { tempDir } from '../helpers/data.js';

const tmp = tempDir();
after(tmp.cleanup);

describe('bundled sample', () => {
  it('is in the package and small', () => {
    const size = fs.statSync(SAMPLE_FILE).size;
    assert.ok(size < 15e6, `sample is ${size} bytes`);
    const { header, splits } = readSampleContainer(SAMPLE_FILE, { verify: true });
    assert.equal(header.classNames.length, 10);
    assert.deepEqual(
      splits.map((s) => [s.name, s.images.length]),
      [
        ['train', 10000],
        ['test', 2000],
      ],
    );
    assert.ok(
      splits[0].images.every((b) => b[0] === 0xff && b[1] === 0xd8),
      'original JPEG bytes',
    );
  });

  it('decodes on first use (10 classes, equal counts), then loads from the decoded cache', async () => {
    const cacheDir = path.join(tmp.dir, 'cache');
    const first = await loadDataset(undefined, { cacheDir });
    assert.equal(first.kind, 'sample');
    assert.equal(first.cache, 'miss');
    const { train, test } = first.splits;
    assert.deepEqual([train.n, train.channels, train.height, train.width], [10000, 3, 32, 32]);
    assert.equal(test!.n, 2000);
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
    assert.deepEqual(classCounts(train), new Array(10).fill(1000));
    assert.deepEqual(classCounts(test!), new Array(10).fill(200));
    let sum = 0;
    for (let i = 0; i < train.images.length; i += 97) sum += train.images[i];
    assert.ok(sum > 0, 'real pixels');
    const t0 = performance.now();
    const second = await loadDataset('sample', { cacheDir });
    const ms = performance.now() - t0;
    assert.equal(second.cache, 'hit');
    assert.ok(ms < 1500, `cached load took ${ms} ms`);
    assert.deepEqual(second.splits.train.images, train.images);
  });

  it('a corrupt sample file is a clear error', async () => {
    const f = path.join(tmp.dir, 'bad.dfls');
    fs.writeFileSync(f, 'DFLSAMP1garbage');
    await assert.rejects(
      loadData(f, { cacheDir: path.join(tmp.dir, 'cache2') }),
      (e: Error) => e instanceof DataError && e.message.includes(f) && /not a valid dfl-native sample/.test(e.message),
    );
  });
});

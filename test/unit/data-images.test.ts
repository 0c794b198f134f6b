import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import {
  DataError,
  detectSource,
  listImageFolder,
  loadDataset,
  loadImageFolder,
  sniffGrayscale,
} from '../../dist/data/index.js';
import { hwcPixels, tempDir, warnings, writeImage, writeImageFolder } from '../helpers/data.js';

const tmp = tempDir();
after(tmp.cleanup);
let n = 0;
const fresh = () => path.join(tmp.dir, `case${n++}`);
const cacheDir = path.join(tmp.dir, 'cache');

async function rejectsNaming(p: Promise<unknown>, file: string, what: RegExp) {
  await assert.rejects(p, (err: Error) => {
    assert.ok(err instanceof DataError, `expected a DataError, got ${err}`);
    assert.ok(err.message.includes(file), `message should name ${file}: ${err.message}`);
    assert.match(err.message, what);
    return true;
  });
}

/** CHW pixel of an image written by writeImage with seed s. */
const px = (s: number, w: number, h: number, C: number, c: number, y: number, x: number) =>
  hwcPixels(s, w, h, C)[(y * w + x) * C + c];

describe('image folders', () => {
  it('train/ + test/ layout, PNG and lossless WEBP: exact channel-planar pixels and sorted class names', async () => {
    const root = fresh();
    await writeImageFolder(path.join(root, 'train'), ['zebra', 'Apple', 'mango'], 3, { fmt: 'png', w: 6, h: 5 });
    await writeImageFolder(path.join(root, 'test'), ['zebra', 'Apple', 'mango'], 2, { fmt: 'webp', w: 6, h: 5 });
    assert.equal(detectSource(root), 'images');
    const r = await loadDataset(root, { cacheDir });
    assert.equal(r.kind, 'images');
    const { train, test } = r.splits;
    assert.deepEqual(train.classNames, ['Apple', 'mango', 'zebra']); // code-point order
    assert.deepEqual(test!.classNames, train.classNames);
    assert.deepEqual([train.n, train.channels, train.height, train.width], [9, 3, 5, 6]);
    assert.deepEqual([...train.labels], [0, 0, 0, 1, 1, 1, 2, 2, 2]);
    assert.deepEqual([...test!.labels], [0, 0, 1, 1, 2, 2]);
    // train image 4 is mango/001.png: class index 2 in writing order ['zebra','Apple','mango'] -> seed 201
    for (const [c, y, x] of [
      [0, 0, 0],
      [1, 4, 5],
      [2, 2, 3],
    ])
      assert.equal(train.images[(4 * 3 + c) * 30 + y * 6 + x], px(201, 6, 5, 3, c, y, x));
    // test image 1 is Apple/001.webp: seed 101
    assert.equal(test!.images[(1 * 3 + 2) * 30 + 3 * 6 + 1], px(101, 6, 5, 3, 2, 3, 1));
  });

  it('JPEG images decode to the right size with pixels close to the source', async () => {
    const root = fresh();
    await writeImageFolder(root, ['a', 'b'], 2, { fmt: 'jpg', w: 8, h: 8 });
    fs.renameSync(path.join(root, 'b', '001.jpg'), path.join(root, 'b', '001.JPEG'));
    const { train, test } = (await loadDataset(root, { cacheDir, testSplit: 0 })).splits;
    assert.equal(test, null);
    assert.deepEqual([train.n, train.channels, train.height, train.width], [4, 3, 8, 8]);
    let err = 0;
    for (let c = 0; c < 3; ++c)
      for (let y = 0; y < 8; ++y)
        for (let x = 0; x < 8; ++x)
          err = Math.max(err, Math.abs(train.images[(0 * 3 + c) * 64 + y * 8 + x] - px(0, 8, 8, 3, c, y, x)));
    assert.ok(err < 40, `JPEG error ${err}`);
  });

  it('grayscale-only folders load as 1 channel; mixed gray + RGB load as RGB', async () => {
    const gray = fresh();
    await writeImageFolder(gray, ['a', 'b'], 2, { fmt: 'png', channels: 1, w: 4, h: 4 });
    const g = (await loadImageFolder(gray, { cacheDir, testSplit: 0 })).splits.train;
    assert.equal(g.channels, 1);
    assert.equal(g.images.length, 4 * 16);
    assert.equal(g.images[2 * 16 + 5], px(100, 4, 4, 1, 0, 1, 1));

    const mixed = fresh();
    await writeImage(path.join(mixed, 'a', '0.png'), 7, { channels: 1, w: 4, h: 4 });
    await writeImage(path.join(mixed, 'a', '1.png'), 8, { channels: 3, w: 4, h: 4 });
    await writeImage(path.join(mixed, 'b', '0.png'), 9, { channels: 4, w: 4, h: 4 }); // alpha is dropped
    const m = (await loadImageFolder(mixed, { cacheDir, testSplit: 0 })).splits.train;
    assert.equal(m.channels, 3);
    const v = px(7, 4, 4, 1, 0, 2, 3);
    for (let c = 0; c < 3; ++c) assert.equal(m.images[c * 16 + 2 * 4 + 3], v); // gray replicated
    assert.equal(m.images[(1 * 3 + 1) * 16 + 5], px(8, 4, 4, 3, 1, 1, 1));
    assert.equal(m.images[(2 * 3 + 2) * 16 + 0], px(9, 4, 4, 4, 2, 0, 0));
  });

  it('grayscale JPEGs load as 1 channel; the header sniffer tells gray from colour', async () => {
    const root = fresh();
    await writeImageFolder(root, ['a', 'b'], 2, { fmt: 'jpg', channels: 1, w: 8, h: 8 });
    const g = (await loadImageFolder(root, { cacheDir, testSplit: 0 })).splits.train;
    assert.equal(g.channels, 1);
    assert.ok(Math.abs(g.images[3 * 64 + 9] - px(101, 8, 8, 1, 0, 1, 1)) < 20);
    const f = (p: string) => sniffGrayscale(fs.readFileSync(p));
    assert.equal(f(path.join(root, 'a', '000.jpg')), true);
    const other = fresh();
    await writeImage(path.join(other, 'rgb.jpg'), 1);
    await writeImage(path.join(other, 'rgb.png'), 1);
    await writeImage(path.join(other, 'gray.png'), 1, { channels: 1 });
    await writeImage(path.join(other, 'rgb.webp'), 1);
    assert.deepEqual(
      ['rgb.jpg', 'rgb.png', 'gray.png', 'rgb.webp'].map((n) => f(path.join(other, n))),
      [false, false, true, false],
    );
    assert.equal(sniffGrayscale(Buffer.from('not an image')), null);
  });

  it('imageSize resizes mixed sizes; without it mixed sizes are an error naming both files', async () => {
    const root = fresh();
    await writeImage(path.join(root, 'a', '0.png'), 1, { w: 10, h: 10 });
    await writeImage(path.join(root, 'a', '1.png'), 2, { w: 10, h: 10 });
    await writeImage(path.join(root, 'b', '0.png'), 3, { w: 12, h: 7 });
    await rejectsNaming(
      loadImageFolder(root, { cacheDir }),
      path.join(root, 'b', '0.png'),
      /is 12x7 but .*a\/0\.png is 10x10.*--image-size/,
    );
    const r = await loadImageFolder(root, { cacheDir, imageSize: 6, testSplit: 0 });
    assert.deepEqual(
      [r.splits.train.n, r.splits.train.height, r.splits.train.width, r.splits.train.images.length],
      [3, 6, 6, 3 * 3 * 36],
    );
  });

  it('a missing folder, a folder without class folders, and test classes unknown to train are errors', async () => {
    const missing = path.join(tmp.dir, 'nope');
    await rejectsNaming(loadImageFolder(missing), missing, /folder not found/);
    const flat = fresh();
    await writeImage(path.join(flat, 'x.png'), 1);
    await rejectsNaming(loadImageFolder(flat), flat, /no class folders/);
    const root = fresh();
    await writeImageFolder(path.join(root, 'train'), ['a', 'b'], 1);
    await writeImageFolder(path.join(root, 'test'), ['a', 'c'], 1);
    await rejectsNaming(
      loadImageFolder(root, { cacheDir }),
      path.join(root, 'test', 'c'),
      /not among the 2 training classes/,
    );
  });

  it('an empty class folder is an error, or skipped with a warning under skipBadFiles', async () => {
    const root = fresh();
    await writeImageFolder(root, ['a', 'b'], 2);
    fs.mkdirSync(path.join(root, 'empty'));
    fs.writeFileSync(path.join(root, 'empty', 'notes.txt'), 'not an image');
    await rejectsNaming(
      loadImageFolder(root, { cacheDir }),
      path.join(root, 'empty'),
      /empty class folder.*--skip-bad-files/,
    );
    const w = warnings();
    const r = await loadImageFolder(root, { cacheDir, skipBadFiles: true, testSplit: 0, onWarning: w.onWarning });
    assert.deepEqual(r.splits.train.classNames, ['a', 'b']);
    assert.ok(
      w.list.some((m) => m.includes(path.join(root, 'empty')) && /class "empty" is left out/.test(m)),
      w.list.join('\n'),
    );
  });

  it('a corrupt image or a non-image file with an image name is an error naming it, or skipped with a warning', async () => {
    const root = fresh();
    await writeImageFolder(root, ['a', 'b'], 2, { fmt: 'png' });
    const notImage = path.join(root, 'a', 'zz-notes.jpg');
    fs.writeFileSync(notImage, 'this is text, not a JPEG');
    await rejectsNaming(
      loadImageFolder(root, { cacheDir }),
      notImage,
      /cannot be decoded as an image.*corrupt, truncated or not an image.*--skip-bad-files/,
    );
    fs.rmSync(notImage);
    const full = fs.readFileSync(path.join(root, 'b', '001.png'));
    const trunc = path.join(root, 'b', '002.png');
    fs.writeFileSync(trunc, full.subarray(0, Math.floor(full.length / 2)));
    await rejectsNaming(loadImageFolder(root, { cacheDir }), trunc, /cannot be decoded/);

    const w = warnings();
    const r = await loadImageFolder(root, { cacheDir, skipBadFiles: true, testSplit: 0, onWarning: w.onWarning });
    assert.equal(r.splits.train.n, 4);
    assert.deepEqual([...r.splits.train.labels], [0, 0, 1, 1]);
    assert.ok(
      w.list.some((m) => m.includes(trunc) && /skipped/.test(m)),
      w.list.join('\n'),
    );
    // the cached load repeats the warning: never a silent drop
    const w2 = warnings();
    const r2 = await loadImageFolder(root, { cacheDir, skipBadFiles: true, testSplit: 0, onWarning: w2.onWarning });
    assert.equal(r2.cache, 'hit');
    assert.ok(
      w2.list.some((m) => m.includes(trunc)),
      w2.list.join('\n'),
    );
  });

  it('one folder + testSplit: stratified, seeded, and disjoint', async () => {
    const root = fresh();
    await writeImageFolder(root, ['a', 'b'], 10, { w: 4, h: 4 });
    const r = await loadImageFolder(root, { cacheDir, testSplit: 0.2, seed: 3 });
    const { train, test } = r.splits;
    assert.equal(r.layout, 'single');
    assert.equal(train.n, 16);
    assert.equal(test!.n, 4);
    assert.deepEqual([...test!.labels].sort(), [0, 0, 1, 1]);
    const again = await loadImageFolder(root, { cacheDir, testSplit: 0.2, seed: 3 });
    assert.deepEqual(again.splits.test!.images, test!.images);
    // default split is 20%
    assert.equal((await loadImageFolder(root, { cacheDir })).splits.test!.n, 4);
  });

  it('listImageFolder ignores hidden and non-image files with a warning', async () => {
    const root = fresh();
    await writeImageFolder(root, ['a'], 2);
    fs.writeFileSync(path.join(root, 'a', '.DS_Store'), 'x');
    fs.writeFileSync(path.join(root, 'a', 'readme.txt'), 'x');
    const w = warnings();
    const l = listImageFolder(root, { onWarning: w.onWarning });
    assert.equal(l.train.files.length, 2);
    assert.ok(
      w.list.some((m) => m.includes('readme.txt')),
      w.list.join('\n'),
    );
  });
});

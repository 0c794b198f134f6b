import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  channelStats,
  DataError,
  epochOrder,
  fromArrays,
  gatherBatch,
  stratifiedSplit,
  subset,
  type Dataset,
} from '../../dist/data/index.js';
import { Rng, permutation } from '../../dist/util/random.js';

const labelsOf = (counts: number[]) => Int32Array.from(counts.flatMap((c, y) => Array<number>(c).fill(y)));

describe('stratifiedSplit', () => {
  it('holds out round(n*fraction), per class floor/ceil of its share, disjoint and complete', () => {
    const counts = [100, 37, 5, 1, 58];
    const labels = labelsOf(counts);
    const { train, val } = stratifiedSplit(labels, 0.1, 42);
    const n = labels.length;
    assert.equal(val.length, Math.round(n * 0.1));
    assert.equal(train.length + val.length, n);
    const all = new Set([...train, ...val]);
    assert.equal(all.size, n);
    for (const a of [train, val]) for (let i = 1; i < a.length; ++i) assert.ok(a[i] > a[i - 1], 'ascending');
    counts.forEach((c, y) => {
      const k = [...val].filter((i) => labels[i] === y).length;
      assert.ok(k === Math.floor(c * 0.1) || k === Math.ceil(c * 0.1), `class ${y}: ${k} of ${c}`);
    });
  });

  it('is deterministic for a seed, differs across seeds, and is pure', () => {
    const labels = labelsOf([50, 50, 50]);
    const copy = labels.slice();
    const a = stratifiedSplit(labels, 0.2, 7);
    const b = stratifiedSplit(labels, 0.2, 7);
    const c = stratifiedSplit(labels, 0.2, 8);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.val, c.val);
    assert.deepEqual(labels, copy);
  });

  it('fraction 0 holds out nothing; bad fractions throw', () => {
    assert.equal(stratifiedSplit(labelsOf([3, 3]), 0, 1).val.length, 0);
    assert.throws(() => stratifiedSplit(labelsOf([3]), 1, 1), /Expected a fraction in \[0, 1\)/);
    assert.throws(() => stratifiedSplit([0, -1], 0.5, 1), /Expected a non-negative integer for labels\[1\]/);
  });
});

describe('epochOrder and gatherBatch', () => {
  it('epochOrder is a permutation determined by (seed, epoch) alone', () => {
    const a = epochOrder(1000, 5, 3);
    assert.deepEqual(
      [...a].sort((x, y) => x - y),
      Array.from({ length: 1000 }, (_, i) => i),
    );
    assert.deepEqual(epochOrder(1000, 5, 3), a);
    assert.notDeepEqual(epochOrder(1000, 5, 4), a);
    assert.notDeepEqual(epochOrder(1000, 6, 3), a);
    assert.equal(epochOrder(0, 1, 1).length, 0);
  });

  it('gatherBatch copies images and labels contiguously into given or new buffers', () => {
    const ds: Dataset = {
      images: Uint8Array.from({ length: 5 * 2 * 2 * 2 }, (_, i) => i),
      labels: Int32Array.from([0, 1, 2, 0, 1]),
      n: 5,
      channels: 2,
      height: 2,
      width: 2,
      classNames: ['a', 'b', 'c'],
      source: 't',
    };
    const b = gatherBatch(ds, [4, 0, 2]);
    assert.deepEqual([...b.labels], [1, 0, 2]);
    assert.deepEqual([...b.images.subarray(0, 8)], [32, 33, 34, 35, 36, 37, 38, 39]);
    assert.deepEqual([...b.images.subarray(8, 16)], [0, 1, 2, 3, 4, 5, 6, 7]);
    const outI = new Uint8Array(8 * 8),
      outL = new Int32Array(8);
    const c = gatherBatch(ds, Int32Array.from([1, 3]), outI, outL);
    assert.equal(c.images.buffer, outI.buffer);
    assert.equal(c.images.length, 16);
    assert.deepEqual([...outL.subarray(0, 2)], [1, 0]);
    assert.throws(() => gatherBatch(ds, [5]), /Expected an index in \[0, 5\) for indices\[0\] but received 5/);
    assert.throws(() => gatherBatch(ds, [0, 1], new Uint8Array(8)), /at least 16 bytes/);
  });

  it('Rng: int is in range and unbiased enough; permutation is seeded', () => {
    const r = new Rng(123);
    const hist = new Array(6).fill(0);
    for (let i = 0; i < 60000; ++i) hist[r.int(6)]++;
    for (const h of hist) assert.ok(Math.abs(h - 10000) < 500, String(hist));
    assert.deepEqual(permutation(10, 9), permutation(10, 9));
    const x = new Rng(1).next();
    assert.ok(x >= 0 && x < 1);
  });
});

describe('dataset helpers', () => {
  it('channelStats refuses a constant channel, naming the channel and its value and suggesting --mean/--std', () => {
    const n = 2,
      C = 3,
      hw = 4;
    const images = Uint8Array.from({ length: n * C * hw }, (_, i) =>
      Math.floor(i / hw) % C === 1 ? 128 : (i * 37) % 256,
    );
    const ds = fromArrays({
      images,
      labels: [0, 1],
      shape: [n, C, 2, 2] as [number, number, number, number],
      classNames: ['x', 'y'],
    });
    assert.throws(
      () => channelStats(ds),
      (e: Error) => {
        assert.ok(e instanceof DataError, e.name);
        assert.match(e.message, /channel 1 is 128 \(of 255\) in all 2 images/);
        assert.match(e.message, /--mean 0\.5 0\.5 0\.5 --std 0\.25 0\.25 0\.25/);
        return true;
      },
    );
  });

  it('channelStats matches a direct computation, in [0, 1] units', () => {
    const n = 3,
      C = 3,
      hw = 4;
    const images = Uint8Array.from({ length: n * C * hw }, (_, i) => (i * 37) % 256);
    const ds = fromArrays({
      images,
      labels: [0, 1, 0],
      shape: [n, C, 2, 2] as [number, number, number, number],
      classNames: ['x', 'y'],
    });
    const s = channelStats(ds);
    for (let c = 0; c < C; ++c) {
      const v: number[] = [];
      for (let i = 0; i < n; ++i) for (let j = 0; j < hw; ++j) v.push(images[(i * C + c) * hw + j] / 255);
      const m = v.reduce((a, b) => a + b, 0) / v.length;
      const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length);
      assert.ok(Math.abs(s.mean[c] - m) < 1e-12);
      assert.ok(Math.abs(s.std[c] - sd) < 1e-12);
    }
  });

  it('subset copies the chosen images', () => {
    const ds = fromArrays({ images: Uint8Array.from([1, 2, 3]), labels: [0, 1, 2], shape: [3, 1, 1, 1] });
    const s = subset(ds, [2, 0]);
    assert.deepEqual([...s.images], [3, 1]);
    assert.deepEqual([...s.labels], [2, 0]);
    assert.deepEqual(ds.classNames, ['0', '1', '2']);
  });

  it('fromArrays errors all read "Expected X for Y but received Z"', () => {
    const ok = { images: new Uint8Array(2 * 3 * 2 * 2), labels: [0, 1], shape: [2, 3, 2, 2], classNames: ['a', 'b'] };
    const bad: [object, RegExp][] = [
      [{ ...ok, shape: [2, 3, 2] }, /^Expected an array \[N, C, H, W\] for shape but received an array of length 3$/],
      [{ ...ok, shape: [2, 3, 0, 2] }, /^Expected a positive integer for shape\[2\] \(H\) but received 0$/],
      [
        { ...ok, shape: [2, 4, 2, 2] },
        /^Expected 1 \(grayscale\) or 3 \(RGB\) for shape\[1\] \(channels\) but received 4$/,
      ],
      [
        { ...ok, images: new Float32Array(24) },
        /^Expected a Uint8Array .* for images but received a Float32Array of length 24$/,
      ],
      [{ ...ok, images: new Uint8Array(23) }, /^Expected 24 bytes \(2x3x2x2\) for images but received 23$/],
      [{ ...ok, labels: [0] }, /^Expected 2 entries \(shape\[0\]\) for labels but received 1$/],
      [{ ...ok, labels: [0, 1.5] }, /^Expected a non-negative integer class index for labels\[1\] but received 1.5$/],
      [{ ...ok, labels: [0, 2] }, /^Expected a class index in \[0, 2\) for labels\[1\] but received 2$/],
      [{ ...ok, classNames: ['a', 'a'] }, /^Expected distinct names for classNames but received "a" twice$/],
      [{ ...ok, labels: 'x' }, /^Expected an Int32Array or an array of integers for labels but received "x"$/],
    ];
    for (const [input, re] of bad)
      assert.throws(
        () => fromArrays(input as never),
        (e: Error) => e instanceof DataError && re.test(e.message),
      );
    const ds = fromArrays(ok as never);
    assert.equal(ds.images, ok.images); // shared, not copied
    assert.deepEqual([ds.n, ds.channels, ds.height, ds.width], [2, 3, 2, 2]);
  });
});

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import {
  cacheFileFor,
  defaultCacheDir,
  loadImageFolder,
  readCache,
  writeCache,
  listingChecksum,
} from '../../dist/data/index.js';
import { tempDir, warnings, writeImage, writeImageFolder } from '../helpers/data.js';

const tmp = tempDir();
after(tmp.cleanup);

describe('decoded cache', () => {
  it('miss, then hit with identical data; stale after a change; corrupt is rebuilt', async () => {
    const root = path.join(tmp.dir, 'imgs');
    const cacheDir = path.join(tmp.dir, 'cache');
    await writeImageFolder(path.join(root, 'train'), ['a', 'b'], 3, { w: 5, h: 5 });
    await writeImageFolder(path.join(root, 'test'), ['a', 'b'], 1, { w: 5, h: 5 });
    const first = await loadImageFolder(root, { cacheDir });
    assert.equal(first.cache, 'miss');
    assert.ok(first.cacheFile && fs.existsSync(first.cacheFile));
    assert.equal(path.dirname(first.cacheFile), cacheDir);
    assert.deepEqual(
      fs.readdirSync(cacheDir).filter((f) => f.endsWith('.tmp')),
      [],
    ); // atomic: no temp left

    const hit = await loadImageFolder(root, { cacheDir });
    assert.equal(hit.cache, 'hit');
    assert.deepEqual(hit.splits.train.images, first.splits.train.images);
    assert.deepEqual(hit.splits.train.labels, first.splits.train.labels);
    assert.deepEqual(hit.splits.test!.images, first.splits.test!.images);
    assert.deepEqual(hit.splits.train.classNames, ['a', 'b']);

    // a new file makes it stale: rebuilt with a warning, and the new image is in
    await writeImage(path.join(root, 'train', 'b', 'new.png'), 77, { w: 5, h: 5 });
    const w = warnings();
    const stale = await loadImageFolder(root, { cacheDir, onWarning: w.onWarning });
    assert.equal(stale.cache, 'stale');
    assert.equal(stale.splits.train.n, 7);
    assert.ok(
      w.list.some((m) => /is stale/.test(m) && m.includes(first.cacheFile!)),
      w.list.join('\n'),
    );
    // a modified file (same name, new size/mtime) also makes it stale
    await writeImage(path.join(root, 'train', 'a', '000.png'), 55, { w: 5, h: 5, fmt: 'webp' });
    fs.utimesSync(path.join(root, 'train', 'a', '000.png'), new Date(), new Date(Date.now() + 5000));
    assert.equal((await loadImageFolder(root, { cacheDir })).cache, 'stale');
    assert.equal((await loadImageFolder(root, { cacheDir })).cache, 'hit');

    // flip one payload byte: payload checksum mismatch -> rebuilt with a warning
    const buf = fs.readFileSync(first.cacheFile!);
    buf[buf.length - 50] ^= 0xff;
    fs.writeFileSync(first.cacheFile!, buf);
    const w2 = warnings();
    const c = await loadImageFolder(root, { cacheDir, onWarning: w2.onWarning });
    assert.equal(c.cache, 'corrupt');
    assert.ok(
      w2.list.some(
        (m) => /is corrupt \(payload checksum mismatch\); rebuilding/.test(m) && m.includes(first.cacheFile!),
      ),
      w2.list.join('\n'),
    );
    assert.equal((await loadImageFolder(root, { cacheDir })).cache, 'hit');

    // a truncated cache and garbage are corrupt too
    fs.writeFileSync(first.cacheFile!, fs.readFileSync(first.cacheFile!).subarray(0, 100));
    assert.equal((await loadImageFolder(root, { cacheDir })).cache, 'corrupt');
    fs.writeFileSync(first.cacheFile!, 'garbage');
    assert.equal((await loadImageFolder(root, { cacheDir })).cache, 'corrupt');
    // different options -> a different cache file
    const resized = await loadImageFolder(root, { cacheDir, imageSize: 4 });
    assert.equal(resized.cache, 'miss');
    assert.notEqual(resized.cacheFile, first.cacheFile);
    // cache: false reads and writes nothing
    assert.equal((await loadImageFolder(root, { cacheDir, cache: false })).cache, 'off');
  });

  it('an unwritable cache folder warns and still loads', async () => {
    const root = path.join(tmp.dir, 'imgs2');
    await writeImageFolder(root, ['a', 'b'], 2, { w: 4, h: 4 });
    const blocker = path.join(tmp.dir, 'blocker');
    fs.writeFileSync(blocker, 'a file where a folder should be');
    const w = warnings();
    const r = await loadImageFolder(root, {
      cacheDir: path.join(blocker, 'sub'),
      testSplit: 0,
      onWarning: w.onWarning,
    });
    assert.equal(r.splits.train.n, 4);
    assert.ok(
      w.list.some((m) => /could not write the decoded cache/.test(m)),
      w.list.join('\n'),
    );
  });

  it('round-trips through writeCache/readCache and checks the listing', () => {
    const file = path.join(tmp.dir, 'rt', 'x.dflc');
    const ds = {
      images: Uint8Array.from({ length: 2 * 3 * 4 }, (_, i) => i),
      labels: Int32Array.from([1, 0]),
      n: 2,
      channels: 3,
      height: 2,
      width: 2,
      classNames: ['p', 'q'],
      source: 'unit',
    };
    const listing = listingChecksum([{ path: 'a.png', size: 10, mtimeMs: 5 }], 'k');
    writeCache(file, listing, { train: ds, test: null }, ['note']);
    const r = readCache(file, listing);
    assert.equal(r.status, 'hit');
    if (r.status !== 'hit') return;
    assert.deepEqual(r.splits.train.images, ds.images);
    assert.deepEqual(r.splits.train.labels, ds.labels);
    assert.equal(r.splits.test, null);
    assert.deepEqual(r.notes, ['note']);
    assert.equal(readCache(file, listingChecksum([{ path: 'a.png', size: 11, mtimeMs: 5 }], 'k')).status, 'stale');
    assert.equal(readCache(path.join(tmp.dir, 'none.dflc'), listing).status, 'missing');
  });

  it('the default cache folder honours DFL_CACHE_DIR; file names are stable per source+options', () => {
    const old = process.env.DFL_CACHE_DIR;
    process.env.DFL_CACHE_DIR = path.join(tmp.dir, 'envcache');
    try {
      assert.equal(defaultCacheDir(), path.join(tmp.dir, 'envcache'));
    } finally {
      if (old === undefined) delete process.env.DFL_CACHE_DIR;
      else process.env.DFL_CACHE_DIR = old;
    }
    assert.equal(cacheFileFor('/c', '/data/x', 'k1'), cacheFileFor('/c', '/data/x', 'k1'));
    assert.notEqual(cacheFileFor('/c', '/data/x', 'k1'), cacheFileFor('/c', '/data/x', 'k2'));
    assert.match(path.basename(cacheFileFor('/c', '/data/x', 'k1')), /^x-[0-9a-f]{16}\.dflc$/);
  });
});

// The source folders form layers: a lower layer never imports from a higher one. io (checkpoints,
// reports, export) sits below train (the epoch loop that uses it), so io must not reach up into train.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

/** Relative import specifiers of every .ts file in src/<folder>. */
function importsOf(folder: string): { file: string; spec: string }[] {
  const out: { file: string; spec: string }[] = [];
  for (const name of fs.readdirSync(path.join(src, folder))) {
    if (!name.endsWith('.ts')) continue;
    const text = fs.readFileSync(path.join(src, folder, name), 'utf8');
    for (const m of text.matchAll(/^(?:import|export)\b[^;]*?from\s+'(\.[^']+)'/gms))
      out.push({ file: `${folder}/${name}`, spec: m[1] });
  }
  return out;
}

test('io, data, models and util never import from train or cli', () => {
  for (const folder of ['io', 'data', 'models', 'util']) {
    const up = importsOf(folder).filter((i) => /(^|\/)(train|cli|study)\//.test(i.spec));
    assert.deepEqual(up, [], `${folder} imports from a higher layer`);
  }
});

test('the run records live below io and train', () => {
  const records = importsOf('.').filter((i) => i.file === './records.ts');
  assert.ok(fs.existsSync(path.join(src, 'records.ts')), 'src/records.ts holds EpochRecord, BankEntry, TrainSummary');
  assert.ok(
    records.every((i) => !/(io|train|cli)\//.test(i.spec)),
    'records.ts depends on nothing above it',
  );
});

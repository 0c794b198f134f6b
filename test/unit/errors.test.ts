// One error hierarchy with stable exit codes (src/errors.ts, docs/cli.md#exit-codes): bad input is
// 2 in every command, a failed run 1; no other file declares an error class.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  CheckpointError,
  ConfigError,
  DataError,
  DflError,
  DivergenceError,
  EXIT,
  exitCodeFor,
  InputError,
  RunError,
  UsageError,
  WriteError,
  writeFailure,
} from '../../dist/errors.js';
import * as api from '../../dist/index.js';

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

test('each kind of error keeps one exit code: input 2, run failure 1, anything unforeseen 1', () => {
  for (const E of [UsageError, ConfigError, DataError, CheckpointError]) {
    const e = new E('x');
    assert.ok(e instanceof InputError && e instanceof DflError && e instanceof Error, E.name);
    assert.equal(e.name, E.name);
    assert.equal(exitCodeFor(e), 2, E.name);
  }
  for (const e of [new DivergenceError('x'), new WriteError('x', 'f', 'why'), new RunError('x')]) {
    assert.ok(e instanceof RunError && e instanceof DflError);
    assert.equal(exitCodeFor(e), 1, e.name);
  }
  assert.equal(exitCodeFor(new RangeError('dfl-native: a native check')), 1);
  assert.equal(exitCodeFor('a string'), 1);
  assert.deepEqual(EXIT, { ok: 0, failure: 1, usage: 2, interrupted: 130 });
  assert.equal(new DataError('x', 'a.png').file, 'a.png');
});

test('the library exports the hierarchy', () => {
  for (const name of [
    'DflError',
    'InputError',
    'UsageError',
    'ConfigError',
    'DataError',
    'CheckpointError',
    'RunError',
    'DivergenceError',
    'WriteError',
    'exitCodeFor',
  ])
    assert.ok(name in api, name);
  assert.equal(api.DataError, DataError);
});

test('src/errors.ts is the only file that declares an error class, and it imports nothing', () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else if (e.name.endsWith('.ts')) files.push(path.join(dir, e.name));
    }
  };
  walk(src);
  const declaring = files
    .filter((f) => /\bclass\s+\w+\s+extends\s+\w*Error\b/.test(fs.readFileSync(f, 'utf8')))
    .map((f) => path.relative(src, f));
  assert.deepEqual(declaring, ['errors.ts']);
  assert.doesNotMatch(fs.readFileSync(path.join(src, 'errors.ts'), 'utf8'), /^import /m);
});

test('a failed write names the file, says why in words and what to do', () => {
  const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  const e = writeFailure('runs/a/checkpoint/model-e0002.safetensors', enospc);
  assert.ok(e instanceof WriteError);
  assert.equal(exitCodeFor(e), 1);
  assert.equal(
    e.message,
    'Cannot write runs/a/checkpoint/model-e0002.safetensors: no space left on the device (ENOSPC). Free some disk space or write somewhere else',
  );
  assert.equal(e.code, 'ENOSPC');
  assert.equal(e.file, 'runs/a/checkpoint/model-e0002.safetensors');
  // a caller that knows more replaces the remedy and keeps the cause
  const again = writeFailure(e.file, e, 'The checkpoint of epoch 1 is intact.');
  assert.equal(
    again.message,
    'Cannot write runs/a/checkpoint/model-e0002.safetensors: no space left on the device (ENOSPC). The checkpoint of epoch 1 is intact.',
  );
  const denied = writeFailure(
    'out.onnx',
    Object.assign(new Error('EACCES: permission denied, open'), { code: 'EACCES' }),
  );
  assert.equal(
    denied.message,
    'Cannot write out.onnx: permission denied (EACCES). Make the folder writable or write somewhere else',
  );
});

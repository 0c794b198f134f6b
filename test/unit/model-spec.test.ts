// A JSON model spec (--model net.json) is checked whole before training, and every problem is a
// ConfigError naming the file (the CLI's exit code 2 for bad input), never a half-built run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import { ConfigError } from '../../dist/errors.js';
import { resolveModelSpec } from '../../dist/models/resolve.js';
import { tinySpec } from '../helpers/native.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dfl-spec-'));
const zoo = { numClasses: 4, inChannels: 3, height: 8, width: 8 };

/** Writes `spec` (an object, or text as is) to a file and resolves it. */
function resolveFile(name: string, spec: unknown): unknown {
  const file = path.join(dir, name);
  fs.writeFileSync(file, typeof spec === 'string' ? spec : JSON.stringify(spec));
  return resolveModelSpec(file, zoo);
}

function rejects(name: string, spec: unknown, message: RegExp): void {
  assert.throws(
    () => resolveFile(name, spec),
    (e: Error) => {
      assert.ok(e instanceof ConfigError, `${name}: ${e.name}: ${e.message}`);
      assert.ok(e.message.startsWith(`${path.join(dir, name)}: `), e.message);
      assert.match(e.message, message);
      assert.match(e.message, /see docs\/models\.md/);
      assert.doesNotMatch(e.message, /undefined(x|$)/);
      return true;
    },
  );
}

test('a valid spec file resolves to its graph', () => {
  assert.deepEqual(resolveFile('ok.json', tinySpec()), tinySpec());
});

test('a spec without in_channels, height or width is refused up front, naming the field', () => {
  const { in_channels: _c, ...noChannels } = tinySpec();
  rejects('no-channels.json', noChannels, /in_channels but received undefined/);
  const { height: _h, ...noHeight } = tinySpec();
  rejects('no-height.json', noHeight, /height but received undefined/);
  rejects('no-nodes.json', { in_channels: 3, height: 8, width: 8 }, /"nodes" array/);
});

test('a bad node is a ConfigError naming the node, like every other bad option', () => {
  const spec = tinySpec();
  rejects(
    'unknown-op.json',
    { ...spec, nodes: [...spec.nodes.slice(0, 2), { op: 'frob', inputs: [1] }] },
    /for spec\.nodes\[2\]\.op but received string 'frob'/,
  );
  const mismatch = tinySpec();
  mismatch.nodes.push({ op: 'add', inputs: [1, 0] });
  rejects('add-shapes.json', mismatch, /node \d+ .*add needs equal shapes but its inputs are \d+x8x8 and 3x8x8/);
  const bigKernel = tinySpec();
  bigKernel.nodes[1].kernel_h = 99;
  rejects('kernel.json', bigKernel, /node 1 .*kernel 99x3 does not fit/);
  const unnamed = tinySpec();
  delete unnamed.nodes[1].name;
  rejects('unnamed.json', unnamed, /node 1 .*need a name/);
  rejects('bad-json.json', '{"in_channels": 3,', /cannot read the model spec/);
  // A dead branch (a node nothing reads) would train nothing and leave its gradient unwritten.
  const dead = tinySpec();
  const last = dead.nodes.length - 1;
  dead.nodes.splice(last, 0, { op: 'relu', inputs: [1] });
  const head = dead.nodes[last + 1]!;
  head.inputs = (head.inputs ?? []).map((i: number) => (i >= last ? i + 1 : i));
  rejects(
    'dead-branch.json',
    dead,
    new RegExp(`node ${last} .*relu.*not an input of any later node.*connect it or remove it`),
  );
});

test('an unknown key (a typo the native model would ignore) is refused, listing what the op takes', () => {
  const typo = tinySpec() as unknown as { nodes: Record<string, unknown>[] };
  typo.nodes[1].kernal_h = 5;
  rejects(
    'typo.json',
    typo,
    /node 1 \(conv 'features\.0'\): unknown attribute 'kernal_h' \(a conv node takes op, name, inputs, out_channels, kernel_h, /,
  );
  rejects(
    'top.json',
    { ...tinySpec(), depth: 3 },
    /unknown key 'depth' \(a model spec has in_channels, height, width, nodes\)/,
  );
});

test('a width multiplier that rounds a layer below one channel is refused, naming the smallest width', () => {
  for (const [model, smallest] of [
    ['vgg8', 0.008],
    ['resnet18', 0.008],
    ['mobilenetv2', 0.032],
    ['shufflenetv2', 0.021],
  ] as const) {
    assert.throws(
      () => resolveModelSpec(model, { ...zoo, width_multiplier: 1e-6 }),
      (e: Error) => {
        assert.ok(e instanceof ConfigError, `${model}: ${e.name}`);
        assert.match(
          e.message,
          new RegExp(
            `every layer of ${model} at least one channel.* but received 0\\.000001: .*Give --width ${smallest} or more`,
          ),
        );
        return true;
      },
    );
    // the width it names is accepted, and a layer rounds to exactly one channel there
    const spec = resolveModelSpec(model, { ...zoo, width_multiplier: smallest });
    assert.ok(spec.nodes.length > 0);
  }
});

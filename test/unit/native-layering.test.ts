// The native folders form layers (docs/native.md): core includes nothing of cpu/, cuda/ or addon/;
// cpu and cuda include core and themselves only; no product folder includes dev/ or test code.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const native = path.join(root, 'native');
const SOURCE = /\.(h|hpp|cpp|cu|cuh)$/;

/** Every `#include "..."` of the sources under native/<folder>, with the folder it names ('' for none). */
function includesOf(folder: string): { file: string; target: string; layer: string }[] {
  const out: { file: string; target: string; layer: string }[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (SOURCE.test(e.name))
        for (const m of fs.readFileSync(p, 'utf8').matchAll(/^\s*#\s*include\s+"([^"]+)"/gm)) {
          const target = m[1];
          const slash = target.indexOf('/');
          // a bare name is a file of the including folder (or, for dev/, of test/native)
          out.push({ file: path.relative(native, p), target, layer: slash < 0 ? '' : target.slice(0, slash) });
        }
    }
  };
  walk(path.join(native, folder));
  return out;
}

// The addon reaches kernels only through the backend (core/backend.h): its host-side image
// preparation runs on the CPU backend, whose device memory is host memory.
const ALLOWED: Record<string, string[]> = {
  core: ['core'],
  cpu: ['core', 'cpu'],
  cuda: ['core', 'cuda'],
  addon: ['core', 'addon'],
};

test('native include rules: core -> core; cpu, cuda -> core and themselves; addon -> core', () => {
  for (const [folder, allowed] of Object.entries(ALLOWED)) {
    const bad = includesOf(folder).filter((i) => i.layer !== '' && !allowed.includes(i.layer));
    assert.deepEqual(bad, [], `native/${folder} includes what its layer may not`);
  }
});

test('no product source includes dev/ tools or test code', () => {
  for (const folder of Object.keys(ALLOWED)) {
    const bad = includesOf(folder).filter(
      (i) => i.layer === 'dev' || i.layer === 'test' || /(^|\/)(harness|fixtures|backend_ops)\.h$/.test(i.target),
    );
    assert.deepEqual(bad, [], `native/${folder} includes dev or test code`);
  }
});

test('the include scan sees the includes it checks (it would catch a violation)', () => {
  const core = includesOf('core');
  assert.ok(
    core.length > 10 && core.every((i) => i.layer === 'core' || i.layer === ''),
    'core has includes and all are core',
  );
  assert.ok(
    includesOf('cpu').some((i) => i.layer === 'core') && includesOf('addon').some((i) => i.layer === 'core'),
    'cpu and addon include core',
  );
});

// CI-sized fuzzing (a few hundred inputs per target) with the engine of scripts/ci/fuzz.mjs.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fuzzTarget, TARGETS } from '../helpers/fuzz.js';

const PER_TARGET = Number(process.env.DFL_FUZZ_PER_TARGET ?? 300);

for (const name of Object.keys(TARGETS)) {
  test(`fuzz ${name}: ${PER_TARGET} mutated inputs load or are rejected with a clear error`, async () => {
    const r = await fuzzTarget(name, { seed: 424242, count: PER_TARGET });
    assert.equal(r.inputs, PER_TARGET);
    assert.ok(r.accepted > 0 && r.rejected > 0, `both outcomes occur (accepted ${r.accepted}, rejected ${r.rejected})`);
    assert.deepEqual(r.findings, [], `${r.crashes} input(s) were not a clean accept/reject`);
  });
}

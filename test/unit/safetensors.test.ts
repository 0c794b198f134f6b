import assert from 'node:assert/strict';
import { test } from 'node:test';

import { decodeSafetensors, encodeSafetensors, type SafeTensor } from '../../dist/io/safetensors.js';

function sample(): Map<string, SafeTensor> {
  return new Map<string, SafeTensor>([
    ['a.weight', { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, -6.5]) }],
    ['a.num_batches_tracked', { dtype: 'I64', shape: [], data: BigInt64Array.from([7n]) }],
  ]);
}

test('round trip keeps names, shapes, values and metadata; data is 8-byte aligned', () => {
  const buf = encodeSafetensors(sample(), { format: 'pt' });
  const hlen = Number(buf.readBigUInt64LE(0));
  assert.equal((8 + hlen) % 8, 0);
  const { tensors, metadata } = decodeSafetensors(buf, 'x.safetensors');
  assert.deepEqual(metadata, { format: 'pt' });
  assert.deepEqual(tensors.get('a.weight')!.shape, [2, 3]);
  assert.deepEqual(Array.from(tensors.get('a.weight')!.data as Float32Array), [1, 2, 3, 4, 5, -6.5]);
  assert.equal((tensors.get('a.num_batches_tracked')!.data as BigInt64Array)[0], 7n);
});

test('hostile headers are rejected with the file name, never read out of bounds', () => {
  const good = encodeSafetensors(sample());
  const cases: [string, Buffer][] = [];
  cases.push(['truncated', good.subarray(0, 20)]);
  cases.push(['tiny', Buffer.alloc(3)]);
  const huge = Buffer.from(good);
  huge.writeBigUInt64LE(1n << 60n, 0);
  cases.push(['header length', huge]);
  const mk = (header: unknown, data = 0) => {
    const h = Buffer.from(JSON.stringify(header));
    const b = Buffer.alloc(8 + h.length + data);
    b.writeBigUInt64LE(BigInt(h.length), 0);
    h.copy(b, 8);
    return b;
  };
  cases.push(['offsets past end', mk({ t: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 8)]);
  cases.push(['shape mismatch', mk({ t: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8)]);
  cases.push([
    'overlap',
    mk(
      { t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, u: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
      12,
    ),
  ]);
  cases.push(['dtype', mk({ t: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, 4)]);
  cases.push(['not json', Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{oops')])]);
  cases.push(['negative', mk({ t: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4)]);
  for (const [why, buf] of cases) {
    assert.throws(
      () => decodeSafetensors(buf, 'bad.safetensors'),
      (e: Error) => e.message.startsWith('bad.safetensors: not a valid safetensors file'),
      why,
    );
  }
});

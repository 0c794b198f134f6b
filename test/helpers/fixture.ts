// Reader for the PyTorch fixtures in test/fixtures/ (DFLFIX version 1, written by
// scripts/fixtures/make_fixtures.py and scripts/fixtures/zoo_reference.py; format in test/fixtures/README.md). The
// C++ tests read the same files with test/native/fixtures.h.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test', 'fixtures');

export interface FixtureTensor {
  dims: number[];
  data: Float32Array | Int32Array;
}

export class Fixture {
  private constructor(
    readonly file: string,
    private readonly tensors: Map<string, FixtureTensor>,
  ) {}

  /** Reads test/fixtures/<name>; a bad magic, version, truncation or trailing bytes throw, naming the file. */
  static open(name: string): Fixture {
    const file = path.join(FIXTURE_DIR, name);
    const buf = fs.readFileSync(file);
    const fail = (what: string): never => {
      throw new Error(`${file}: ${what}`);
    };
    if (buf.length < 16 || buf.subarray(0, 8).toString('latin1') !== 'DFLFIX1\0')
      fail('not a DFLFIX fixture (bad magic)');
    if (buf.readUInt32LE(8) !== 1) fail(`version ${buf.readUInt32LE(8)}, expected 1`);
    const count = buf.readUInt32LE(12);
    const tensors = new Map<string, FixtureTensor>();
    let at = 16;
    const u32 = () => {
      if (at + 4 > buf.length) fail('truncated');
      const v = buf.readUInt32LE(at);
      at += 4;
      return v;
    };
    for (let k = 0; k < count; ++k) {
      const nameLen = u32();
      const tname = buf.subarray(at, at + nameLen).toString('utf8');
      at += nameLen;
      const dtype = u32();
      const dims = Array.from({ length: u32() }, u32);
      const n = dims.reduce((a, d) => a * d, 1);
      if (at + 4 * n > buf.length) fail(`tensor ${tname} is truncated`);
      const bytes = new Uint8Array(buf.subarray(at, at + 4 * n)).buffer; // a copy: 4-byte aligned
      tensors.set(tname, { dims, data: dtype === 1 ? new Int32Array(bytes) : new Float32Array(bytes) });
      at += 4 * n;
    }
    if (at !== buf.length) fail(`${buf.length - at} trailing bytes`);
    return new Fixture(file, tensors);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  f(name: string): Float32Array {
    const t = this.tensors.get(name);
    if (!t || !(t.data instanceof Float32Array)) throw new Error(`${this.file}: no float32 tensor ${name}`);
    return t.data;
  }

  i(name: string): Int32Array {
    const t = this.tensors.get(name);
    if (!t || !(t.data instanceof Int32Array)) throw new Error(`${this.file}: no int32 tensor ${name}`);
    return t.data;
  }

  scalar(name: string): number {
    return this.f(name)[0];
  }

  cfg(key: string): number {
    return this.scalar(`cfg.${key}`);
  }
}

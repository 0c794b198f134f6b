// Atomic file writes: write a temp file beside the target, fsync, rename over the target. A reader
// (or a run killed mid-write) sees the old file or the new one, never a torn one; a write that
// fails (a full disk) removes its temp file and throws a WriteError naming the target.
import fs from 'node:fs';
import path from 'node:path';

import { writeFailure } from '../errors.js';

/**
 * Puts `data` into the open file `fd` (the temp file of `target`). Swapped by tests (setWriteBytes)
 * to fail as a full disk does, part-way through a file.
 */
export type WriteBytes = (target: string, fd: number, data: Uint8Array) => void;

const writeAll: WriteBytes = (_target, fd, data) => {
  for (let done = 0; done < data.length;) done += fs.writeSync(fd, data, done, data.length - done);
};

/**
 * A disk with `free` bytes left: each write takes what still fits, then fails with ENOSPC as
 * write(2) does. For tests; DFL_TEST_DISK_FREE_BYTES=N installs one in a child process.
 */
export function diskWithFreeBytes(free: number): WriteBytes {
  let left = free;
  return (target, fd, data) => {
    const fits = Math.min(left, data.length);
    writeAll(target, fd, data.subarray(0, fits));
    left -= fits;
    if (fits < data.length)
      throw Object.assign(new Error('ENOSPC: no space left on device, write'), {
        code: 'ENOSPC',
        errno: -28,
        syscall: 'write',
      });
  };
}

const testDisk = Number(process.env.DFL_TEST_DISK_FREE_BYTES);
let writeBytes: WriteBytes =
  process.env.DFL_TEST_DISK_FREE_BYTES && testDisk >= 0 ? diskWithFreeBytes(testDisk) : writeAll;

/** Test hook: route every atomic write through `w` (null: back to the file system). */
export function setWriteBytes(w: WriteBytes | null): void {
  writeBytes = w ?? writeAll;
}

/** Writes `data` (text, bytes, or byte chunks in order) to `file` atomically; a failure is a WriteError. */
export function writeFileAtomic(file: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const chunks = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  let fd: number | null = null;
  try {
    fs.mkdirSync(dir, { recursive: true });
    fd = fs.openSync(tmp, 'w');
    for (const c of chunks) writeBytes(file, fd, c);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== null) fs.closeSync(fd); // after a failed write close still works: it only frees the descriptor
    fs.rmSync(tmp, { force: true });
    throw writeFailure(file, err);
  }
  try {
    const dfd = fs.openSync(dir, 'r');
    fs.fsyncSync(dfd);
    fs.closeSync(dfd);
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic.
  }
}

// The errors dfl-native throws on purpose, and the exit code each kind gives (docs/cli.md#exit-codes).
// One hierarchy for the library and every command: a command never picks a code itself, it throws
// the kind of error that says whose problem it is.
//
//   DflError
//     InputError      2  something the user gave is wrong; the message says what to change
//       UsageError       the command line (a flag, a missing argument)
//       ConfigError      option values (flags, --config files, model specs, train() options)
//       DataError        data (folders, CIFAR files, images, arrays)
//       CheckpointError  a checkpoint or exported ONNX file that is missing, corrupt or does not fit
//     RunError        1  the input was valid but the run failed
//       DivergenceError  the loss or the weights became NaN/Inf
//       WriteError       a file could not be written (disk full, permissions)
//
// Anything else (a bug, a native failure JavaScript did not foresee) exits 1 too.
// This file imports nothing: every layer may use it.

export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const;

export abstract class DflError extends Error {
  abstract readonly exitCode: number;
}

/** Bad input: exit code 2. `file` names the offending file or folder when there is one. */
export class InputError extends DflError {
  override name = 'InputError';
  readonly exitCode: number = EXIT.usage;
  readonly file: string | undefined;
  constructor(message: string, file?: string) {
    super(message);
    this.file = file;
  }
}

/** Bad usage of the command line (a flag, a missing file argument). */
export class UsageError extends InputError {
  override name = 'UsageError';
}

/** Invalid options (flags, config files, model specs, train() options). */
export class ConfigError extends InputError {
  override name = 'ConfigError';
}

/** Bad input data: files, folders, arrays. */
export class DataError extends InputError {
  override name = 'DataError';
}

/** A checkpoint (or exported ONNX file) that is missing, corrupt, or does not fit the model. */
export class CheckpointError extends InputError {
  override name = 'CheckpointError';
}

/** A run that failed on valid input: exit code 1. */
export class RunError extends DflError {
  override name = 'RunError';
  readonly exitCode: number = EXIT.failure;
}

/** The loss or the weights became NaN/Inf. */
export class DivergenceError extends RunError {
  override name = 'DivergenceError';
}

/**
 * A file could not be written: `file` is the file, `reason` the cause in words, `code` the
 * system's error code (ENOSPC, EACCES, ...).
 */
export class WriteError extends RunError {
  override name = 'WriteError';
  readonly file: string;
  readonly reason: string;
  readonly code: string | undefined;
  constructor(message: string, file: string, reason: string, code?: string) {
    super(message);
    this.file = file;
    this.reason = reason;
    this.code = code;
  }
}

/** The exit code for an error: its kind's code; 1 for anything unforeseen. */
export function exitCodeFor(err: unknown): number {
  return err instanceof DflError ? err.exitCode : EXIT.failure;
}

const DISK_FULL = new Set(['ENOSPC', 'EDQUOT', 'EFBIG']);
const NOT_WRITABLE = new Set(['EACCES', 'EPERM', 'EROFS']);

/** What to do about a failed write, as the start of a sentence: free space, fix permissions, or fix the cause. */
export function writeRemedy(err: unknown): string {
  const code = (err as { code?: unknown })?.code as string;
  return DISK_FULL.has(code)
    ? 'Free some disk space'
    : NOT_WRITABLE.has(code)
      ? 'Make the folder writable'
      : 'Fix the cause';
}

/**
 * A failed write of `file` as a WriteError: the file, the cause in words, and `remedy` (what the
 * failure means for the user and what to do; without it, a generic one). A WriteError passed in
 * keeps its cause and takes the new remedy.
 */
export function writeFailure(file: string, err: unknown, remedy?: string): WriteError {
  const e = err as NodeJS.ErrnoException | undefined;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const reason =
    err instanceof WriteError
      ? err.reason
      : code === 'ENOSPC'
        ? 'no space left on the device'
        : code === 'EDQUOT'
          ? 'the disk quota is exhausted'
          : code === 'EFBIG'
            ? 'the file is larger than this file system allows'
            : code === 'EACCES' || code === 'EPERM'
              ? 'permission denied'
              : code === 'EROFS'
                ? 'the file system is read-only'
                : String(e?.message ?? err).replace(/\s+/g, ' ');
  const todo = remedy ?? `${writeRemedy(err)} or write somewhere else`;
  return new WriteError(`Cannot write ${file}: ${reason}${code ? ` (${code})` : ''}. ${todo}`, file, reason, code);
}

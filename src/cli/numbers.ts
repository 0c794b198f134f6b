// Numeric flags keep the text the user typed until it is validated, so an error can quote it
// (`--lr abc` -> "... for --lr but received 'abc'"): yargs' own number type would hand on NaN.
// The flags carry no yargs type, and cli.ts turns yargs' number guessing off, so the text of every
// numeric flag reaches these functions as typed ('1e400' and '0x10' included).
import type { Options } from 'yargs';

import { expected } from '../config.js';

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** A finite decimal number as a number; anything else unchanged, for validation to quote. */
export function numberOrText(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  const n = DECIMAL.test(v.trim()) ? Number(v) : NaN;
  return Number.isFinite(n) ? n : v;
}

/** A flag given twice (`--lr 0.1 ... --lr 0.2`): the last one wins, as in most CLIs. */
export const lastWins = (v: unknown): unknown => (Array.isArray(v) ? v[v.length - 1] : v);

/** yargs options of a flag that takes one number. */
export function numberFlag(o: Options): Options {
  return { requiresArg: true, ...o, coerce: (v: unknown) => numberOrText(lastWins(v)) };
}

/** yargs options of a flag that takes numbers: `--milestones 30 60` or `--milestones 30,60`. */
export function numbersFlag(o: Options): Options {
  return {
    type: 'string',
    array: true,
    requiresArg: true,
    ...o,
    coerce: (v: unknown) =>
      (Array.isArray(v) ? v : [v])
        .flatMap((x) => String(x).split(','))
        .map((s) => s.trim())
        .filter(Boolean)
        .map(numberOrText),
  };
}

/** A numeric flag's value checked by `ok` (undefined when the flag is absent); else an error quoting what was typed. */
export function checkedNumber(v: unknown, flag: string, what: string, ok: (n: number) => boolean): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'number' && ok(v)) return v;
  throw expected(what, flag, v);
}

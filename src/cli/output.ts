// How the CLI talks: exit codes, one-line errors, JSON lines, the per-epoch progress bar and the
// fixed-column epoch table. Commands decide what to say; this file decides how it looks.
//
// Two modes, chosen once per command:
//   human  stdout is a terminal and --json was not given: progress bar (stderr, redrawn in place)
//          and aligned rows (stdout);
//   json   otherwise: stdout carries JSON lines only (one object a line), no escape codes; notes
//          go to stderr as plain lines, a run's log messages are JSON lines (Output.log).
import { EXIT, exitCodeFor } from '../errors.js';

/** Prints one clear line for an error (the stack only with --verbose) and returns the exit code. */
export function reportError(err: unknown, verbose = false): number {
  const code = exitCodeFor(err);
  const e = err instanceof Error ? err : new Error(String(err));
  // Native errors already carry the "dfl-native: " prefix; print it once.
  const message = e.message.trim().replace(/^dfl-native: /, '') || e.name;
  process.stderr.write(`dfl-native: error: ${message}\n`);
  if (verbose && e.stack) process.stderr.write(`${e.stack}\n`);
  return code;
}

export interface OutputOptions {
  json?: boolean;
  /** Overrides the terminal test (tests). */
  tty?: boolean;
}

/** Runs a command body; maps its failure to an exit code without throwing out of yargs. */
export async function runCommand(verbose: boolean | undefined, body: () => Promise<number | void>): Promise<void> {
  try {
    const code = await body();
    process.exitCode = code ?? EXIT.ok;
  } catch (err) {
    process.exitCode = reportError(err, verbose ?? false);
  }
}

export class Output {
  readonly json: boolean;
  readonly human: boolean;
  private barShown = false;
  private lastDraw = 0;

  constructor(opts: OutputOptions = {}) {
    const tty = opts.tty ?? Boolean(process.stdout.isTTY);
    this.json = Boolean(opts.json) || !tty;
    this.human = !this.json;
  }

  /** One JSON object as one line on stdout. NaN/Infinity become null (JSON has no such numbers). */
  line(obj: unknown): void {
    process.stdout.write(JSON.stringify(obj, jsonSafe) + '\n');
  }

  /** Human text on stdout (human mode only). */
  print(text: string): void {
    if (!this.human) return;
    this.clearBar();
    process.stdout.write(text + '\n');
  }

  /** A note for people: stderr in both modes (never mixes with JSON on stdout). */
  note(text: string): void {
    this.clearBar();
    process.stderr.write(text + '\n');
  }

  /**
   * A run's log message (a device choice, a warning, a reset), said once on each stream's terms:
   * human mode: stderr; json mode: one {event: 'log'} line on stdout, and on stderr too only when
   * stderr is a terminal (a person watching while stdout goes to a file or a pipe).
   */
  log(message: string, fields: Record<string, unknown> = {}, text = message): void {
    if (this.human) return this.note(text);
    this.line({ event: 'log', ...fields, message });
    if (process.stderr.isTTY) this.note(text);
  }

  /** Redraws the progress bar on stderr (human mode, at most ~12 times a second). */
  bar(text: string, force = false): void {
    if (!this.human || !process.stderr.isTTY) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 80) return;
    this.lastDraw = now;
    const cols = process.stderr.columns || 100;
    process.stderr.write(`\r\x1b[K${text.length > cols - 1 ? text.slice(0, cols - 1) : text}`);
    this.barShown = true;
  }

  clearBar(): void {
    if (this.barShown) {
      process.stderr.write('\r\x1b[K');
      this.barShown = false;
    }
  }
}

export function jsonSafe(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isFinite(value) ? null : value;
}

// --- formatting helpers --------------------------------------------------------------------------

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600),
    m = Math.floor((s % 3600) / 60),
    r = s % 60;
  const mm = String(m).padStart(2, '0'),
    ss = String(r).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
}

export function progressBar(done: number, total: number, width = 24): string {
  const frac = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const full = Math.round(frac * width);
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}

export const pct = (v: number | null | undefined, digits = 2): string =>
  v === null || v === undefined || !Number.isFinite(v) ? '-' : `${(v * 100).toFixed(digits)}%`;

export const fixed = (v: number | null | undefined, digits = 4): string =>
  v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits);

/** A fixed-column table: declare columns once, then format the header and each row. */
export class Table<Row> {
  constructor(
    private readonly columns: { title: string; width: number; value: (r: Row) => string; left?: boolean }[],
  ) {}

  /** width 0: free width (the last column). */
  private fit(text: string, width: number, left?: boolean): string {
    if (width <= 0) return text;
    const t = text.length > width ? text.slice(0, width) : text;
    return left ? t.padEnd(width) : t.padStart(width);
  }

  header(): string {
    return this.columns
      .map((c) => this.fit(c.title, c.width, c.left))
      .join('  ')
      .trimEnd();
  }

  row(r: Row): string {
    return this.columns
      .map((c) => this.fit(c.value(r), c.width, c.left))
      .join('  ')
      .trimEnd();
  }
}

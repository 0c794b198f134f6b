// The memory budget for data and models: $DFL_MAX_MEMORY_MB when set (tests, shared machines),
// else the machine's physical memory. The native core applies the same rule to model arenas and
// activations; here it guards decoded datasets, which are refused before they are allocated.
import os from 'node:os';

export function memoryLimit(): { bytes: number; source: string } {
  const env = process.env.DFL_MAX_MEMORY_MB;
  const mb = env === undefined ? NaN : Number(env);
  if (Number.isFinite(mb) && mb > 0) return { bytes: mb * 1024 * 1024, source: 'DFL_MAX_MEMORY_MB' };
  return { bytes: os.totalmem(), source: 'physical memory' };
}

/** null when `bytes` fits the budget, else the reason (to be prefixed with the file it is about). */
export function overMemory(bytes: number, what: string, todo: string): string | null {
  const { bytes: limit, source } = memoryLimit();
  if (bytes <= limit) return null;
  const mib = (b: number) => Math.ceil(b / 2 ** 20);
  return `${what} needs ${mib(bytes)} MiB, more than the ${mib(limit)} MiB of memory available (${source}); ${todo} (or raise DFL_MAX_MEMORY_MB)`;
}

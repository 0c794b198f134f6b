// `dfl-native info`: version, compiled and usable backends, threads, CPU features, the SIMD path
// each kernel family runs.
import os from 'node:os';
import type { Argv, CommandModule } from 'yargs';

import { describeSimd, loadBinding, type RuntimeInfo } from '../../binding.js';
import { EXIT } from '../../errors.js';
import { packageVersion } from '../../io/onnx.js';
import { jsonOption } from '../common-flags.js';
import { Output, runCommand } from '../output.js';

export interface InfoArgs {
  json?: boolean;
  verbose?: boolean;
}

export function builder(y: Argv): Argv<InfoArgs> {
  return y
    .option(
      'json',
      jsonOption(
        'one object, {version, backends: {compiled, usable, detail, libraries}, threads, cpu_features, simd_paths, ...}',
      ),
    )
    .example('$0 info', 'what this installation can run on') as unknown as Argv<InfoArgs>;
}

export async function handler(argv: InfoArgs): Promise<void> {
  await runCommand(argv.verbose, async () => {
    const out = new Output({ json: argv.json });
    const version = packageVersion();
    const platform = `${process.platform}-${process.arch}, node ${process.version}`;
    let rt: RuntimeInfo;
    try {
      rt = loadBinding().runtimeInfo();
    } catch (err) {
      // Still say what is known; the addon error is the answer the user came for.
      const message = (err as Error).message;
      if (out.json)
        out.line({
          version,
          backends: { compiled: [], usable: [] },
          threads: null,
          cpu_features: [],
          platform,
          addon_error: message,
        });
      else {
        out.print(`dfl-native ${version} (${platform})`);
        out.note(message);
      }
      return EXIT.failure;
    }
    if (out.json) {
      out.line({
        version,
        // detail: the device of each usable backend, or why a backend cannot be used here.
        // libraries: what each backend was built against and runs with (only those that have any).
        backends: {
          compiled: rt.compiledBackends,
          usable: rt.usableBackends,
          detail: Object.fromEntries(rt.backends.map((b) => [b.name, b.detail])),
          libraries: Object.fromEntries(rt.backends.filter((b) => b.libraries).map((b) => [b.name, b.libraries])),
        },
        threads: rt.threads,
        hardware_threads: rt.hardwareThreads,
        cpu_features: rt.cpuFeatures,
        cuda_status: rt.cudaStatus,
        gemm_kernel: rt.gemmKernel,
        simd_paths: rt.simdPaths,
        simd_level: rt.simdLevel,
        simd_request: rt.simdRequest || null,
        openmp: rt.openmp,
        build_system: rt.buildSystem,
        platform,
        cpus: os.cpus()[0]?.model ?? null,
      });
      return;
    }
    const rows: [string, string][] = [
      ['version', version],
      ['platform', platform],
      [
        'backends',
        `compiled: ${rt.compiledBackends.join(', ') || '-'}; usable: ${rt.usableBackends.join(', ') || '-'}`,
      ],
      ...rt.backends.flatMap((b): [string, string][] => [
        [b.name, `${b.usable ? 'usable' : 'not usable'}: ${b.detail}`],
        ...(b.libraries ? [[`${b.name} libraries`, b.libraries] as [string, string]] : []),
      ]),
      ['threads', `${rt.threads} (hardware: ${rt.hardwareThreads}${rt.openmp ? ', OpenMP' : ''})`],
      ['cpu', os.cpus()[0]?.model ?? 'unknown'],
      ['cpu features', rt.cpuFeatures.join(' ') || '-'],
      ['simd paths', describeSimd(rt)],
      ['built with', rt.buildSystem],
    ];
    const width = Math.max(...rows.map(([k]) => k.length));
    for (const [k, v] of rows) out.print(`${k.padEnd(width)}  ${v}`);
  });
}

export const infoCommand: CommandModule<object, InfoArgs> = {
  command: 'info',
  describe: 'Version, compiled and usable backends (cpu, cuda), threads and CPU features',
  builder,
  handler,
};
